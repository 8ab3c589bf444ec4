"""A BLIP checkpoint imported as a tfcaption captioner (issue 30, items 2 and 4) captions as transformers did.

Each fixture checkpoint is written as a run directory (`import_blip`) and loaded the way every run is
(`ImageCaptioner.from_preset(run)`, `tfcaption.load`); its greedy token ids and caption strings are the
fixture's `generate_greedy` ones (transformers' `generate(max_new_tokens=8)`: [DEC], then 8 new tokens).
The images are the fixture's own `pixel_values` (taken back to [0, 255] for the model's input, which the image
encoder normalises again), and separately the fixture PNGs through the preprocessor, whose bicubic resize gives
PIL's uint8 levels.
"""

import json

import keras
import numpy as np
import pytest

import tfcaption
from tests.helpers.hf_fixture import BLIP_MODELS, assert_close, expected, images, manifest, model_dir
from tfcaption.config import RunConfig
from tfcaption.data.bert_tokenizer import BertTokenizer
from tfcaption.data.vocabulary import load_vocabulary
from tfcaption.interop.hf import HubCheckpoint, HubCheckpointError
from tfcaption.interop.hf.import_blip import blip_model_config, is_hub_source
from tfcaption.models.captioner_backbone import CaptionerBackbone
from tfcaption.models.config import CaptionerConfig, ConfigError
from tfcaption.models.image_captioner import ImageCaptioner
from tfcaption.training.run_directory import RunDirectory

NEW_TOKENS = 8  # the fixtures' max_new_tokens




def _model_pixels(captioner, name):
    """The fixture's pixel_values (normalised, NCHW) as the model's input: NHWC values in [0, 255]."""
    part = captioner.backbone.config.image_encoder
    normalised = np.transpose(expected(name)["pixel_values"], (0, 2, 3, 1))
    return ((normalised * np.array(part.image_std) + np.array(part.image_mean)) / part.rescale_factor).astype("float32")


def _greedy(captioner, inputs):
    out = captioner.generate(inputs, sampler="greedy", max_length=NEW_TOKENS, return_details=True)
    return np.array([o["tokens"] for o in out]), [o["caption"] for o in out]


def _reference(name):
    return expected(name)["generate_greedy"][:, 1:], manifest()["models"][name]["generation"]["captions"]["greedy"]


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_imported_run_gives_transformers_greedy_tokens_and_captions(blip_runs, name):
    captioner = ImageCaptioner.from_preset(blip_runs(name))
    tokens, captions = _greedy(captioner, _model_pixels(captioner, name))
    reference_tokens, reference_captions = _reference(name)
    np.testing.assert_array_equal(tokens, reference_tokens)
    assert captions == reference_captions


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_fixture_pngs_through_the_preprocessor_caption_as_transformers(blip_runs, name):
    tokens, captions = _greedy(ImageCaptioner.from_preset(blip_runs(name)), [str(path) for path in images()])
    reference_tokens, reference_captions = _reference(name)
    np.testing.assert_array_equal(tokens, reference_tokens)
    assert captions == reference_captions


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_preprocessed_pixels_equal_blips_processor(blip_runs, name):
    """The resize is PIL's bicubic on uint8 (`pil_bicubic_resize`): the same uint8 levels; after the model's
    normalisation the fixture's pixel_values within float32 rounding (1e-5)."""
    captioner = ImageCaptioner.from_preset(blip_runs(name))
    _, pixels = captioner.preprocessor.preprocess_images([str(path) for path in images()])
    np.testing.assert_array_equal(pixels, np.round(_model_pixels(captioner, name)))
    normalised = np.asarray(captioner.backbone.image_encoder.normalize(pixels.astype("float32")))
    assert np.abs(normalised - np.transpose(expected(name)["pixel_values"], (0, 2, 3, 1))).max() <= 1e-5


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_backbone_teacher_forced_logits_match_transformers(blip_runs, name):
    from tfcaption.data.pipeline import decoder_inputs

    captioner = ImageCaptioner.from_preset(blip_runs(name))
    reference = expected(name)
    ids = reference["teacher_input_ids"]
    inputs = decoder_inputs(np.concatenate([ids, np.zeros_like(ids[:, :1])], axis=1), captioner.preprocessor.pad_id)
    logits = np.asarray(captioner.backbone({"images": _model_pixels(captioner, name), **inputs}))
    real = reference["teacher_attention_mask"].astype(bool)
    assert_close(logits[real], reference["teacher_logits"][real], atol=1e-3)  # pixels renormalised: float error


