"""Captioning images from Python: `tfcaption.load(path).caption(images)`."""

import os

import numpy as np
import tensorflow as tf

from tfcaption.data.pipeline import decode_image


class ImageError(ValueError):
    """An input that is not a decodable image; the message names it."""


def read_image_bytes(image):
    """Encoded bytes for a path (str / PathLike) or bytes; arrays are PNG-encoded."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not tf.io.gfile.exists(path):
            raise ImageError(f"{path}: no such file")
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageError(f"array of shape {array.shape} is not an image (H, W[, 1|3|4])")
    if array.dtype != np.uint8:
        scale = 255.0 if array.max() <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).astype(np.uint8)
    return tf.io.encode_png(array).numpy()


def check_image(data, name="image"):
    """Raises `ImageError` naming `name` when `data` does not decode as an image."""
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        reason = error.message.splitlines()[0] if error.message else "undecodable"
        raise ImageError(f"{name}: not a decodable image ({reason})") from None


class _SavedModelBackend:
    def __init__(self, path):
        self.loaded = tf.saved_model.load(path)
        self.signature = self.loaded.signatures["serving_default"]

    def __call__(self, image_bytes):
        outputs = self.signature(image_bytes=tf.constant(image_bytes, tf.string))
        captions = [c.decode("utf-8") for c in outputs["caption"].numpy()]
        return captions, outputs["score"].numpy()


class _RunBackend:
    def __init__(self, path, beam_size=None):
        from tfcaption.decoding.generate import compiled_generator
        from tfcaption.training.run_directory import load_run

        self.model, self.vocab, run_config = load_run(path)
        beam_size = beam_size or run_config.train.eval_beam_size
        self.generator = compiled_generator(
            self.model, beam_size, run_config.train.max_caption_words + 1, jit_compile=True
        )
        self.image_size = self.model.config.image_size

    def __call__(self, image_bytes):
        images = tf.stack([decode_image(tf.constant(b), self.image_size) for b in image_bytes])
        outputs = self.generator(images)
        captions = [self.vocab.decode(t) for t in outputs["tokens"].numpy().tolist()]
        return captions, outputs["scores"].numpy()


class CaptionPredictor:
    """Captions images with a SavedModel export or a training run directory.

    Args:
        path: a SavedModel directory (`savedmodel/<name>/<version>`, or
            `savedmodel/<name>` for its newest version) or a run directory.
        beam_size: for run directories (a SavedModel's is fixed at export).
    """

    def __init__(self, path, beam_size=None):
        path = resolve_model_path(path)
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            self.backend = _SavedModelBackend(path)
        else:
            self.backend = _RunBackend(path, beam_size)
        self.path = path

    def caption(self, images):
        """Captions a list of images (paths, encoded bytes or arrays).

        Returns a list of `{"caption": str, "score": float}`. Raises
        `ImageError` naming the first input that is not a decodable image.
        """
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        data = []
        for i, image in enumerate(images):
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"
            payload = read_image_bytes(image)
            check_image(payload, name)
            data.append(payload)
        captions, scores = self.backend(data)
        results = [{"caption": c, "score": float(s)} for c, s in zip(captions, scores)]
        return results[0] if single else results


def resolve_model_path(path):
    """A model directory; for `savedmodel/<name>` picks the newest integer version inside."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Model not found: {path}")
    if tf.io.gfile.isdir(path) and not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        versions = [n.strip("/") for n in tf.io.gfile.listdir(path) if n.strip("/").isdigit()]
        if versions and not tf.io.gfile.exists(os.path.join(path, "config.json")):
            return os.path.join(path, max(versions, key=int))
    return path


def load(path, beam_size=None):
    """Loads a captioner for notebooks and scripts: `tfcaption.load(path).caption(images)`."""
    return CaptionPredictor(path, beam_size)
