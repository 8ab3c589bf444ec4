"""BLIP's image processor (transformers' `BlipImageProcessor`, PIL backend) in TensorFlow ops."""

import tensorflow as tf

from tfcaption.data.hf_image_processing import (
    PIL_BICUBIC, check_resample, read_image_processor_config, rescale_and_normalize)
from tfcaption.data.pil_resize import pil_bicubic_resize

__all__ = ["BlipImageProcessor"]


class BlipImageProcessor:
    """uint8 RGB image `(H, W, 3)` to BLIP's float32 input `(height, width, 3)`.

    A resize to exactly `(height, width)` (aspect not kept) with PIL's bicubic on uint8
    (`pil_bicubic_resize`), a rescale by `rescale_factor`, then `(x - image_mean) / image_std`:
    transformers' PIL backend step by step, in TensorFlow ops (`tf.data`, serving graphs).

    Args:
        height: int (`size.height`).
        width: int (`size.width`).
        image_mean: three floats (`image_mean`).
        image_std: three floats (`image_std`).
        rescale_factor: float (`rescale_factor`).
        do_resize, do_rescale, do_normalize: bools, the config's switches.

    Example:
    >>> processor = BlipImageProcessor(8, 8, [0.5] * 3, [0.5] * 3)
    >>> processor(tf.zeros((12, 10, 3), tf.uint8)).shape
    TensorShape([8, 8, 3])
    """

    def __init__(self, height, width, image_mean, image_std, rescale_factor=1 / 255, do_resize=True,
                 do_rescale=True, do_normalize=True):
        self.height, self.width = int(height), int(width)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.rescale_factor = float(rescale_factor)
        self.do_resize, self.do_rescale, self.do_normalize = bool(do_resize), bool(do_rescale), bool(do_normalize)

    @classmethod
    def from_config(cls, source):
        """From a checkpoint directory, its preprocessor_config.json / processor_config.json, or their dict."""
        config = read_image_processor_config(source)
        check_resample(config.get("resample", PIL_BICUBIC), "image processor config")
        size = config.get("size", {})
        if not {"height", "width"} <= set(size):
            raise ValueError(f"image processor config: size {size!r} has no height and width, as BLIP's has.")
        return cls(size["height"], size["width"], config["image_mean"], config["image_std"],
                   config.get("rescale_factor", 1 / 255), config.get("do_resize", True),
                   config.get("do_rescale", True), config.get("do_normalize", True))

    def __call__(self, image):
        image = tf.convert_to_tensor(image)
        if self.do_resize:
            image = pil_bicubic_resize(image, self.height, self.width)  # (height, width, 3)
        return rescale_and_normalize(image, self.rescale_factor, self.image_mean, self.image_std,
                                     self.do_rescale, self.do_normalize)

    def get_config(self):
        return {
            "height": self.height, "width": self.width, "image_mean": self.image_mean, "image_std": self.image_std,
            "rescale_factor": self.rescale_factor, "do_resize": self.do_resize, "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
        }