def test_hub_directory_imports_in_memory_without_writing(tmp_path):
    source = model_dir("blip_b")
    before = sorted(p.name for p in source.iterdir())
    captioner = ImageCaptioner.from_preset(source)
    assert captioner.preprocessor.tokenizer == "bert" and captioner.preprocessor.resample == "bicubic"
    assert sorted(p.name for p in source.iterdir()) == before
    tokens, captions = _greedy(captioner, _model_pixels(captioner, "blip_b"))
    np.testing.assert_array_equal(tokens, _reference("blip_b")[0])


def test_sources_are_told_apart_from_run_directories(blip_runs):
    assert is_hub_source(model_dir("blip_a")) and is_hub_source("hf://Salesforce/blip-image-captioning-base")
    assert not is_hub_source(blip_runs("blip_a"))  # a run's config.json is a RunConfig


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_special_ids_are_pad_dec_sep(blip_runs, name):
    ids = manifest()["models"][name]["token_ids"]
    special = ImageCaptioner.from_preset(blip_runs(name)).preprocessor.special_ids
    assert (special.pad_id, special.bos_id, special.eos_id) == (ids["pad"], ids["dec"], ids["sep"])


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_run_directory_tokenizer_reloads_without_the_hub_files(blip_runs, name):
    run = RunDirectory(blip_runs(name))
    assert RunConfig.load(run.config).data.tokenizer == "bert"
    reloaded = load_vocabulary(run.vocab, "bert")
    assert reloaded == BertTokenizer.from_directory(model_dir(name))
    assert reloaded.tokens[37:] == ["[DEC]", "[ENC]"]


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_model_config_round_trips_through_config_json_and_get_config(blip_runs, name):
    config = blip_model_config(HubCheckpoint(model_dir(name)))
    assert RunConfig.load(RunDirectory(blip_runs(name)).config).model == config
    assert CaptionerConfig.from_dict(json.loads(config.to_json())) == config
    backbone = ImageCaptioner.from_preset(blip_runs(name)).backbone
    assert CaptionerBackbone.from_config(backbone.get_config()).get_config() == backbone.get_config()
    vision = HubCheckpoint(model_dir(name)).config["vision_config"]
    part = config.image_encoder
    assert (part.image_size, part.patch_size, part.width, part.num_layers) == (
        vision["image_size"], vision["patch_size"], vision["hidden_size"], vision["num_hidden_layers"])


def test_keras_file_round_trip_keeps_weights_and_tokenizer(blip_runs, tmp_path):
    captioner = ImageCaptioner.from_preset(blip_runs("blip_b"))
    path = str(tmp_path / "blip.keras")
    captioner.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.preprocessor.vocabulary == captioner.preprocessor.vocabulary
    assert loaded.preprocessor.resample == "bicubic"
    for a, b in zip(captioner.backbone.weights, loaded.backbone.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tokens, captions = _greedy(loaded, _model_pixels(loaded, "blip_b"))
    np.testing.assert_array_equal(tokens, _reference("blip_b")[0])
    assert captions == _reference("blip_b")[1]


def test_tfcaption_load_captions_the_imported_run_as_its_captioner(blip_runs):
    paths = [str(path) for path in images()]
    captions = [c["caption"] for c in tfcaption.load(blip_runs("blip_a")).caption(paths)]
    assert captions == ImageCaptioner.from_preset(blip_runs("blip_a")).generate(paths)  # greedy, the run's length
    assert [c[:len(r)] for c, r in zip(captions, _reference("blip_a")[1])] == _reference("blip_a")[1]


def test_tfcaption_load_with_max_length_captions_as_transformers_max_new_tokens(blip_runs):
    paths = [str(path) for path in images()]
    captions = tfcaption.load(blip_runs("blip_a"), sampler="greedy", max_length=NEW_TOKENS).caption(paths)
    assert [c["caption"] for c in captions] == _reference("blip_a")[1]


def test_another_architecture_is_one_line_naming_it():
    with pytest.raises(HubCheckpointError, match=r"a CLIPModel checkpoint; tfcaption imports BlipForCondit"):
        ImageCaptioner.from_preset(model_dir("clip_full"))


def test_blip_parts_without_their_partner_are_a_config_error():
    config = blip_model_config(HubCheckpoint(model_dir("blip_a"))).to_dict()
    with pytest.raises(ConfigError, match="go together"):
        CaptionerConfig.from_dict({**config, "encoder": {"num_layers": 1}})
    with pytest.raises(ConfigError, match="go together"):
        CaptionerConfig.from_dict({**config, "decoder": {"type": "transformer", "num_layers": 1}})
