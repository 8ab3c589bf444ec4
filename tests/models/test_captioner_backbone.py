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
    assert config["eos_id"] == 3
    legacy = CaptionerBackbone.from_config({"config": config, "name": "captioner"})  # the former Captioner's
    assert legacy.config.to_dict() == config and legacy.name == "captioner"
    with pytest.raises(ValueError, match="special ids"):
        CaptionerBackbone.from_model_config({**config, "eos_id": 7})


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
