"""Image processor settings from preprocessor_config.json or v5's processor_config.json."""

import json

import pytest

from tests.helpers.hf_fixture import BLIP_MODELS, CLIP_MODELS, expected, model_dir
from tfcaption.interop.hf import HubCheckpoint, HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.image_processor_settings import read_image_processor_settings

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.mark.parametrize("name", BLIP_MODELS + CLIP_MODELS)
def test_settings_give_the_fixtures_pixel_size_and_clip_normalisation(name):
    settings = HubCheckpoint(model_dir(name)).image_processor
    assert settings.output_size == expected(name)["pixel_values"].shape[-2:]
    assert settings.resample == 3 and settings.resample_name == "bicubic"
    assert settings.do_rescale and settings.rescale_factor == pytest.approx(1 / 255, rel=1e-15)
    assert settings.do_normalize and settings.image_mean == CLIP_MEAN and settings.image_std == CLIP_STD
    assert settings.do_convert_rgb


def test_blip_resizes_to_a_square_and_v5_nests_it_in_processor_config():
    a, b = (HubCheckpoint(model_dir(n)).image_processor for n in BLIP_MODELS)
    assert (a.file, a.size, a.do_center_crop, a.crop_size) == ("preprocessor_config.json",
                                                               {"height": 32, "width": 32}, False, None)
    assert (b.file, b.size, b.processor_type) == ("processor_config.json", {"height": 48, "width": 48},
                                                  "BlipImageProcessor")


def test_clip_resizes_the_short_side_then_crops():
    settings = HubCheckpoint(model_dir("clip_vision")).image_processor
    assert settings.size == {"shortest_edge": 40} and settings.do_center_crop
    assert settings.crop_size == {"height": 36, "width": 36}


@pytest.mark.parametrize("kind, size", [("BlipImageProcessor", {"height": 384, "width": 384}),
                                        ("CLIPFeatureExtractor", {"shortest_edge": 384})])
def test_integer_size_of_older_files_is_a_square_for_blip_and_the_short_side_for_clip(tmp_path, kind, size):
    type_key = "feature_extractor_type" if "Feature" in kind else "image_processor_type"
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({type_key: kind, "size": 384, "crop_size": 224,
                                                                   "do_center_crop": "CLIP" in kind}))
    settings = read_image_processor_settings(tmp_path)
    assert settings.size == size and settings.processor_type == kind
    assert settings.image_mean == CLIP_MEAN and settings.rescale_factor == 1 / 255  # the classes' defaults
    assert settings.output_size == ((224, 224) if "CLIP" in kind else (384, 384))


def test_processor_settings_errors_are_one_line(tmp_path):
    with pytest.raises(HubFilesNotFoundError, match="no image processor settings"):
        read_image_processor_settings(tmp_path)
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "BlipProcessor"}))
    with pytest.raises(HubFilesNotFoundError, match="processor_config.json: no 'image_processor' entry"):
        read_image_processor_settings(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5]}))
    with pytest.raises(HubCheckpointError, match="preprocessor_config.json: no 'size'"):
        read_image_processor_settings(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 4, "width": 4},
                                                                   "image_mean": [0.5, 0.5]}))
    with pytest.raises(HubCheckpointError, match=r"'image_mean' \[0.5, 0.5\] must hold 3 numbers"):
        read_image_processor_settings(tmp_path)
