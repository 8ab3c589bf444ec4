"""The run config: its sections, the one caption-length setting, and old flat config files."""

import json

import pytest

from tfcaption.cli.common import apply_overrides
from tfcaption.config import DataConfig, ExportConfig, RunConfig, TrainConfig
from tfcaption.models.config import CaptionerConfig


def _named(data="shapes", output_dir="runs/shapes-small", model_name=""):
    return RunConfig(data=DataConfig(spec=data), train=TrainConfig(output_dir=output_dir),
                     export=ExportConfig(model_name=model_name))


def test_export_name_follows_the_dataset_and_run_unless_named():
    assert RunConfig().export_name == "shapes_m2_small"  # the default run's SavedModel
    assert _named("data/coco-karpathy", "runs/coco-m2").export_name == "coco-m2"
    assert _named("folder:x", "runs/my photos!/").export_name == "my_photos"
    assert _named("folder:x", "/").export_name == "captioner"
    assert _named("folder:x", model_name="mine").export_name == "mine"


def test_decode_steps_and_token_rows_derive_from_max_caption_words():
    data = DataConfig(max_caption_words=19)
    assert (data.max_decode_steps, data.max_tokens) == (20, 21)
    with pytest.raises(ValueError, match="max_caption_words"):
        DataConfig(max_caption_words=0)


def test_a_flat_config_json_of_an_earlier_version_loads_into_the_sections(tmp_path):
    old = {
        "model": CaptionerConfig.from_preset("small", vocab_size=40).to_dict(),
        "train": {"data": "folder:photos", "data_root": "/cache", "dataset_options": {"max_image_side": 320},
                  "output_dir": "runs/photos", "export_root": "exports", "model_name": "mine", "batch_size": 16,
                  "epochs": 7, "max_caption_words": 12, "min_word_count": 2, "augment_flip": False,
                  "eval_splits": ["test"], "eval_beam_size": 5, "eval_batch_size": 10, "export": False,
                  "export_beam_size": 4, "warmup_steps": 50},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    config = RunConfig.load(str(path))
    assert (config.data.spec, config.data.root, config.data.options) == ("folder:photos", "/cache",
                                                                          {"max_image_side": 320})
    assert (config.data.max_caption_words, config.data.min_word_count, config.data.augment_flip) == (12, 2, False)
    assert (config.decode.beam_size, config.decode.batch_size, config.decode.eval_splits) == (5, 10, ("test",))
    assert (config.export.enabled, config.export.root, config.export.model_name, config.export.beam_size) == (
        False, "exports", "mine", 4)
    assert (config.train.output_dir, config.train.batch_size, config.train.epochs, config.train.warmup_steps) == (
        "runs/photos", 16, 7, 50)
    assert config.model.vocab_size == 40
    # Saved again, it round-trips in the sectioned form.
    config.save(str(tmp_path / "new.json"))
    assert RunConfig.load(str(tmp_path / "new.json")) == config


def test_unknown_sections_and_fields_are_errors_naming_them():
    with pytest.raises(ValueError, match="Unknown config sections: trian"):
        RunConfig.from_dict({"trian": {}})
    with pytest.raises(ValueError, match="Unknown DataConfig fields: max_words"):
        RunConfig.from_dict({"data": {"max_words": 3}})


def test_set_overrides_take_new_and_old_field_names():
    config = apply_overrides(RunConfig(), ["data.max_caption_words=9", "train.eval_beam_size=5",
                                           "train.export_root=/tmp/x", "warmup_steps=7", ("export.enabled", False)])
    assert config.data.max_caption_words == 9
    assert config.decode.beam_size == 5
    assert config.export.root == "/tmp/x" and config.export.enabled is False
    assert config.train.warmup_steps == 7
    with pytest.raises(ValueError, match="Unknown config field 'train.nope'"):
        apply_overrides(RunConfig(), ["train.nope=1"])
