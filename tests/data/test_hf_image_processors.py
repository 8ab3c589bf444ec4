"""CLIP's and BLIP's image processors in TensorFlow against transformers' (PIL bicubic on uint8) on the
parity fixtures' images, and `pil_bicubic_resize` against Pillow itself.

The bound the docs state: the fixtures' pixel_values are reproduced exactly (max difference 0), since
the resize runs PIL's own coefficients, rounding and pass order; tf.image.resize would be off by up to
6 uint8 levels (antialias=True) or 49 (antialias=False) on these images.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.helpers import hf_fixture as hf
from tfcaption.data.blip_image_processor import BlipImageProcessor
from tfcaption.data.clip_image_processor import ClipImageProcessor
from tfcaption.data.pil_resize import pil_bicubic_resize

PROCESSORS = {"clip_full": ClipImageProcessor, "clip_vision": ClipImageProcessor, "blip_a": BlipImageProcessor,
              "blip_b": BlipImageProcessor}


def _images():
    return [tf.io.decode_png(tf.io.read_file(str(path)), channels=3) for path in hf.images()]


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_pixel_values_equal_the_fixtures(name):
    processor = PROCESSORS[name].from_config(hf.model_dir(name))
    reference = hf.expected(name)["pixel_values"].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    pixels = np.stack([processor(image).numpy() for image in _images()])
    difference = np.abs(pixels - reference)
    assert pixels.shape == reference.shape
    assert difference.max() == 0.0, f"max {difference.max():.3g}, mean {difference.mean():.3g}"


def test_processor_runs_in_tf_data_and_under_xla():
    processor = ClipImageProcessor.from_config(hf.model_dir("clip_vision"))
    paths = tf.data.Dataset.from_tensor_slices([str(path) for path in hf.images()])
    batch = next(iter(paths.map(lambda p: processor(tf.io.decode_png(tf.io.read_file(p), channels=3))).batch(3)))
    reference = hf.expected("clip_vision")["pixel_values"].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(batch.numpy(), reference)
    compiled = tf.function(processor, jit_compile=True)
    # XLA may fold the division by std into a multiplication: one float32 ulp
    np.testing.assert_allclose(compiled(_images()[0]).numpy(), reference[0], rtol=0, atol=1e-6)


def test_clip_resize_keeps_transformers_long_side_and_crop_offset():
    processor = ClipImageProcessor(32, 32, 32, [0.0] * 3, [1.0] * 3)
    assert [int(v) for v in processor.resized_size(41, 57)] == [32, 44]  # int(32 * 57 / 41), landscape
    assert [int(v) for v in processor.resized_size(64, 50)] == [40, 32]  # int(32 * 64 / 50), portrait


def test_resize_equals_pillow_on_random_sizes():
    rng = np.random.default_rng(0)
    for trial in range(60):
        height, width = (int(v) for v in rng.integers(3, 70, 2))
        out_height, out_width = (int(v) for v in rng.integers(2, 70, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        reference = np.asarray(Image.fromarray(image).resize((out_width, out_height), Image.BICUBIC))
        np.testing.assert_array_equal(pil_bicubic_resize(image, out_height, out_width).numpy(), reference,
                                      err_msg=f"{height}x{width} -> {out_height}x{out_width}")


@pytest.mark.parametrize("cls,config,message", [
    (ClipImageProcessor, {"size": {"height": 32, "width": 32}, "image_mean": [0] * 3, "image_std": [1] * 3},
     "no shortest_edge"),
    (BlipImageProcessor, {"size": {"shortest_edge": 32}, "image_mean": [0] * 3, "image_std": [1] * 3},
     "no height and width"),
    (BlipImageProcessor, {"size": {"height": 8, "width": 8}, "resample": 2, "image_mean": [0] * 3,
                          "image_std": [1] * 3}, "resample 2 is not supported"),
    (ClipImageProcessor, {"size": {"shortest_edge": 8}, "crop_size": {"height": 9, "width": 9},
                          "image_mean": [0] * 3, "image_std": [1] * 3}, "crop_size 9x9 is larger"),
])
def test_config_errors_name_the_field(cls, config, message):
    with pytest.raises(ValueError, match=message):
        cls.from_config(config)


def test_missing_config_file_says_which_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="put preprocessor_config.json"):
        BlipImageProcessor.from_config(tmp_path)


def test_v5_processor_config_is_read():
    assert BlipImageProcessor.from_config(hf.model_dir("blip_b")).get_config()["height"] == 48
