"""The BLIP and CLIP parity fixtures in ``tests/fixtures/hf`` (issue 30, item 5), read without torch.

``tests/fixtures/hf/make_fixtures.py`` wrote them under its own Python with torch and transformers; its
README says what each file holds. ``fixtures.json`` is the manifest: versions, each model's config, files,
token ids, generate() cases with their captions, the arrays in each ``expected.npz`` with their shapes, and
the tolerance the issue states.
"""

import json
from pathlib import Path

import numpy as np

from tests.helpers.paths import REPO_ROOT

HF_FIXTURES = Path(REPO_ROOT) / "tests" / "fixtures" / "hf"
BLIP_MODELS = ("blip_a", "blip_b")
CLIP_MODELS = ("clip_full", "clip_vision")


def manifest():
    return json.loads((HF_FIXTURES / "fixtures.json").read_text())


def model_dir(name):
    """A checkpoint directory in the Hub's layout (config.json, weights, tokenizer / processor files)."""
    return HF_FIXTURES / name


def expected(name):
    """What transformers computed for `name`, as a dict of numpy arrays (float32 values, int32 token ids)."""
    with np.load(HF_FIXTURES / name / "expected.npz") as f:
        return dict(f)


def images():
    """The fixed images (uint8 RGB PNG files, sizes unlike every model's input), in the fixtures' order."""
    return [HF_FIXTURES / image["file"] for image in manifest()["images"]]


def assert_close(actual, reference, atol=None):
    """The issue's rule: |actual - reference| <= atol * (1 + |reference|), atol 1e-4 by default."""
    atol = manifest()["tolerance"]["atol"] if atol is None else atol
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    assert actual.shape == reference.shape, (actual.shape, reference.shape)
    excess = np.abs(actual - reference) - atol * (1 + np.abs(reference))
    assert excess.max() <= 0, f"off by up to {excess.max():.3g} past atol {atol} * (1 + |reference|)"


def config(name):
    """`name`'s config.json as a dict."""
    return json.loads((model_dir(name) / "config.json").read_text())


def state_dict(name):
    """`name`'s weights file as {tensor name: numpy array}, as the file stores them (float16 stays float16).

    Stands in for the Hub checkpoint reader (tfcaption/interop/hf/) until it lands: safetensors' numpy
    loader, or the project's restricted unpickler for pytorch_model.bin.
    """
    weights = model_dir(name) / manifest()["models"][name]["weights_file"]
    if weights.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(str(weights))
    from tfcaption.interop.m2.checkpoint import load_state_dict

    return load_state_dict(weights)
