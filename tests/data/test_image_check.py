"""Image checks at preparation: kept byte for byte when the training decoder reads them, else converted or skipped."""

import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import layouts
from tfcaption.data.image_check import ImageSkipped, check_image
from tfcaption.data.pipeline import decode_image


@pytest.mark.parametrize("name", [n for n in layouts.GOOD if not n.endswith(".webp")])
def test_modes_the_decoder_reads_are_kept_unchanged(name):
    data = layouts.GOOD[name](3)
    checked = check_image(data)
    assert checked.data == data and checked.conversion is None
    assert checked.kind == layouts.GOOD_KINDS[name]
    pixels = decode_image(checked.data, 32).numpy()
    assert pixels.shape == (32, 32, 3) and 0.0 <= pixels.min() and pixels.max() <= 255.0


def test_formats_tensorflow_cannot_decode_are_converted_to_jpeg():
    original = layouts.photo(5)
    checked = check_image(layouts.encode(original, "WEBP", quality=95))
    assert checked.conversion == "webp_to_jpeg" and checked.data[:3] == b"\xff\xd8\xff"
    decoded = tf.io.decode_jpeg(checked.data).numpy().astype(float)
    assert np.abs(decoded - original).mean() < 6.0


@pytest.mark.parametrize("name", list(layouts.BAD))
def test_bad_files_are_skipped_with_their_reason(name):
    make, reason = layouts.BAD[name]
    with pytest.raises(ImageSkipped) as caught:
        check_image(make(0))
    assert caught.value.reason == reason


def _png_claiming(width, height):
    """A PNG whose header claims a size its (tiny) data does not have: a decompression bomb's shape."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + \
        chunk(b"IEND", b"")


def test_oversized_images_are_refused_from_the_header():
    with pytest.raises(ImageSkipped) as caught:
        check_image(_png_claiming(7_000, 7_000))
    assert caught.value.reason == "too_large" and "7000x7000" in caught.value.detail
    with pytest.raises(ImageSkipped) as caught:  # far beyond Pillow's own bomb limit
        check_image(_png_claiming(50_000, 50_000))
    assert caught.value.reason == "too_large" and "2500000000 pixels" in caught.value.detail
    with pytest.raises(ImageSkipped) as caught:
        check_image(layouts.GOOD["rgb.jpg"](0), max_pixels=100)
    assert caught.value.reason == "too_large"


def test_max_side_downscales_keeping_aspect_and_16_bit_levels():
    array = layouts.photo(1, (120, 200))
    deep = layouts.encode(array, "PNG", "I;16")
    checked = check_image(deep, max_side=50)
    assert checked.conversion == "resized" and checked.kind == "PNG/I;16"
    small = tf.io.decode_jpeg(checked.data).numpy()
    assert small.shape == (30, 50, 3)
    # 16-bit levels are scaled to 8 bits, not clipped at 255 (which would turn the image white).
    assert abs(small[..., 0].mean() - array[..., 0].mean()) < 4.0
    untouched = layouts.GOOD["rgb.jpg"](0)
    assert check_image(untouched, max_side=1000).data == untouched


def test_reading_stops_at_the_size_limit(tmp_path):
    from tfcaption.data.image_check import read_image_file

    os_link = tmp_path / "endless.jpg"
    os_link.symlink_to("/dev/zero")  # a file that never ends must not fill the memory
    with pytest.raises(ImageSkipped) as caught:
        read_image_file(str(os_link), max_bytes=1024)
    assert caught.value.reason == "too_large"
    with pytest.raises(ImageSkipped) as caught:
        read_image_file(str(tmp_path / "absent.jpg"))
    assert caught.value.reason == "missing_file"
    with pytest.raises(ImageSkipped) as caught:
        read_image_file(str(tmp_path))  # a directory
    assert caught.value.reason == "unreadable_file"
