"""tfcaption-convert-m2: converting the released checkpoint format into a run directory, without torch.

The script runs in subprocesses whose `sitecustomize.py` makes `torch` unimportable (and records any
attempt), as on a machine with TensorFlow but no PyTorch. Broken inputs are built here from the
fixture: its state_dict re-saved in PyTorch's zip format by a small pickle writer (PyTorch is not
installed), a truncated file, and a vocabulary pickle with extra words.
"""

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.m2_fixture import FIXTURE, requires_fixture
from tests.helpers.paths import REPO_ROOT
from tests.helpers.pickles import Call, G, PersId, dumps, vocab_pickle
from tfcaption.interop.m2.vocab import load_m2_vocab
from tfcaption.interop.m2.convert import convert_m2
from tfcaption.interop.torch_checkpoint import load_state_dict
from tfcaption.training.run_directory import load_run

CHECKPOINT = FIXTURE / "m2_tiny.pth"
VOCAB = FIXTURE / "vocab.pkl"
pytestmark = requires_fixture("m2_tiny.pth", "vocab.pkl", "inputs.npz", "config.json")
PROGRAM = "tfcaption-convert-m2"


# ------------------------------------------------------------------------------------------------
# the released formats, written with the opcode-level pickle writers of tests/helpers/pickles.py


STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage", np.dtype("bool"): "BoolStorage"}


