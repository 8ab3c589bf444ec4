"""The presets table: one record per preset, read by `CaptionerConfig.from_preset` and `RunConfig.from_preset`;
its parameter counts are what the models it describes hold."""

import numpy as np
import pytest

from tfcaption.config import RunConfig, TrainConfig
from tfcaption.models import CaptionerConfig
from tfcaption.models.config import PRESETS as MODEL_CONFIG_PRESETS
from tfcaption.models.config import preset_input
from tfcaption.models.presets import DEFAULT_PRESET, PRESETS, Preset, format_presets, get_preset


def test_the_table_holds_every_preset_with_its_metadata():
    assert MODEL_CONFIG_PRESETS is PRESETS and DEFAULT_PRESET in PRESETS
    assert set(PRESETS) == {"small", "cptr_small", "spatial_small", "m2", "m2_regions", "m2_reference", "cptr",
                            "spatial_attention", "vit_m2", "clip_m2", "clip_transformer"}
    for name, preset in PRESETS.items():
        assert isinstance(preset, Preset) and preset.name == name and get_preset(name) is preset
        assert preset.description and preset.paper and preset.params > 0
        kind = CaptionerConfig.from_preset(name).image_encoder.type
        assert preset.input_kind == preset_input(name) == ("features" if kind == "regions" else "images")


def test_an_unknown_preset_is_one_line_listing_the_choices():
    for read in (get_preset, CaptionerConfig.from_preset, RunConfig.from_preset):
        with pytest.raises(ValueError) as error:
            read("m3")
        message = str(error.value)
        assert "\n" not in message and message.startswith("Unknown preset 'm3'; choose one of: clip_m2, clip_transformer, cptr, cptr_small, m2")


def test_records_are_frozen_and_hand_out_copies():
    preset = get_preset("small")
    with pytest.raises(AttributeError):
        preset.params = 1
    with pytest.raises(TypeError):
        preset.model["hidden_dim"] = 1
    fields = preset.model_fields()
    fields["image_encoder"]["image_size"] = 32
    assert get_preset("small").model_fields()["image_encoder"]["image_size"] == 96
    assert CaptionerConfig.from_preset("small").image_encoder.stem_filters == (32, 64)
    with pytest.raises(ValueError, match="its model reads features, not images"):
        Preset("x", "d", "p", "images", 1, 1, {"image_encoder": {"type": "regions"}})
    with pytest.raises(ValueError, match="run settings for model"):
        Preset("x", "d", "p", "images", 1, 1, {}, {"model": {}})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_run_settings_come_from_the_table(name):
    preset = get_preset(name)
    config = RunConfig.from_preset(name)
    assert config.model == CaptionerConfig.from_preset(name)
    for section, fields in preset.run_fields().items():
        for field, value in fields.items():
            assert getattr(getattr(config, section), field) == (tuple(value) if isinstance(value, tuple) else value)
    untouched = {f for f in TrainConfig.__dataclass_fields__ if f not in preset.run_fields().get("train", {})}
    assert all(getattr(config.train, f) == getattr(TrainConfig(), f) for f in untouched - {"output_dir"})
    assert config.train.output_dir.endswith(f"shapes-{name}")


def test_the_papers_run_settings():
    m2 = RunConfig.from_preset("m2")
    assert (m2.train.batch_size, m2.train.learning_rate_schedule, m2.train.warmup_steps) == (50, "noam", 10000)
    assert [phase.task for phase in m2.train.phase_configs()] == ["xe", "scst"]
    spatial = RunConfig.from_preset("spatial_attention")
    assert (spatial.train.learning_rate_schedule, spatial.train.learning_rate, spatial.data.max_caption_words) == (
        "constant", 3e-4, 14)
    assert RunConfig.from_preset("small").train == TrainConfig(output_dir="runs/shapes-small")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_parameter_counts_are_the_models(name):
    from tfcaption.models import CaptionerBackbone

    preset = get_preset(name)
    overrides = {"image_encoder": {"weights": ""}} if preset.model_fields().get("image_encoder", {}).get(
        "type") in ("vit", "cnn", "clip") else {}  # the count does not depend on the weights; no download
    model = CaptionerBackbone.from_preset_config(name, vocab_size=preset.params_vocab_size, **overrides)
    assert sum(int(np.prod(w.shape)) for w in model.weights) == preset.params


def test_the_listing_names_every_preset_with_its_numbers():
    text = format_presets()
    assert text.splitlines()[0].split() == ["PRESET", "INPUT", "PARAMETERS", "PAPER"]
    for name, preset in PRESETS.items():
        assert f"\n{name} " in text and preset.paper in text
    assert "small (default)" in text and "38.4M at 10,201 tokens" in text and "1.24M at 46 tokens" in text
    assert "train.learning_rate_schedule=noam" in text and 'train.phases=[{"task":"xe"},{"task":"scst"}]' in text
    assert max(len(line) for line in text.splitlines() if not line.startswith(tuple(PRESETS))) <= 100
