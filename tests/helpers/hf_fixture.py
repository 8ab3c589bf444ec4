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
# The checkpoint the export, serving page and gRPC tests export (tests/conftest.py's `blip_exports`), and the
# prompts baked in: its generate() prompt (the default) and another.
BLIP_EXPORTED = "blip_a"
OTHER_PROMPT = "a dog"


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


def tensors(name):
    """The fixture checkpoint's weights as {name: float32 numpy array}, read as tfcaption reads any Hub
    checkpoint (`HubCheckpoint`: safetensors, or the restricted unpickler for pytorch_model.bin)."""
    from tfcaption.interop.hf import HubCheckpoint

    return HubCheckpoint(model_dir(name)).tensors()


def config(name):
    """The fixture checkpoint's config.json as a dict."""
    return json.loads((model_dir(name) / "config.json").read_text())


def baked_prompts():
    """The prompts `blip_exports` bakes in, the default (the fixture's generate() prompt) first."""
    return [manifest()["models"][BLIP_EXPORTED]["prompt"], OTHER_PROMPT]


def new_tokens():
    """The tokens the exports generate after the prompt: the fixture's generate() max_new_tokens."""
    return manifest()["models"][BLIP_EXPORTED]["generation"]["cases"]["greedy"]["max_new_tokens"]
