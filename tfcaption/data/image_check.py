"""Checking one image before it goes into a prepared dataset: keep it, convert it, or say why not.

The arbiter is TensorFlow's own decoder, the one training and serving use (``tf.io.decode_image`` with
3 channels): an image is written unchanged when that decoder reads it, since it already turns grayscale,
palette, RGBA (alpha dropped), CMYK JPEG and 16-bit PNG into the same 8-bit RGB pixels everywhere.
Pillow is used only to read headers (format, mode and size, without decoding), to tell a truncated file
from garbage, and to convert the formats TensorFlow cannot decode (WebP, TIFF, ...) into JPEG.

Everything that cannot be used raises :class:`ImageSkipped` with a short machine-readable reason
(``missing_file``, ``empty_file``, ``not_an_image``, ``truncated_image``, ``undecodable_image``,
``too_large``, ``unreadable_file``) and a detail for the log.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from typing import Optional

import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS

__all__ = ["CheckedImage", "ImageSkipped", "check_image", "read_image_file"]

# Formats tf.io.decode_image reads.
TF_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP"})
JPEG_QUALITY = 95
# Larger files are not read: 40 megapixels of 16-bit RGBA PNG stays below this.
MAX_FILE_BYTES = 512 * 1024 * 1024
# Leading bytes of JPEG, PNG, GIF, BMP, WebP (RIFF) and TIFF files.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*")


class ImageSkipped(Exception):
    """An image that cannot be used; ``reason`` is the manifest's key, ``detail`` says what was found."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass
class CheckedImage:
    """Image bytes ready to store, what the source file was (``"PNG/RGBA"``) and any conversion made."""

    data: bytes
    kind: str
    conversion: Optional[str] = None


def read_image_file(path: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file (local path or ``tf.io.gfile`` URL), or :class:`ImageSkipped`.

    At most ``max_bytes`` are read, so a huge file (or a link to a device that never ends) is skipped as
    ``too_large`` instead of filling the memory.
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise ImageSkipped("too_large", f"{path} is larger than {max_bytes} bytes")
        return data
    except tf.errors.NotFoundError:
        raise ImageSkipped("missing_file", f"{path} does not exist") from None
    except (tf.errors.OpError, OSError) as error:
        raise ImageSkipped("unreadable_file", f"{path}: {_first_line(error)}") from None


def check_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: Optional[int] = None) -> CheckedImage:
    """Validate encoded image bytes the way the training pipeline will decode them.

    Args:
        data: the encoded file.
        max_pixels: larger images (by their header, before decoding) are skipped as ``too_large``.
        max_side: when set, images whose longer side exceeds it are downscaled (antialiased, aspect
            kept) and stored as JPEG: smaller shards and much cheaper decoding when training at 224 px.

    Returns:
        :class:`CheckedImage`; ``conversion`` is None when the bytes are kept as they are.

    Raises:
        ImageSkipped: the image cannot be used (see the module docstring for the reasons).
    """
    if not data:
        raise ImageSkipped("empty_file", "the file is empty")
    image_format, mode, (width, height) = _header(data, max_pixels)
    kind = f"{image_format}/{mode}"
    if width * height > max_pixels:
        raise ImageSkipped("too_large", f"{width}x{height} pixels is over the limit of {max_pixels}")
    conversion = None
    if image_format in TF_FORMATS:
        try:
            pixels = _tf_decode(data)
        except tf.errors.InvalidArgumentError as error:
            pixels = _pil_decode(data, fallback_detail=_first_line(error))  # raises unless only TF fails
            data, conversion = _encode_jpeg(pixels), f"{image_format.lower()}_reencoded"
    else:
        pixels = _pil_decode(data)
        data, conversion = _encode_jpeg(pixels), f"{image_format.lower()}_to_jpeg"
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = [max(1, round(height * scale)), max(1, round(width * scale))]
        resized = tf.image.resize(tf.cast(pixels, tf.float32), size, method="bilinear", antialias=True)
        data = _encode_jpeg(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))
        conversion = "resized" if conversion is None else f"{conversion}+resized"
    return CheckedImage(data, kind, conversion)


def _header(data: bytes, max_pixels: int):
    """Format, mode and size from the header alone (Pillow opens lazily)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.format or "UNKNOWN", image.mode, image.size
    except Image.DecompressionBombError as error:
        raise ImageSkipped("too_large", _first_line(error)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        if data.startswith(_MAGIC):  # an image file whose header is cut off or damaged
            raise ImageSkipped("undecodable_image", f"unreadable image header: {_first_line(error)}") from None
        raise ImageSkipped("not_an_image", f"not a known image format (starts with {data[:8]!r})") from None


def _tf_decode(data: bytes) -> tf.Tensor:
    """uint8 [H, W, 3] by the training pipeline's decoder (16-bit input is scaled, not clipped)."""
    pixels = tf.io.decode_image(data, channels=3, dtype=tf.float32, expand_animations=False)
    if int(tf.size(pixels)) == 0:
        raise tf.errors.InvalidArgumentError(None, None, "the image has no pixels")
    return tf.image.convert_image_dtype(pixels, tf.uint8, saturate=True)


def _pil_decode(data: bytes, fallback_detail: Optional[str] = None) -> np.ndarray:
    """uint8 [H, W, 3] by Pillow, for formats (or files) TensorFlow cannot read."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale, don't clip at 255
                grey = np.asarray(image, dtype=np.float64)
                top = 65535.0 if image.mode.startswith("I;16") else max(float(grey.max()), 1.0)
                array = np.round(grey / top * 255.0).clip(0, 255).astype(np.uint8)
                return np.repeat(array[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as error:
        message = _first_line(error)
        if "truncat" in message.lower():
            raise ImageSkipped("truncated_image", message) from None
        raise ImageSkipped("undecodable_image", fallback_detail or message) from None


def _encode_jpeg(pixels) -> bytes:
    return tf.io.encode_jpeg(tf.convert_to_tensor(pixels, tf.uint8), quality=JPEG_QUALITY).numpy()


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    # TF op errors start with "{{function_node ...}} "; the reason follows.
    text = text.split("}} ")[-1]
    return text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
