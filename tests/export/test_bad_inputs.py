"""Bad requests fail with InvalidArgumentError naming the batch index; every supported format decodes."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.exports import encode, random_rgb, tiny_export

MAX_PIXELS = 64 * 64


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return tf.saved_model.load(tiny_export(tmp_path_factory.mktemp("export"), beam_size=2, max_pixels=MAX_PIXELS))


@pytest.fixture(scope="module")
def good():
    return encode(random_rgb(40, 48, seed=3))


def _call(loaded, images, signature="serving_default"):
    return loaded.signatures[signature](image_bytes=tf.constant(images))


def _error(loaded, images, signature="serving_default"):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        _call(loaded, images, signature)
    return caught.value.message


def _gif(frames):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE) for f in frames]
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buffer.getvalue()


@pytest.mark.parametrize("bad, reason", [
    (b"", "empty string"),
    (b"this is not an image at all", "not a JPEG, PNG, GIF or BMP image"),
    ("truncated_png", "not a decodable image (corrupt or truncated data)"),
    ("truncated_jpeg", "not a decodable image (corrupt or truncated data)"),
    (b"\x89PNG\r\n\x1a\n", "not a decodable image (corrupt or truncated data)"),  # magic bytes only
])
def test_bad_element_is_named_by_index_and_reason(loaded, good, bad, reason):
    if bad == "truncated_png":
        bad = good[: len(good) // 2]
    elif bad == "truncated_jpeg":
        bad = encode(random_rgb(40, 48, seed=4), "JPEG")[:300]
    for signature in ("serving_default", "caption_with_attention"):
        message = _error(loaded, [good, good, bad], signature)
        assert f"image_bytes[2]: {reason}" in message
        assert "image_bytes[0]" not in message and "image_bytes[1]" not in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_oversize_image_is_refused_from_its_header(loaded, good, fmt):
    big = encode(np.zeros((70, 90, 3), np.uint8), fmt)  # 6300 pixels > 4096
    assert f"image_bytes[1]: 90x70 pixels exceeds the limit of {MAX_PIXELS}" in _error(loaded, [good, big])


def test_every_bad_index_is_listed(loaded, good):
    message = _error(loaded, [b"", good, b"junk", good[:100]])
    assert "image_bytes[0]: empty string" in message
    assert "image_bytes[2]: not a JPEG, PNG, GIF or BMP image" in message
    assert "image_bytes[3]: not a decodable image" in message
    assert "image_bytes[1]" not in message


def test_the_same_model_answers_after_bad_requests(loaded, good):
    before = _call(loaded, [good])
    _error(loaded, [b""])
    _error(loaded, [good[:50]])
    after = _call(loaded, [good])
    assert after["caption"].numpy()[0] == before["caption"].numpy()[0]
    np.testing.assert_allclose(after["score"].numpy(), before["score"].numpy(), rtol=1e-6)
    assert _call(loaded, [good], "caption_with_attention")["attention"].shape[0] == 1


def _same_result(loaded, image, reference):
    """`image` captions exactly like the PNG `reference` (same pixels, other encoding)."""
    out = _call(loaded, [image, reference])
    tokens, scores = out["tokens"].numpy(), out["score"].numpy()
    assert (tokens[0] == tokens[1]).all()
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-4)


def test_lossless_formats_decode_to_the_same_pixels(loaded):
    rgb = random_rgb(40, 48, seed=5)
    gray = rgb[..., 0]
    _same_result(loaded, encode(rgb, "BMP"), encode(rgb))
    _same_result(loaded, encode(gray), encode(np.repeat(gray[..., None], 3, -1)))  # grayscale -> RGB
    rgba = np.concatenate([rgb, np.full((40, 48, 1), 7, np.uint8)], -1)
    _same_result(loaded, encode(rgba), encode(rgb))  # alpha dropped
    # 16-bit: v * 257 / 65535 == v / 255, so the 16-bit PNG matches the 8-bit one.
    _same_result(loaded, encode(gray.astype(np.uint16) * 257), encode(gray))
    # An animated GIF gives its first frame.
    first, second = random_rgb(40, 48, seed=6), random_rgb(40, 48, seed=7)
    animated = _gif([first, second])
    frames = tf.io.decode_gif(animated).numpy()
    assert frames.shape[0] == 2
    _same_result(loaded, animated, encode(frames[0]))


def test_jpeg_and_a_batch_of_every_format_are_captioned(loaded):
    rgb = random_rgb(40, 48, seed=8)
    batch = [encode(rgb, "JPEG"), encode(rgb), encode(rgb, "GIF"), encode(rgb, "BMP"),
             encode(rgb[..., 0].astype(np.uint16) * 200)]
    out = _call(loaded, batch)
    assert out["caption"].shape == (5,) and np.isfinite(out["score"].numpy()).all()