def save_zip_checkpoint(path, state_dict):
    """`torch.save({"state_dict": OrderedDict(...)}, path)` in the zip serialisation, without torch."""
    storages, entries = {}, []
    for index, (name, array) in enumerate(state_dict.items()):
        array = np.ascontiguousarray(array)
        key = str(index)
        storages[key] = array.astype(array.dtype.newbyteorder("<")).tobytes()
        strides = tuple(int(s // array.itemsize) for s in array.strides)
        storage = PersId(("storage", G("torch", STORAGES[array.dtype]), key, "cpu", int(array.size)))
        tensor = Call(G("torch._utils", "_rebuild_tensor_v2"), storage, 0, tuple(array.shape), strides, False,
                      Call(G("collections", "OrderedDict")))
        entries.append((name, tensor))
    pickled = dumps({"state_dict": Call(G("collections", "OrderedDict"), entries), "epoch": 0})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", "3\n")
    return path


def save_vocab_pickle(path, itos):
    """A `data.vocab.Vocab` pickled like the released vocab.pkl (protocol 3, NEWOBJ then BUILD)."""
    Path(path).write_bytes(vocab_pickle(itos))
    return path


# ------------------------------------------------------------------------------------------------
# running the script without torch

SITECUSTOMIZE = textwrap.dedent("""
    # Installed on PYTHONPATH by the test: torch cannot be imported, and any attempt is recorded.
    import atexit, importlib.abc, os, sys

    _attempts = []

    class _BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                _attempts.append(name)
                raise ImportError("torch is blocked in this test")
            return None

    sys.meta_path.insert(0, _BlockTorch())

    @atexit.register
    def _report():
        with open(os.environ["TORCH_ATTEMPTS_FILE"], "w") as f:
            f.write(repr({"attempts": _attempts, "loaded": "torch" in sys.modules}))
""")


def start(tmp_path, name, *args):
    """Starts the script with torch blocked; returns (process, attempts file)."""
    site = tmp_path / "site"
    if not site.exists():  # written once: rewriting it while another run starts would race its import
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    attempts = tmp_path / f"{name}.torch"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), REPO_ROOT]), TORCH_ATTEMPTS_FILE=str(attempts))
    process = subprocess.Popen([sys.executable, "-m", "tfcaption.cli.convert_m2", *map(str, args)], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, attempts


def finish(started):
    process, attempts = started
    stdout, stderr = process.communicate(timeout=180)
    report = eval(attempts.read_text()) if attempts.exists() else None  # our own repr() of a dict
    return {"rc": process.returncode, "stdout": stdout, "stderr": stderr, "torch": report}


# ------------------------------------------------------------------------------------------------
# all runs start together (each pays TensorFlow's start-up), the tests then check each one

def _bad_inputs(tmp_path, state_dict, itos):
    bad = {}
    missing = dict(state_dict)
    del missing["encoder.layers.1.pwff.fc2.bias"]
    bad["missing_key"] = (save_zip_checkpoint(tmp_path / "missing.pth", missing), VOCAB,
                          "checkpoint is missing 'encoder.layers.1.pwff.fc2.bias'")
    reshaped = dict(state_dict)
    reshaped["decoder.layers.0.fc_alpha2.weight"] = np.zeros((64, 100), np.float32)
    bad["wrong_shape"] = (save_zip_checkpoint(tmp_path / "reshaped.pth", reshaped), VOCAB,
                          "'decoder.layers.0.fc_alpha2.weight' has shape (64, 100), but")
    truncated = tmp_path / "truncated.pth"
    data = CHECKPOINT.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    bad["truncated"] = (truncated, VOCAB, f"{truncated}: ")
    bigger = save_vocab_pickle(tmp_path / "vocab_33.pkl", list(itos) + ["x00", "x01", "x02"])
    bad["vocab_size"] = (CHECKPOINT, bigger, "vocabulary has 33 entries but the checkpoint's word embedding has 30")
    return bad


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("convert_m2")
    state_dict = load_state_dict(CHECKPOINT)
    itos = load_m2_vocab(VOCAB)
    heads = json.loads((FIXTURE / "config.json").read_text())["h"]
    bad = _bad_inputs(tmp_path, state_dict, itos)
    started = {"ok": start(tmp_path, "ok", CHECKPOINT, VOCAB, tmp_path / "run", "--num-heads", heads)}
    for name, (checkpoint, vocab, _) in bad.items():
        started[name] = start(tmp_path, name, checkpoint, vocab, tmp_path / f"out_{name}", "--num-heads", heads)
    results = {name: finish(process) for name, process in started.items()}
    return {"tmp": tmp_path, "results": results, "bad": bad, "state_dict": state_dict, "itos": itos, "heads": heads}


def test_writer_round_trips_the_fixture(runs, tmp_path):
    # The bad checkpoints are only meaningful if the writer itself produces a readable checkpoint.
    copy = load_state_dict(save_zip_checkpoint(tmp_path / "copy.pth", runs["state_dict"]))
    assert list(copy) == list(runs["state_dict"])
    for key, value in runs["state_dict"].items():
        assert copy[key].dtype == value.dtype and copy[key].shape == value.shape, key
        np.testing.assert_array_equal(copy[key], value, err_msg=key)
    assert load_m2_vocab(save_vocab_pickle(tmp_path / "v.pkl", runs["itos"])) == runs["itos"]


def test_converts_without_torch(runs):
    result = runs["results"]["ok"]
    assert result["rc"] == 0, result["stderr"][-3000:]
    assert result["torch"] == {"attempts": [], "loaded": False}, "the converter tried to import torch"
    assert "Converted" in result["stdout"] and "beam 5, 20 steps" in result["stdout"]
    assert result["stderr"] == ""  # TensorFlow's start-up chatter is held back on success
    run = runs["tmp"] / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.weights.h5", "config.json", "conversion.json", "vocab.txt"]
    assert (run / "vocab.txt").read_text().split("\n")[:-1] == runs["itos"]
    config = json.loads((run / "config.json").read_text())
    assert config["decode"]["beam_size"] == 5
    assert config["data"]["max_caption_words"] + 1 == 20  # tfcaption decodes max_caption_words + 1 steps
    assert config["model"]["image_encoder"]["padding_mask"] == "released" and config["model"]["num_heads"] == runs["heads"]
    provenance = json.loads((run / "conversion.json").read_text())
    assert provenance["parameters"] == 335936 and provenance["vocab_size"] == 30


def test_run_directory_round_trip(runs):
    """load_run on the written directory gives exactly the directly converted model's outputs."""
    assert runs["results"]["ok"]["rc"] == 0
    captioner, run_config = load_run(str(runs["tmp"] / "run"))
    model, vocab = captioner.backbone, captioner.preprocessor.vocabulary
    assert captioner.beam_size == 5 and captioner.max_length == 20  # the reference's search, as the run says
    direct = convert_m2(runs["state_dict"], runs["itos"], num_heads=runs["heads"])
    assert model.config == direct.config and vocab.tokens == runs["itos"]
    assert run_config.decode.beam_size == 5 and run_config.data.max_decode_steps == 20
    inputs = np.load(FIXTURE / "inputs.npz")
    tokens = inputs["tokens"]
    batch = {"features": inputs["features"], "tokens": tokens, "padding_mask": tokens != vocab.pad_id}
    loaded = tf.nn.log_softmax(model(batch, training=False)).numpy()
    expected = tf.nn.log_softmax(direct(batch, training=False)).numpy()
    assert loaded.shape == (3, 9, 30)
    np.testing.assert_array_equal(loaded, expected)
    reference = np.load(FIXTURE / "expected.npz")["log_probs_f32"]
    assert np.abs(loaded - reference).max() < 1e-5


@pytest.mark.parametrize("name", ["missing_key", "wrong_shape", "truncated", "vocab_size"])
def test_bad_inputs_fail_with_one_line(runs, name):
    result = runs["results"][name]
    _, _, needle = runs["bad"][name]
    lines = result["stderr"].splitlines()
    assert result["rc"] == 2, result["stderr"][-3000:]
    assert len(lines) == 1, result["stderr"][-3000:]
    assert lines[0].startswith(f"{PROGRAM}: error: ")
    assert needle in lines[0], lines[0]
    assert result["stdout"] == ""
    assert not (runs["tmp"] / f"out_{name}" / "best.weights.h5").exists()  # nothing half-written
    assert result["torch"]["loaded"] is False


def test_refuses_to_overwrite_a_run_and_names_missing_files(runs, tmp_path, capsys):
    assert runs["results"]["ok"]["rc"] == 0
    from tfcaption.cli.convert_m2 import main

    before = (runs["tmp"] / "run" / "best.weights.h5").stat().st_mtime_ns
    assert main([str(CHECKPOINT), str(VOCAB), str(runs["tmp"] / "run"), "--num-heads", str(runs["heads"])]) == 2
    assert (runs["tmp"] / "run" / "best.weights.h5").stat().st_mtime_ns == before
    assert capsys.readouterr().err == (f"{PROGRAM}: error: {runs['tmp'] / 'run'} already holds a run "
                                       "(config.json, best.weights.h5); pass --overwrite to replace it\n")
    missing = tmp_path / "nope.pth"
    assert main([str(missing), str(VOCAB), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"{PROGRAM}: error: checkpoint file not found: {missing}\n"
    assert not (tmp_path / "out").exists()
