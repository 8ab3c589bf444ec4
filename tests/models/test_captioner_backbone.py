"""`CaptionerBackbone`: flat keyword arguments, `get_config` returning exactly them, and the former layouts."""

import json
import zipfile

import numpy as np
import pytest

import keras

from tfcaption.models import CaptionerBackbone, CaptionerConfig, PRESETS
from tfcaption.models.captioner_backbone import backbone_fields
from tests.helpers.tiny import example_inputs, tiny_preset

KWARGS = {
    "vocab_size": 11, "image_encoder": {"type": "patches", "image_size": 32, "patch_size": 8},
    "encoder": {"num_layers": 1, "memory_slots": 4}, "decoder": {"type": "meshed", "num_layers": 1},
    "hidden_dim": 32, "num_heads": 2, "key_dim": 16, "intermediate_dim": 64, "dropout": 0.0, "max_length": 12,
    "layer_norm_epsilon": 1e-6, "output_bias": True, "dtype_policy": "float32", "name": "tiny_backbone",
}


def _filled(kwargs):
    """The kwargs with each part's defaults filled in, as get_config writes them."""
    parts = CaptionerConfig.from_dict({k: v for k, v in kwargs.items() if k != "name"}).to_dict()
    return {**kwargs, **{part: parts[part] for part in ("image_encoder", "encoder", "decoder")}}


def test_get_config_round_trip_equals_its_kwargs():
    backbone = CaptionerBackbone(**KWARGS)
    assert backbone.get_config() == _filled(KWARGS)
    assert set(backbone.get_config()) == set(backbone_fields()) | {"name"}  # no special ids: the tokenizer's
    clone = CaptionerBackbone.from_config(backbone.get_config())
    assert clone.get_config() == backbone.get_config()
    inputs = example_inputs(backbone)
    clone.set_weights(backbone.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(inputs)), np.asarray(backbone(inputs)))


def _as_former_captioner_file(path):
    """Rewrites a backbone's `.keras` file as the former `Captioner` class saved it: registered as
    "tfcaption>Captioner" with `{"config": {CaptionerConfig dict}, "name"}` (the weights kept their layout)."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    saved = json.loads(files["config.json"])
    config = CaptionerConfig.from_dict({k: v for k, v in saved["config"].items() if k != "name"}).to_dict()
    saved.update(module="tfcaption.models.captioner", class_name="Captioner", registered_name="tfcaption>Captioner",
                 config={"config": config, "name": saved["config"]["name"]})
    files["config.json"] = json.dumps(saved).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def test_keras_files_of_the_former_captioner_class_load_as_the_backbone(tmp_path):
    backbone = CaptionerBackbone.from_model_config(tiny_preset("small"), name="captioner")
    path = str(tmp_path / "captioner.keras")
    backbone.save(path)
    _as_former_captioner_file(path)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("config.json"))["registered_name"] == "tfcaption>Captioner"
    clone = keras.saving.load_model(path)
    assert type(clone) is CaptionerBackbone and clone.config == backbone.config and clone.name == "captioner"
    inputs = example_inputs(backbone)
    np.testing.assert_array_equal(np.asarray(clone(inputs)), np.asarray(backbone(inputs)))
    assert keras.saving.get_registered_name(CaptionerBackbone) == "tfcaption>CaptionerBackbone"  # new files


def test_old_saved_configs_with_special_ids_load_and_other_ids_are_refused():
    config = tiny_preset("small").to_dict()
    assert not {"pad_id", "bos_id", "eos_id"} & set(config)  # the tokenizer's, not the model's
    # A model section written while the ids were CaptionerConfig fields (config.json, .keras, converted M2 runs).
    old = {**config, "pad_id": 1, "bos_id": 2, "eos_id": 3}
    assert CaptionerConfig.from_dict(old).to_dict() == config
    legacy = CaptionerBackbone.from_config({"config": old, "name": "captioner"})  # the former Captioner's
    assert legacy.config.to_dict() == config and legacy.name == "captioner"
    with pytest.raises(ValueError, match=r"^model.eos_id=7: special ids are the tokenizer's \(pad_id=1, bos_id=2, "
                                         r"eos_id=3 .*remove them.$"):
        CaptionerBackbone.from_model_config({**old, "eos_id": 7})
    with pytest.raises(ValueError, match="unknown|pad_id"):
        CaptionerBackbone(**{**KWARGS, "pad_id": 1})  # not a backbone argument


def test_padding_mask_marks_padding_and_without_it_every_token_is_real():
    backbone = CaptionerBackbone(**KWARGS)
    inputs = example_inputs(backbone)  # row 1: <bos> w <pad> <pad>, masked
    logits = np.asarray(backbone(inputs))
    alone = np.asarray(backbone({"images": inputs["images"][1:], "tokens": inputs["tokens"][1:, :2]}))
    # The real tokens see only themselves: the same logits as the row without its padding.
    np.testing.assert_allclose(logits[1, :2], alone[0], atol=1e-5)
    # Without a mask the id the word vocabulary pads with is a word like any other.
    unmasked = np.asarray(backbone({"images": inputs["images"], "tokens": inputs["tokens"]}))
    np.testing.assert_array_equal(unmasked[0], logits[0])  # the unpadded row: nothing changes
    assert np.abs(unmasked[1, 2:] - logits[1, 2:]).max() > 1e-3
    # k captions per image: the mask is (B, k, T) beside the tokens.
    grouped = {"images": inputs["images"][1:], "tokens": inputs["tokens"][None],
               "padding_mask": inputs["padding_mask"][None]}
    images = np.repeat(inputs["images"][1:], 2, axis=0)
    np.testing.assert_allclose(np.asarray(backbone(grouped))[0], np.asarray(backbone({**inputs, "images": images})),
                               atol=1e-5)


def test_keras_file_of_a_backbone_reloads_with_identical_logits(tmp_path):
    backbone = CaptionerBackbone(**KWARGS)
    path = str(tmp_path / "backbone.keras")
    backbone.save(path)
    clone = keras.saving.load_model(path)
    assert type(clone) is CaptionerBackbone and clone.get_config() == backbone.get_config()
    inputs = example_inputs(backbone)
    np.testing.assert_array_equal(np.asarray(clone(inputs)), np.asarray(backbone(inputs)))


def test_every_preset_builds_from_its_kwargs():
    for name in sorted(PRESETS):
        backbone = CaptionerBackbone.from_model_config(tiny_preset(name))
        assert CaptionerBackbone(**backbone.get_config()).get_config() == backbone.get_config()
