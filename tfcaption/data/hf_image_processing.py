"""What Hugging Face's CLIP and BLIP image processors share: their config file and the rescale / normalise
step, in TensorFlow ops (`ClipImageProcessor`, `BlipImageProcessor`).

transformers computes in numpy: uint8 pixels times `rescale_factor` in float64, cast to float32, then
`(x - mean) / std` in float32. Doing the same here gives the same float32 values bit for bit.
"""

import json
import os

import tensorflow as tf

__all__ = ["PIL_BICUBIC", "read_image_processor_config", "rescale_and_normalize", "check_resample"]

PIL_BICUBIC = 3  # `resample` in the config files: PIL's Image.BICUBIC


def read_image_processor_config(source):
    """The image processor's settings as a dict, from a dict or a checkpoint directory / file.

    A directory holds `preprocessor_config.json` (the published layout) or transformers v5's
    `processor_config.json`, which nests them under `image_processor`; either file may be given itself.
    """
    if isinstance(source, dict):
        config = source
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            names = ("preprocessor_config.json", "processor_config.json")
            found = [os.path.join(path, name) for name in names if os.path.isfile(os.path.join(path, name))]
            if not found:
                raise FileNotFoundError(f"{path}: no image processor config: put preprocessor_config.json "
                                        "(or transformers v5's processor_config.json) there.")
            path = found[0]
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    return config.get("image_processor", config)


def check_resample(resample, what):
    if resample != PIL_BICUBIC:
        raise ValueError(f"{what}: resample {resample!r} is not supported; only {PIL_BICUBIC} (bicubic) is.")


def rescale_and_normalize(image, rescale_factor, image_mean, image_std, do_rescale=True, do_normalize=True):
    """uint8 (or float) pixels `(..., C)` to float32 as transformers' numpy `rescale` then `normalize`."""
    x = tf.cast(image, tf.float64)
    if do_rescale:
        x = x * rescale_factor  # in float64, as numpy upcasts before the scale
    x = tf.cast(x, tf.float32)
    if do_normalize:
        x = (x - tf.constant(image_mean, tf.float32)) / tf.constant(image_std, tf.float32)
    return x
