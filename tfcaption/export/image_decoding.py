"""Decoding a batch of untrusted image bytes inside a serving graph, with errors that name the bad element.

A serving request is a batch of encoded images from a client. TensorFlow's own decode errors say neither
which element failed nor why in client terms, and a graph cannot catch an op's error. So every element
is checked and decoded inside a small in-graph ``tf.data`` pipeline (core TF kernels, no Python):

1. cheap checks on the first bytes: empty string, format sniffed from magic bytes (JPEG, PNG, GIF, BMP),
   width and height read from the header (``tf.image.extract_jpeg_shape``; PNG IHDR, GIF logical screen
   and BMP info header fields parsed from bytes) and compared with ``max_pixels`` *before* any pixels are
   decoded, so a decompression bomb never allocates its pixels;
2. the shared decode path, :func:`tfcaption.data.pipeline.decode_image` (training's
   antialiased bilinear resize, or BLIP's image processor's PIL bicubic for a model that resizes so), for
   elements that pass.

A decode that fails (a truncated or corrupt file) drops its element through ``ignore_errors``; the
elements are tagged with their batch index, so a missing index is an undecodable image. One assertion
then fails the request with ``InvalidArgumentError`` whose message names every bad index and its reason,
e.g. ``image_bytes[2]: empty string``. The error belongs to that call only: the loaded model answers
the next request normally.
"""

import tensorflow as tf

from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS, decode_image, image_hw

# Per-element status codes (kept in the graph as int32).
OK, EMPTY, UNKNOWN_FORMAT, TOO_LARGE, UNDECODABLE = 0, 1, 2, 3, 4
FORMATS = ("jpeg", "png", "gif", "bmp")

_HEADER_BYTES = 32


def _uint(head, start, size, big_endian):
    """Unsigned integer of `size` bytes at `start` of the uint8 vector `head`, as int64."""
    data = tf.cast(head[start:start + size], tf.int64)
    weights = [256 ** (size - 1 - i) if big_endian else 256 ** i for i in range(size)]
    return tf.reduce_sum(data * tf.constant(weights, tf.int64))


def _header_shape(data, head, kind):
    """(height, width) int64 from the header of format index `kind` (0 JPEG, 1 PNG, 2 GIF, 3 BMP)."""

    def jpeg():
        # Reads markers up to the frame header only; a broken header raises, which drops the element.
        shape = tf.image.extract_jpeg_shape(data, output_type=tf.int32)
        return tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64)

    def png():  # IHDR: width, height as big-endian uint32 at bytes 16 and 20.
        return _uint(head, 20, 4, True), _uint(head, 16, 4, True)

    def gif():  # Logical screen: width, height as little-endian uint16 at bytes 6 and 8.
        return _uint(head, 8, 2, False), _uint(head, 6, 2, False)

    def bmp():
        # BITMAPINFOHEADER and later (size >= 40): int32 width and height at 18 and 22, height negative
        # for top-down rows; the old 12-byte core header has uint16 fields at 18 and 20.
        info_size = _uint(head, 14, 4, False)

        def signed32(start):
            value = _uint(head, start, 4, False)
            return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

        return tf.cond(
            info_size >= 40,
            lambda: (signed32(22), signed32(18)),
            lambda: (_uint(head, 20, 2, False), _uint(head, 18, 2, False)),
        )

    return tf.switch_case(kind, [jpeg, png, gif, bmp])


def _sniff(data):
    """Format index (0 JPEG, 1 PNG, 2 GIF, 3 BMP, -1 unknown) from the magic bytes."""
    magic = [
        tf.equal(tf.strings.substr(data, 0, 3), b"\xff\xd8\xff"),
        tf.equal(tf.strings.substr(data, 0, 8), b"\x89PNG\r\n\x1a\n"),
        tf.logical_or(tf.equal(tf.strings.substr(data, 0, 6), b"GIF87a"),
                      tf.equal(tf.strings.substr(data, 0, 6), b"GIF89a")),
        tf.equal(tf.strings.substr(data, 0, 2), b"BM"),
    ]
    kind = tf.constant(-1)
    for index in reversed(range(len(magic))):
        kind = tf.where(magic[index], index, kind)
    return kind


