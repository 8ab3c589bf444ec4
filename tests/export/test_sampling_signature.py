"""The export's `sample` signature, called in a process that imports TensorFlow only, on the trained tiny
run's export (`tiny_run`): greedy equivalences, seeds that hold whatever the batch, per-row settings in one
call, and bad settings that name their row."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.exports import quiet_env

# Runs every call of a JSON list against an export and prints {name: outputs or {"error": message}}.
# A call: {"name", "signature", "rows": [image indices], "settings": {input: [one value per row]}}, on the
# export given first, or with "export": "greedy" on the second (the same model exported with beam size 1).
CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf

path, images, calls = sys.argv[1], list(np.load(sys.argv[2], allow_pickle=True)), json.load(open(sys.argv[3]))
exports = {"main": tf.saved_model.load(path), "greedy": tf.saved_model.load(sys.argv[4])}
loaded = exports["main"]
dtypes = {"temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
          "max_length": tf.int32}
answers = {"inputs": sorted(loaded.signatures["sample"].structured_input_signature[1]),
           "outputs": sorted(loaded.signatures["sample"].structured_outputs)}
for call in calls:
    feed = {"image_bytes": tf.constant([images[i] for i in call["rows"]])}
    feed.update({k: tf.constant(v, dtypes[k]) for k, v in call.get("settings", {}).items()})
    try:
        out = exports[call.get("export", "main")].signatures[call["signature"]](**feed)
        answers[call["name"]] = {"caption": [c.decode("utf-8") for c in out["caption"].numpy()],
                                 "tokens": out["tokens"].numpy().tolist(), "score": out["score"].numpy().tolist()}
    except tf.errors.InvalidArgumentError as error:
        answers[call["name"]] = {"error": error.message}
answers["modules"] = sorted(m for m in sys.modules if m.startswith(("tfcaption", "tensorflow_text")))
print(json.dumps(answers))
"""

IMAGES = 4
HOT = 3.0  # a temperature that flattens the one-epoch model enough for seeds to disagree


def settings(rows, temperature=1.0, top_k=0, top_p=1.0, seed=0, max_length=0):
    """One value per row for each setting (a scalar is repeated)."""
    def column(value):
        return list(value) if isinstance(value, (list, tuple)) else [value] * len(rows)
    return {"temperature": column(temperature), "top_k": column(top_k), "top_p": column(top_p),
            "seed": column(seed), "max_length": column(max_length)}


def sample(name, rows, **options):
    return {"name": name, "signature": "sample", "rows": list(rows), "settings": settings(rows, **options)}


CALLS = [
    {"name": "greedy", "export": "greedy", "signature": "serving_default", "rows": list(range(IMAGES))},
    sample("top_k_1", range(IMAGES), temperature=HOT, top_k=1, seed=[1, 2, 3, 4]),
    sample("temperature_0", range(IMAGES), temperature=0.0, seed=5),
    sample("temperature_tiny", range(IMAGES), temperature=1e-6, seed=[6, 7, 8, 9]),
    sample("seeded", range(IMAGES), temperature=HOT, seed=11),
    sample("seeded_again", range(IMAGES), temperature=HOT, seed=11),
    sample("alone", [2], temperature=HOT, seed=11),
    # Image 2 with seed 11 beside rows of other images, seeds and settings (itself at row 3 of 5).
    sample("in_batch", [0, 1, 3, 0, 2], temperature=[0.7, 0.0, HOT, 1.0, HOT], top_k=[5, 0, 0, 2, 0],
           top_p=[1.0, 1.0, 0.5, 0.9, 1.0], seed=[3, 4, 5, 6, 11], max_length=[0, 2, 0, 4, 0]),
    sample("many_seeds", [2] * 8, temperature=HOT, seed=list(range(100, 108))),
    sample("max_length_2", range(IMAGES), temperature=HOT, seed=12, max_length=2),
    sample("bad_top_p", [0, 1, 2], top_p=[0.9, 0.0, 1.0]),
    sample("bad_temperature", [0, 1], temperature=[1.0, -0.5]),
    sample("bad_max_length", [0], max_length=[99]),
    sample("after_errors", [2], temperature=HOT, seed=11),
]


