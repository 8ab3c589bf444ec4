"""The captioner as parts: every preset builds, round-trips its config, saves and reloads exactly."""

import json
import os

import numpy as np
import pytest

import keras

from tfcaption.models import PRESETS, CaptionerBackbone, CaptionerConfig
from tfcaption.data.records import InputKind, input_kind
from tfcaption.training.run_directory import load_run, read_model_checkpoint
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny import example_inputs, tiny_preset

LEGACY = os.path.join(REPO_ROOT, "tests", "fixtures", "legacy_v1")


def test_presets_have_the_paper_sizes():
    m2 = CaptionerConfig.from_preset("m2", vocab_size=10201)
    assert (m2.hidden_dim, m2.num_heads, m2.key_dim, m2.intermediate_dim) == (512, 8, 64, 2048)
    assert (m2.encoder.num_layers, m2.decoder.num_layers, m2.encoder.memory_slots, m2.dropout) == (3, 3, 40, 0.1)
    assert (m2.image_encoder.image_size, m2.image_encoder.patch_size, m2.decoder.type) == (224, 16, "meshed")
    assert m2.layer_norm_epsilon == 1e-5
    assert set(PRESETS) >= {"m2", "small", "m2_regions", "m2_reference", "cptr_small", "spatial_small"}
    cptr = CaptionerConfig.from_preset("cptr_small")
    assert (cptr.encoder.memory_slots, cptr.decoder.type) == (0, "transformer")
    spatial = CaptionerConfig.from_preset("spatial_small")
    assert spatial.encoder.scale == "sqrt_len_plus_dk" and spatial.image_encoder.positions == "sinusoid_2d"
    assert spatial.image_encoder.patch_size == 2 ** len(spatial.image_encoder.stem_filters)  # one token per cell


def test_m2_region_model_has_the_papers_parameter_count():
    # 38.44M for the released model (10,201 words, 2048-d regions), counting the frozen
    # positional table of 55 rows (28,160 values) as the authors' count does.
    model = CaptionerBackbone.from_model_config(CaptionerConfig.from_preset("m2_reference", vocab_size=10201))
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert abs(total - 38.44e6) < 0.005e6, total
    assert total - sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 55 * 512


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_part_round_trips_get_config(name):
    model = CaptionerBackbone.from_model_config(tiny_preset(name))
    for part in (model.image_encoder, model.encoder, model.decoder):
        clone = type(part).from_config(part.get_config())
        assert clone.get_config() == part.get_config(), type(part).__name__
        registered = keras.saving.get_registered_object(f"tfcaption>{type(part).__name__}")
        assert registered is type(part)
    assert CaptionerBackbone.from_config(model.get_config()).config == model.config
    assert CaptionerConfig.from_dict(json.loads(model.config.to_json())) == model.config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_keras_file_reloads_with_identical_logits(name, tmp_path):
    model = CaptionerBackbone.from_model_config(tiny_preset(name))
    inputs = example_inputs(model)
    before = np.asarray(model(inputs))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    clone = keras.saving.load_model(path)
    assert isinstance(clone, CaptionerBackbone) and clone.config == model.config
    np.testing.assert_array_equal(np.asarray(clone(inputs)), before)