def check_and_decode(index, data, image_size, max_pixels, resample="bilinear"):
    """One element: `(index, status, height, width, image)`; raises only where decoding itself fails."""
    length = tf.strings.length(data)
    kind = _sniff(data)
    head = tf.io.decode_raw(tf.strings.join([tf.strings.substr(data, 0, _HEADER_BYTES), b"\0" * _HEADER_BYTES]),
                            tf.uint8)[:_HEADER_BYTES]
    zero = tf.constant(0, tf.int64)
    height, width = tf.cond(kind >= 0, lambda: _header_shape(data, head, tf.maximum(kind, 0)), lambda: (zero, zero))
    status = tf.where(
        tf.equal(length, 0), EMPTY,
        tf.where(kind < 0, UNKNOWN_FORMAT, tf.where(height * width > max_pixels, TOO_LARGE, OK)))
    blank = tf.zeros(image_shape(image_size), tf.float32)
    image = tf.cond(tf.equal(status, OK), lambda: decode_image(data, image_size, resample), lambda: blank)
    return index, status, height, width, image


def _reasons(status, height, width, max_pixels):
    """The client-facing reason for every element (empty string for good ones)."""
    size = tf.strings.join([tf.strings.as_string(width), "x", tf.strings.as_string(height)])
    too_large = tf.strings.join([size, f" pixels exceeds the limit of {int(max_pixels)}"])
    fixed = tf.constant(["", "empty string", "not a JPEG, PNG, GIF or BMP image", "",
                         "not a decodable image (corrupt or truncated data)"])
    return tf.where(tf.equal(status, TOO_LARGE), too_large, tf.gather(fixed, status))


def image_shape(image_size):
    """[height, width, 3] for an int side or a (height, width) pair."""
    return [*image_hw(image_size), 3]


def decode_batch(image_bytes, image_size, max_pixels=DEFAULT_MAX_PIXELS, parallel_calls=4, resample="bilinear"):
    """Encoded images `string [B]` -> `float32 [B, H, W, 3]` pixel values in [0, 255], or `InvalidArgumentError`.

    The same decode and resize as training and inference (`decode_image`); the model's image encoder
    normalises.

    Args:
        image_bytes: 1-D `tf.string`, one encoded JPEG, PNG, GIF or BMP per element.
        image_size: the model's input size, an int side or (height, width).
        max_pixels: largest width * height accepted (read from the header, before decoding).
        parallel_calls: elements decoded concurrently.
        resample: the model's resize, "bilinear" or "bicubic" (its preprocessor's `resample`).

    Raises:
        tf.errors.InvalidArgumentError: at run time, naming each failing index,
            e.g. "image_bytes[1]: not a JPEG, PNG, GIF or BMP image".
    """
    batch = tf.shape(image_bytes, out_type=tf.int64)[0]
    elements = tf.data.Dataset.from_tensor_slices((tf.range(batch), image_bytes))
    elements = elements.map(lambda i, data: check_and_decode(i, data, image_size, max_pixels, resample),
                            num_parallel_calls=parallel_calls, deterministic=False)
    elements = elements.ignore_errors()
    # A sentinel keeps the batch non-empty when every element failed to decode.
    sentinel = (tf.constant(-1, tf.int64), tf.constant(OK), tf.constant(0, tf.int64), tf.constant(0, tf.int64),
                tf.zeros(image_shape(image_size), tf.float32))
    elements = elements.concatenate(tf.data.Dataset.from_tensors(sentinel))
    index, status, height, width, images = elements.batch(2 ** 31 - 1).get_single_element()
    keep = index >= 0
    index, status, height, width, images = [tf.boolean_mask(t, keep) for t in (index, status, height, width, images)]
    slots = index[:, None]
    # Elements dropped by a decode error keep UNDECODABLE.
    status = tf.tensor_scatter_nd_update(tf.fill([batch], UNDECODABLE), slots, status)
    height = tf.scatter_nd(slots, height, [batch])
    width = tf.scatter_nd(slots, width, [batch])
    images = tf.scatter_nd(slots, images, tf.concat([[batch], tf.constant(image_shape(image_size), tf.int64)], 0))

    bad = tf.not_equal(status, OK)
    reasons = _reasons(status, height, width, max_pixels)
    labels = tf.strings.join(["image_bytes[", tf.strings.as_string(tf.range(batch)), "]: ", reasons])
    message = tf.strings.reduce_join(tf.boolean_mask(labels, bad), separator="; ")
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])
    with tf.control_dependencies([check]):
        return tf.identity(images)
