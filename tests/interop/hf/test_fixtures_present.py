"""The BLIP / CLIP parity fixtures are all there and are what the manifest says (numpy and json only)."""

import hashlib
import json
import struct
import zipfile

import numpy as np
import pytest

from tests.helpers.hf_fixture import BLIP_MODELS, CLIP_MODELS, HF_FIXTURES, expected, manifest

TIED = ("text_decoder.cls.predictions.decoder.weight", "text_decoder.cls.predictions.decoder.bias")


def _weight_names(path):
    """Tensor names and dtypes in a weights file, without torch or safetensors: the safetensors JSON header,
    or the entries of a torch zip file (names only)."""
    if path.name.endswith(".safetensors"):
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        return {k: v["dtype"] for k, v in header.items()}
    with zipfile.ZipFile(path) as z:
        assert any(name.endswith("/data.pkl") for name in z.namelist()), f"{path} is not a torch zip file"
    return None


def test_every_file_in_the_manifest_is_there_unchanged():
    m = manifest()
    assert set(m["models"]) == set(BLIP_MODELS + CLIP_MODELS)
    for rel, digest in m["sha256"].items():
        path = HF_FIXTURES / rel
        assert path.is_file(), f"fixture file missing: {path} (regenerate: see tests/fixtures/hf/README.md)"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from the manifest"
    for name, model in m["models"].items():
        for f in model["files"]:
            assert (HF_FIXTURES / name / f).is_file(), f"{name}/{f} missing"
        assert (HF_FIXTURES / name / "config.json").is_file() and (HF_FIXTURES / name / model["weights_file"]).is_file()


@pytest.mark.parametrize("name", BLIP_MODELS + CLIP_MODELS)
def test_arrays_have_the_shapes_the_manifest_states(name):
    arrays, stated = expected(name), manifest()["models"][name]["arrays"]
    assert set(arrays) == set(stated)
    for key, (shape, dtype) in stated.items():
        assert list(arrays[key].shape) == shape and str(arrays[key].dtype) == dtype, key
        assert dtype in ("float32", "int32"), key
        assert np.all(np.isfinite(arrays[key])), key


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_blip_fixture_exercises_what_the_issue_asks(name):
    model = manifest()["models"][name]
    gen, ids, arrays = model["generation"], model["token_ids"], expected(name)
    assert gen["greedy_differs_from_beam3"]
    assert all(case["float64_same_tokens"] for case in gen["cases"].values())
    for case in gen["cases"]:
        tokens = arrays[f"generate_{case}"]
        assert (tokens[:, 0] == ids["dec"]).all(), case  # generate() puts [DEC] first
        assert len(gen["captions"][case]) == tokens.shape[0]
    assert all(c.startswith("a picture of") for c in gen["captions"]["greedy_prompt"])
    assert (arrays["teacher_input_ids"][:, 0] == ids["dec"]).all()
    assert set(TIED) <= set(model["tied_weights_absent"])
    names = _weight_names(HF_FIXTURES / name / model["weights_file"])
    if names is not None:
        assert not set(TIED) & set(names)
        assert set(names.values()) == {"F16" if model["weights_dtype"] == "float16" else "F32"}


def test_every_decoding_control_changes_some_caption():
    changed = {}
    for name in BLIP_MODELS:
        for case, meta in manifest()["models"][name]["generation"]["cases"].items():
            if meta["differs_from"] is not None:
                changed[case] = changed.get(case, False) or meta["changes_output"]
    assert all(changed.values()), [c for c, v in changed.items() if not v]


def test_clip_full_holds_more_than_the_vision_tower():
    names = _weight_names(HF_FIXTURES / "clip_full" / "model.safetensors")
    assert any(k.startswith("text_model.") for k in names) and any(k.startswith("vision_model.") for k in names)
