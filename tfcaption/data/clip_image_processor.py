"""CLIP's image processor (transformers' `CLIPImageProcessor`, PIL backend) in TensorFlow ops."""

import tensorflow as tf

from tfcaption.data.hf_image_processing import (
    PIL_BICUBIC, check_resample, read_image_processor_config, rescale_and_normalize)
from tfcaption.data.pil_resize import pil_bicubic_resize

__all__ = ["ClipImageProcessor"]


class ClipImageProcessor:
    """uint8 RGB image `(H, W, 3)` to CLIP's float32 input `(crop_height, crop_width, 3)`.

    The shorter side is resized to `shortest_edge` and the longer to `int(shortest_edge * long / short)`
    with PIL's bicubic on uint8 (`pil_bicubic_resize`), then a centre crop at offset
    `((H' - crop_height) // 2, (W' - crop_width) // 2)`, a rescale by `rescale_factor` and
    `(x - image_mean) / image_std`: transformers' PIL backend step by step. TensorFlow ops only, so it
    runs in `tf.data` and in a serving graph. `from_config` reads the checkpoint's own settings.

    Args:
        shortest_edge: int. Target of the shorter side (`size.shortest_edge`).
        crop_height: int. Centre crop height (`crop_size.height`), at most `shortest_edge`.
        crop_width: int. Centre crop width (`crop_size.width`), at most `shortest_edge`.
        image_mean: three floats (`image_mean`).
        image_std: three floats (`image_std`).
        rescale_factor: float (`rescale_factor`).
        do_resize, do_center_crop, do_rescale, do_normalize: bools, the config's switches.

    Example:
    >>> processor = ClipImageProcessor(8, 8, 8, [0.5] * 3, [0.5] * 3)
    >>> processor(tf.zeros((12, 10, 3), tf.uint8)).shape
    TensorShape([8, 8, 3])
    """

    def __init__(self, shortest_edge, crop_height, crop_width, image_mean, image_std, rescale_factor=1 / 255,
                 do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True):
        self.shortest_edge = int(shortest_edge)
        self.crop_height = int(crop_height)
        self.crop_width = int(crop_width)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.rescale_factor = float(rescale_factor)
        self.do_resize, self.do_center_crop = bool(do_resize), bool(do_center_crop)
        self.do_rescale, self.do_normalize = bool(do_rescale), bool(do_normalize)
        if do_resize and do_center_crop and max(self.crop_height, self.crop_width) > self.shortest_edge:
            raise ValueError(f"crop_size {self.crop_height}x{self.crop_width} is larger than shortest_edge "
                             f"{self.shortest_edge}: the crop would need padding, which is not supported.")

    @classmethod
    def from_config(cls, source):
        """From a checkpoint directory, its preprocessor_config.json / processor_config.json, or their dict."""
        config = read_image_processor_config(source)
        check_resample(config.get("resample", PIL_BICUBIC), "image processor config")
        size, crop = config.get("size", {}), config.get("crop_size", {})
        if "shortest_edge" not in size:
            raise ValueError(f"image processor config: size {size!r} has no shortest_edge, as CLIP's has.")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        return cls(size["shortest_edge"], crop.get("height", size["shortest_edge"]),
                   crop.get("width", size["shortest_edge"]), config["image_mean"], config["image_std"],
                   config.get("rescale_factor", 1 / 255), config.get("do_resize", True),
                   config.get("do_center_crop", True), config.get("do_rescale", True),
                   config.get("do_normalize", True))

    def resized_size(self, height, width):
        """(height, width) after the shortest-edge resize, as transformers computes it (float64 division)."""
        short, long = tf.minimum(height, width), tf.maximum(height, width)
        new_long = tf.cast(tf.math.floor(tf.cast(self.shortest_edge * long, tf.float64) / tf.cast(short, tf.float64)),
                           tf.int32)
        portrait = width <= height
        return tf.where(portrait, new_long, self.shortest_edge), tf.where(portrait, self.shortest_edge, new_long)

    def __call__(self, image):
        image = tf.convert_to_tensor(image)
        if self.do_resize:
            shape = tf.shape(image)
            image = pil_bicubic_resize(image, *self.resized_size(shape[0], shape[1]))  # (h', w', 3)
        if self.do_center_crop:
            shape = tf.shape(image)
            top, left = (shape[0] - self.crop_height) // 2, (shape[1] - self.crop_width) // 2
            image = image[top:top + self.crop_height, left:left + self.crop_width]  # (crop_h, crop_w, 3)
        return rescale_and_normalize(image, self.rescale_factor, self.image_mean, self.image_std,
                                     self.do_rescale, self.do_normalize)

    def get_config(self):
        return {
            "shortest_edge": self.shortest_edge, "crop_height": self.crop_height, "crop_width": self.crop_width,
            "image_mean": self.image_mean, "image_std": self.image_std, "rescale_factor": self.rescale_factor,
            "do_resize": self.do_resize, "do_center_crop": self.do_center_crop, "do_rescale": self.do_rescale,
            "do_normalize": self.do_normalize,
        }