@pytest.fixture(scope="module")
def child(tiny_run, tiny_run_greedy_export, tmp_path_factory):
    from tests.serving.servers import shapes_png

    workdir = tmp_path_factory.mktemp("sampling_child")
    images, calls = str(workdir / "images.npy"), str(workdir / "calls.json")
    np.save(images, np.array([shapes_png(i, size=32) for i in range(IMAGES)], dtype=object), allow_pickle=True)
    with open(calls, "w") as f:
        json.dump(CALLS, f)
    # cwd: a folder without the repository's packages, so none of them can be imported by accident.
    result = subprocess.run([sys.executable, "-c", CHILD, tiny_run["export"], images, calls,
                             tiny_run_greedy_export], capture_output=True,
                            text=True, timeout=600, env=quiet_env(), cwd=str(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sample_signature_runs_in_a_tensorflow_only_process_with_its_documented_inputs(child):
    assert child["modules"] == []
    assert child["inputs"] == ["image_bytes", "max_length", "seed", "temperature", "top_k", "top_p"]
    assert child["outputs"] == ["caption", "score", "tokens"]
    assert all("error" not in child[call["name"]] for call in CALLS if not call["name"].startswith("bad"))


def test_top_k_1_equals_greedy(child):
    assert child["top_k_1"]["tokens"] == child["greedy"]["tokens"]
    assert child["top_k_1"]["caption"] == child["greedy"]["caption"]
    np.testing.assert_allclose(child["top_k_1"]["score"], child["greedy"]["score"], rtol=1e-5, atol=1e-5)


def test_temperature_0_and_near_0_equal_greedy(child):
    assert child["temperature_0"]["tokens"] == child["greedy"]["tokens"]
    assert child["temperature_tiny"]["tokens"] == child["greedy"]["tokens"]


def test_a_fixed_seed_gives_the_same_captions_twice(child):
    assert child["seeded"]["tokens"] == child["seeded_again"]["tokens"]


def test_a_seeded_row_gives_the_same_caption_alone_and_inside_a_batch_of_other_settings(child):
    alone = child["alone"]["tokens"][0]
    assert child["seeded"]["tokens"][2] == alone
    assert child["in_batch"]["tokens"][4] == alone
    assert child["after_errors"]["tokens"][0] == alone  # failed calls leave the loaded model as it was


def test_different_seeds_give_different_captions_on_the_trained_tiny_run(child):
    assert len({tuple(t) for t in child["many_seeds"]["tokens"]}) > 1


def test_max_length_keeps_each_caption_within_that_many_tokens(child, tiny_run):
    # <eos> included, none forced: a caption cut at 2 tokens keeps 2 words (tests/test_caption_length_unit.py)
    with open(os.path.join(tiny_run["export"], "assets", "config.json")) as f:
        pad = json.load(f)["serving"]["special_ids"]["pad_id"]  # the tokenizer's, which the export records
    for tokens, caption in zip(child["max_length_2"]["tokens"], child["max_length_2"]["caption"]):
        assert set(tokens[2:]) <= {pad} and len(caption.split()) <= 2
    assert set(child["in_batch"]["tokens"][1][2:]) <= {pad}  # the row that asked for 2, beside rows that did not


def test_a_bad_setting_fails_the_call_naming_its_row(child):
    assert "top_p[1]: must be in (0, 1]" in child["bad_top_p"]["error"]
    assert "top_p[0]" not in child["bad_top_p"]["error"] and "top_p[2]" not in child["bad_top_p"]["error"]
    assert "temperature[1]: must be a number >= 0" in child["bad_temperature"]["error"]
    assert "max_length[0]: must be in [0, " in child["bad_max_length"]["error"]


def test_sample_signature_compiles_under_xla_with_the_same_tokens():
    import keras
    import tensorflow as tf

    from tests.helpers.exports import TINY_MAX_STEPS, WORDS, encode, random_rgb
    from tests.helpers.tiny import TINY_MODEL
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.export.saved_model import CaptionerModule
    from tfcaption.models import CaptionerBackbone, CaptionerConfig, ImageCaptioner

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build([" ".join(WORDS)])
    captioner = ImageCaptioner.from_backbone(CaptionerBackbone.from_model_config(
        CaptionerConfig(vocab_size=vocab.size, max_length=TINY_MAX_STEPS + 1, **TINY_MODEL)), vocab)
    images = tf.constant([encode(random_rgb(32, 32, seed=s)) for s in range(3)])
    values = settings([0, 1, 2], temperature=[1.0, 0.0, 2.0], top_k=[0, 0, 3], top_p=[0.9, 1.0, 1.0], seed=[1, 2, 3],
                      max_length=[0, 0, 3])
    dtypes = {"temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
              "max_length": tf.int32}
    feed = {name: tf.constant(value, dtypes[name]) for name, value in values.items()}
    tokens = [CaptionerModule(captioner, 2, TINY_MAX_STEPS, jit_compile=jit).serve_sample(images, **feed)["tokens"]
              for jit in (False, True)]
    assert tokens[0].numpy().tolist() == tokens[1].numpy().tolist()
