"""PIL's bicubic resize of uint8 images (`Image.resize(..., Image.BICUBIC)`), in TensorFlow ops.

Hugging Face's image processors resize with PIL on uint8 pixels, and a checkpoint's numbers depend on
it. `tf.image.resize` differs from PIL in three ways that move pixels by a few levels: PIL widens the
kernel by the downscale factor only where it shrinks, it resizes horizontally first and rounds that pass
to uint8 before the vertical one, and it sums with 22-bit fixed-point coefficients, rounding half up.
Here each pass is a dense (out, in) matrix of PIL's own coefficients and rounding, run in Pillow's order,
so pixels come out as PIL's.
"""

import tensorflow as tf

__all__ = ["bicubic_uint8_resize", "pil_bicubic_resize"]

_PRECISION_BITS = 22  # PIL's fixed-point coefficient precision for 8-bit images (32 - 8 - 2)
_SUPPORT = 2.0  # the bicubic kernel's half width


def _bicubic(x):
    x = tf.abs(x)  # PIL's Keys kernel with a = -0.5
    a = -0.5
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    outer = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return tf.where(x < 1.0, inner, tf.where(x < 2.0, outer, tf.zeros_like(x)))


def _coefficients(in_size, out_size):
    """PIL's integer resampling weights for one axis, as a float64 (out_size, in_size) matrix."""
    in_f, out_f = tf.cast(in_size, tf.float64), tf.cast(out_size, tf.float64)
    scale = in_f / out_f
    filter_scale = tf.maximum(scale, 1.0)
    support = _SUPPORT * filter_scale
    center = (tf.range(out_f, dtype=tf.float64) + 0.5) * scale  # (out,)
    # C's (int) truncates towards zero; the clamps make that floor where it matters
    low = tf.maximum(tf.math.floor(center - support + 0.5), 0.0)[:, None]
    high = tf.minimum(tf.math.floor(center + support + 0.5), in_f)[:, None]
    j = tf.range(in_f, dtype=tf.float64)[None, :]  # (1, in)
    inside = (j >= low) & (j < high)  # (out, in)
    weights = tf.where(inside, _bicubic((j - center[:, None] + 0.5) / filter_scale), 0.0)
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    weights = tf.where(total != 0.0, weights / tf.where(total != 0.0, total, 1.0), weights)
    fixed = weights * float(1 << _PRECISION_BITS)
    return tf.where(fixed < 0.0, tf.math.ceil(fixed - 0.5), tf.math.floor(fixed + 0.5))  # (int)(w +- 0.5)


def _pass(pixels, coefficients, equation):
    """One axis: sums in float64 (exact for these integers), then PIL's round-half-up shift and clip."""
    total = tf.einsum(equation, coefficients, pixels)
    shifted = tf.math.floor((total + float(1 << (_PRECISION_BITS - 1))) / float(1 << _PRECISION_BITS))
    return tf.clip_by_value(shifted, 0.0, 255.0)


def pil_bicubic_resize(image, height, width):
    """Resize a uint8 `(H, W, C)` image to `(height, width)` as PIL's bicubic does; returns uint8.

    Works on dynamic sizes (inside `tf.data`); the matrices are `(out, in)` per axis, so the cost is
    `O(H * W * width + height * H * width)` per channel: fine for photos resized to a model's input.

    Example:
    >>> image = tf.cast(tf.reshape(tf.range(48) * 5, (4, 4, 3)), tf.uint8)
    >>> pil_bicubic_resize(image, 2, 6).shape
    TensorShape([2, 6, 3])
    """
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"pil_bicubic_resize takes uint8 pixels, got {image.dtype.name}.")
    shape = tf.shape(image)
    x = tf.cast(image, tf.float64)  # (h, w, c)

    def horizontal(x):
        return _pass(x, _coefficients(tf.shape(x)[1], width), "ow,hwc->hoc")  # (h, width, c)

    def vertical(x):
        return _pass(x, _coefficients(tf.shape(x)[0], height), "oh,hwc->owc")  # (height, w, c)

    # Pillow rounds the first pass to uint8, so the order shows: it runs the vertical pass first where the
    # height loses more than twice as many pixels as the width does
    shrink_rows, shrink_cols = shape[0] - height, shape[1] - width
    vertical_first = (shrink_rows > 0) & (shrink_rows > 2 * shrink_cols)
    x = tf.cond(vertical_first, lambda: horizontal(vertical(x)), lambda: vertical(horizontal(x)))
    return tf.cast(x, tf.uint8)


def bicubic_uint8_resize(image, size):
    """BLIP's image processor's resize (PIL bicubic on uint8): float32 [0, 1] pixels of uint8 images
    (H, W, 3) or (B, H, W, 3) -> float32 [0, 255] uint8 levels at `size` (height, width), through
    `pil_bicubic_resize` (PIL's coefficients, order and rounding)."""
    height, width = size
    levels = tf.cast(tf.round(image * 255.0), tf.uint8)

    def resize(one):
        return tf.cast(pil_bicubic_resize(one, height, width), tf.float32)

    if levels.shape.rank == 4:
        return tf.map_fn(resize, levels, fn_output_signature=tf.float32)
    return resize(levels)