def test_token_grids_come_from_the_image_encoder():
    assert CaptionerBackbone.from_preset_config("small", vocab_size=9).token_grid.cells == 36
    spatial = CaptionerBackbone.from_preset_config("spatial_small", vocab_size=9)
    assert (spatial.token_grid.rows, spatial.token_grid.cols) == (6, 6)
    m2 = CaptionerConfig.from_preset("m2", vocab_size=9)
    assert (m2.image_encoder.image_size // m2.image_encoder.patch_size) == 14
    assert CaptionerBackbone.from_preset_config("m2_regions", vocab_size=9).token_grid is None


def test_plain_encoder_without_layers_passes_the_image_tokens_as_one_level():
    model = CaptionerBackbone.from_model_config(tiny_preset("cptr_small", encoder={"num_layers": 0}))
    inputs = example_inputs(model)
    levels, mask = model.encode(inputs["images"])
    tokens, _ = model.image_encoder(inputs["images"])
    assert levels.shape[1] == 1 and mask is None
    np.testing.assert_array_equal(np.asarray(levels[:, 0]), np.asarray(tokens))
    assert model(inputs).shape == (2, 4, 14)


def test_weights_survive_save_and_load(tmp_path):
    model = CaptionerBackbone.from_model_config(tiny_preset("small"))
    inputs = example_inputs(model)
    before = np.asarray(model(inputs))
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    clone = CaptionerBackbone.from_model_config(model.config)
    clone.load_weights(path)
    np.testing.assert_allclose(np.asarray(clone(inputs)), before, atol=1e-6)


def test_bfloat16_policy_keeps_logits_float32():
    model = CaptionerBackbone.from_model_config(tiny_preset("small", dtype_policy="mixed_bfloat16"))
    logits = model(example_inputs(model))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.decoder.word_embedding.compute_dtype == "bfloat16"


def test_wrong_inputs_for_the_model_are_one_line_errors():
    pixels = CaptionerBackbone.from_model_config(tiny_preset("small"))
    with pytest.raises(ValueError, match="holds features but this model's 'patches' image encoder reads images"):
        pixels.check_inputs(InputKind("features", 12, 5), "data/x")
    regions = CaptionerBackbone.from_model_config(tiny_preset("m2_regions"))
    with pytest.raises(ValueError, match="holds images .* use a pixel preset"):
        regions.check_inputs(input_kind(None), "data/shapes")
    with pytest.raises(ValueError, match="2048 values per region, but this model reads 12"):
        regions.check_inputs(InputKind("features", 2048, 50), "data/coco")


@pytest.mark.parametrize("kind", ["pixels", "regions"])
def test_run_directories_of_the_flat_config_version_still_load(kind):
    """Runs written before the parts existed (flat config.json, older weight layout) give the same logits."""
    with open(os.path.join(LEGACY, "expected_logits.json")) as f:
        expected = json.load(f)[kind]
    captioner, run_config = load_run(os.path.join(LEGACY, f"run_{kind}"))
    model = captioner.backbone
    if kind == "pixels":
        from tfcaption.data.pipeline import decode_image

        with open(os.path.join(LEGACY, "image.png"), "rb") as f:
            inputs = np.asarray(decode_image(f.read(), model.image_encoder.image_size))[None]
        assert model.config.image_encoder.stem_filters == (8,)
    else:
        inputs = np.load(os.path.join(LEGACY, "features.npy"))
    tokens = np.array(expected["tokens"], np.int32)
    logits = model({model.input_key: inputs, "tokens": tokens, "padding_mask": tokens != captioner.preprocessor.pad_id})
    np.testing.assert_allclose(np.asarray(logits), np.array(expected["logits"]), atol=2e-5)
    assert run_config.export.model_name == kind


def test_checkpoints_of_the_flat_config_version_are_refused_with_the_way_out():
    model = load_run(os.path.join(LEGACY, "run_pixels"))[0].backbone
    with pytest.raises(ValueError, match="held only part of the model.*best.weights.h5"):
        read_model_checkpoint(model, os.path.join(LEGACY, "run_pixels", "checkpoints", "ckpt-1"))


def test_exports_of_the_flat_config_version_still_caption_with_attention():
    import tfcaption

    with open(os.path.join(LEGACY, "image.png"), "rb") as f:
        image = f.read()
    export = tfcaption.load(os.path.join(LEGACY, "export", "pixels"))
    run = tfcaption.load(os.path.join(LEGACY, "run_pixels"), beam_size=2)
    assert export.caption(image)["caption"] == run.caption(image)["caption"]  # the export's beam size is 2
    result = export.caption_with_attention(image)
    assert result["attention"].shape == (len(result["words"]), 4, 4) and result["gates"].shape[1] == 2
    assert result["image"].shape == (32, 32, 3)
    # An export's caption_with_attention is greedy; a run directory's follows its sampler (beam 2 here).
    assert result["words"] == tfcaption.load(os.path.join(LEGACY, "run_pixels"), sampler="greedy") \
        .caption_with_attention(image)["words"]
    assert " ".join(run.caption_with_attention(image)["words"]) == run.caption(image)["caption"]
