"""`CaptionerPreprocessor`: every image input kind gives the pixels of the image's PNG; tokens in and out."""

import io

import numpy as np
import pytest
import tensorflow as tf

import keras

from tfcaption.data.pipeline import decode_image
from tfcaption.models import CaptionerPreprocessor

WORDS = ["<unk>", "<pad>", "<bos>", "<eos>", "a", "red", "circle"]


def _png(array):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(16, 16, 3), (40, 24, 3), (20, 20), (20, 20, 4)])
def test_arrays_give_the_pixels_of_their_png(shape):
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    pre = CaptionerPreprocessor(WORDS, image_size=16)
    single, pixels = pre.preprocess_images(array)
    expected = decode_image(tf.constant(_png(array)), 16).numpy()
    assert single and pixels.shape == (1, 16, 16, 3)
    np.testing.assert_array_equal(pixels[0], expected)
    _, from_bytes = pre.preprocess_images([_png(array)])
    np.testing.assert_array_equal(from_bytes[0], expected)


def test_batch_tensors_and_float_arrays():
    array = np.random.default_rng(1).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    pre = CaptionerPreprocessor(WORDS, image_size=16)
    single, batch = pre.preprocess_images(tf.constant(array))
    assert not single and batch.shape == (2, 16, 16, 3)
    for i in range(2):
        np.testing.assert_array_equal(batch[i], decode_image(tf.constant(_png(array[i])), 16).numpy())
    _, floats = pre.preprocess_images([array[0] / 255.0])  # [0, 1] floats read as tfcaption.load reads them
    np.testing.assert_allclose(floats[0], batch[0], atol=1.0)
    _, pixels = pre.preprocess_images(array.astype(np.float32))  # a float batch: values in [0, 255]
    np.testing.assert_allclose(pixels, batch, atol=1e-3)


def test_tokens_in_and_out_with_the_special_ids():
    pre = CaptionerPreprocessor(WORDS, image_size=16, max_caption_words=3)
    rows = pre.tokenize(["A red circle, a red circle", "circle"]).numpy()
    assert rows.tolist() == [[2, 4, 5, 6, 3], [2, 6, 3, 1, 1]]
    assert pre.detokenize(rows) == ["a red circle", "circle"]
    x, y = pre.preprocess_samples(tf.constant([_png(np.zeros((8, 8, 3), np.uint8))]), tf.constant(["a circle"]))
    assert x["images"].shape == (1, 16, 16, 3) and x["tokens"].numpy().tolist() == [[2, 4, 6, 3]]
    assert y.numpy().tolist() == [[4, 6, 3, 1]]


def test_config_round_trip_and_vocabulary_later():
    pre = CaptionerPreprocessor(WORDS, image_size=16, max_caption_words=3)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pre))
    assert clone.get_config() == pre.get_config() and clone.vocabulary == pre.vocabulary
    empty = CaptionerPreprocessor(image_size=16)
    with pytest.raises(ValueError, match="no vocabulary yet"):
        empty.tokenize(["a"])
    data = tf.data.Dataset.from_tensor_slices((tf.zeros((2, 4, 4, 3)), ["a red circle", "a circle"])).batch(2)
    assert empty.adapt(data).tokens == ["<unk>", "<pad>", "<bos>", "<eos>", "a", "circle", "red"]


def test_region_features_are_padded_to_a_batch():
    pre = CaptionerPreprocessor(WORDS, input_key="features", feature_dim=4)
    single, batch = pre.preprocess_images([np.ones((3, 4)), np.ones((2, 4))])
    assert not single and batch.shape == (2, 3, 4) and not batch[1, 2].any()
