"""The export's layout, its two signatures in a TensorFlow-only process, and `saved_model_cli`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.exports import TINY_MAX_STEPS, encode, quiet_env, random_rgb, tiny_export
from tests.helpers.paths import HELPERS_DIR

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

# Runs in a child process that imports TensorFlow only: loads the export, calls both signatures, lists
# every op of the graph and its functions, and prints the outputs as JSON.
CHILD = r"""
import json, sys
sys.path.append(sys.argv.pop())  # tests/helpers, for saved_models (TensorFlow alone)
import numpy as np
import tensorflow as tf
from saved_models import graph_ops

path, images = sys.argv[1], list(np.load(sys.argv[2], allow_pickle=True))
loaded = tf.saved_model.load(path)
plain = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
attention = loaded.signatures["caption_with_attention"](image_bytes=tf.constant(images))
ops, unregistered = graph_ops(path)
print(json.dumps({
    "modules": [m for m in ("tfcaption", "tensorflow_text") if m in sys.modules],
    "unregistered_ops": unregistered,
    "ops": ops,
    "plain": {k: v.numpy().tolist() if v.dtype != tf.string else np.char.decode(v.numpy().astype(bytes)).tolist()
              for k, v in plain.items()},
    "attention": {k: v.numpy().tolist() if v.dtype != tf.string else np.char.decode(v.numpy().astype(bytes)).tolist()
                  for k, v in attention.items()},
}))
"""


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return tiny_export(tmp_path_factory.mktemp("export"), beam_size=2)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    payload = [encode(random_rgb(32, 32, seed=s)) for s in range(3)] + [encode(random_rgb(50, 70, seed=9), "JPEG")]
    path = str(tmp_path_factory.mktemp("payload") / "images.npy")
    np.save(path, np.array(payload, dtype=object), allow_pickle=True)
    return payload, path


@pytest.fixture(scope="module")
def child(export, images):
    result = subprocess.run([sys.executable, "-c", CHILD, export, images[1], HELPERS_DIR], capture_output=True,
                            text=True, timeout=300, env=quiet_env(), cwd=os.path.dirname(export))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_is_version_1_with_config_and_vocab_assets_and_never_overwrites(export):
    from tfcaption.export.saved_model import export_saved_model, next_version

    model_dir, version = os.path.split(export)
    assert version == "1" and next_version(model_dir) == 2
    assert not [n for n in os.listdir(model_dir) if n.startswith(".tmp")]
    assets = os.path.join(export, "assets")
    assert sorted(os.listdir(assets)) == ["config.json", "vocab.txt"]
    with open(os.path.join(assets, "config.json")) as f:
        serving = json.load(f)["serving"]
    assert serving["max_pixels"] == 40_000_000 and serving["beam_size"] == 2
    assert serving["max_steps"] == TINY_MAX_STEPS and serving["patch_grid"] == [4, 4]
    assert serving["signatures"] == ["serving_default", "caption_with_attention", "sample"]
    assert serving["sampling"] == {"signature": "sample", "outputs": ["caption", "score", "tokens"],
                                   "inputs": ["image_bytes", "temperature", "top_k", "top_p", "seed", "max_length"]}
    with pytest.raises(FileExistsError):  # never overwrites; refuses before doing any work
        export_saved_model(None, os.path.dirname(model_dir), "tiny", version=1)


def test_tensorflow_only_process_loads_both_signatures(child, images):
    assert child["modules"] == []  # neither tfcaption nor tensorflow_text was imported
    assert child["unregistered_ops"] == []  # every op is a core TensorFlow op
    forbidden = {"PyFunc", "EagerPyFunc", "PyFuncStateless", "HashTableV2", "MutableHashTableV2",
                 "LookupTableFindV2", "LookupTableImportV2", "InitializeTableFromTextFileV2"}
    assert not forbidden & set(child["ops"])
    assert "DecodeImage" in child["ops"] or "DecodePng" in child["ops"]
    batch = len(images[0])
    for outputs in (child["plain"], child["attention"]):
        assert len(outputs["caption"]) == batch and len(outputs["score"]) == batch
        assert np.array(outputs["tokens"]).shape == (batch, TINY_MAX_STEPS)
        assert all(isinstance(c, str) for c in outputs["caption"])
        assert all(s <= 0 for s in outputs["score"])


def test_attention_rows_sum_to_one_and_follow_the_gates(child, export):
    out = {k: np.array(v) for k, v in child["attention"].items()}
    batch, steps = out["tokens"].shape
    grid = out["patch_grid"]
    assert grid.shape == (batch, 2) and (grid == [4, 4]).all()
    patches = int(grid[0, 0] * grid[0, 1])
    assert out["attention"].shape == (batch, steps, patches)
    assert out["level_attention"].shape == (batch, steps, 2, patches)  # two encoder layers = two levels
    assert out["gates"].shape == (batch, steps, 2)
    # A step is live up to and including the first <eos> (id 3); later rows are zero.
    eos = out["tokens"] == 3
    live = np.cumsum(eos, axis=1) - eos == 0
    assert live[:, 0].all()
    sums = out["attention"].sum(-1)
    np.testing.assert_allclose(sums[live], 1.0, atol=1e-5)
    assert (sums[~live] == 0).all() and (out["gates"][~live] == 0).all()
    np.testing.assert_allclose(out["level_attention"].sum(-1)[live], 1.0, atol=1e-5)  # softmax per level
    assert ((out["gates"][live] > 0) & (out["gates"][live] < 1)).all()  # sigmoid gates
    mixed = np.einsum("btn,btnp->btp", out["gates"], out["level_attention"])
    expected = mixed / mixed.sum(-1, keepdims=True)
    np.testing.assert_allclose(out["attention"][live], expected[live], atol=1e-5)
    # The caption is the detokenised greedy tokens (vocab asset, line number = id).
    with open(os.path.join(export, "assets", "vocab.txt")) as f:
        vocab = f.read().split("\n")
    for tokens, caption in zip(out["tokens"], child["attention"]["caption"]):
        words = []
        for t in tokens:
            if t == 3:
                break
            if t > 3:
                words.append(vocab[t])
        assert caption == " ".join(words)


def _cli(*args):
    result = subprocess.run([SAVED_MODEL_CLI, *args], capture_output=True, text=True, timeout=300, env=quiet_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_saved_model_cli_show_lists_both_signatures(export):
    shown = _cli("show", "--dir", export, "--all")
    blocks = shown.split("signature_def[")
    default = next(b for b in blocks if b.startswith("'serving_default'"))
    attention = next(b for b in blocks if b.startswith("'caption_with_attention'"))
    for block, outputs in ((default, ("caption", "score", "tokens", "beam_captions", "beam_scores")),
                           (attention, ("caption", "score", "tokens", "attention", "level_attention", "gates",
                                        "patch_grid"))):
        assert "inputs['image_bytes']" in block and "DT_STRING" in block
        assert sorted(block.split("outputs['")[1:]) and {
            part.split("'")[0] for part in block.split("outputs['")[1:]} == set(outputs)
        assert "tensorflow/serving/predict" in block
    assert f"shape: (-1, {TINY_MAX_STEPS}, 16)" in attention  # attention [batch, T, P]


def test_saved_model_cli_run_returns_captions(export, images, tmp_path, child):
    # `--inputs` loads the .npy with allow_pickle=False, so the bytes go in a fixed-width `S` array
    # (numpy strips trailing NUL bytes; PNG files end with the IEND CRC, never NUL).
    payload = [b for b in images[0] if b.startswith(b"\x89PNG")]
    path = str(tmp_path / "png.npy")
    np.save(path, np.array(payload))
    printed = _cli("run", "--dir", export, "--tag_set", "serve", "--signature_def", "serving_default",
                   "--inputs", f"image_bytes={path}")
    assert "Result for output key caption:" in printed and "Result for output key score:" in printed
    # This TF1-style session loader is the one TF Serving uses: the same captions as the TF2 loader.
    for caption in child["plain"]["caption"][:len(payload)]:
        assert repr(caption.encode())[1:] in printed
