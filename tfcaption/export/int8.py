"""What full integer (int8) LiteRT conversion needs: a representative dataset and an int8-friendly trace.

TensorFlow 2.21's LiteRT calibrator runs the float model and logs every op's value range, and two things of
the decoding function defeat it, both changed only while `int8_tracing()` is active:

- the decoding loop's captured encoder keys and values become WHILE pass-through outputs without a buffer,
  and the calibrator dies reading them (tensorflow/tensorflow#75140): `tfcaption.samplers.loop_invariants`
  carries them as loop variables instead;
- the -1e9 used for masked attention keys, banned words and dead beams (`layers.large_negative`) sets the
  quantization range of every tensor it flows into, which erases the real values: `INT8_MASK_VALUE` is
  finite and still far below any logit the models give.

In beam search the start's idle beams (score `INT8_MASK_VALUE`) and a finished beam's words other than the
fill token (its score plus `INT8_MASK_VALUE`) then rank below a live beam only while the live beam's summed
log-probability stays above that, that is while its caption is likelier than about e**-30 relative to them;
which beams have finished is still kept apart, in `finished`. The float exports, training and decoding never
enter `int8_tracing` and are unchanged.

The representative dataset is a run's validation images, or the images of a folder or glob pattern (an
imported run has no dataset), decoded and resized as the file's users are told to (`image_pixels`): the
calibrator sees what the file will be given.
"""

import contextlib
import glob
import os
import sys

import numpy as np
import tensorflow as tf

from tfcaption.export.portable import INPUT_NAME, SEED_NAME, image_pixels
from tfcaption.layers import large_negative
from tfcaption.samplers import loop_invariants

INT8_MASK_VALUE = -30.0
DEFAULT_CALIBRATION_IMAGES = 100
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")  # a folder's files read


@contextlib.contextmanager
def int8_tracing(mask_value=INT8_MASK_VALUE):
    """While active, tracing a decoding function gives one the int8 calibrator can calibrate (see the module)."""
    with large_negative.replaced(mask_value), loop_invariants.carried():
        yield


def calibration_pixels(captioner, run_config, count=DEFAULT_CALIBRATION_IMAGES, source=None):
    """uint8 [n, H, W, 3], the representative dataset: the first `count` images (or all, if fewer) of `source`
    (a folder of images or a glob pattern, by sorted name), else of the run's validation split, decoded and
    resized as `image_pixels` does; a one-line ValueError for a region-feature model, a bad count, a run with
    no dataset and no `source`, or no images."""
    encoder = captioner._require_backbone().image_encoder
    if encoder.input_key != "images":
        raise ValueError("--quantize int8 calibrates on images; this region-feature model reads detector "
                         "features, which the run does not keep for export: use dynamic_int8.")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"--calibration-images must be an integer >= 1, got {count!r}.")
    if source is not None:
        return _file_pixels(source, count, encoder.image_size, captioner.preprocessor.resample)
    if not run_config.data.spec:
        raise ValueError("--quantize int8 calibrates on the run's validation images and this run has no dataset "
                         "(an imported run): give --calibration-data with a folder of images like those the "
                         "file will caption.")
    return validation_pixels(captioner, run_config, count)


def _file_pixels(source, count, image_size, resample):
    """The first `count` decodable images of a folder (files with an image suffix) or a glob pattern; an
    undecodable one is counted and skipped, with one line on stderr."""
    from tfcaption.inference import ImageError, checked_image_bytes

    if tf.io.gfile.isdir(source):
        paths = [os.path.join(source, name) for name in tf.io.gfile.listdir(source)
                 if name.lower().endswith(IMAGE_SUFFIXES)]
    elif glob.has_magic(source):
        paths = tf.io.gfile.glob(source)
    else:
        raise ValueError(f"--calibration-data {source}: no such folder (give a folder of images or a glob "
                         "pattern).")
    paths = sorted(path for path in paths if not tf.io.gfile.isdir(path))
    pixels, skipped = [], 0
    for path in paths:
        if len(pixels) == count:
            break
        try:
            pixels.append(image_pixels(checked_image_bytes(path, path), image_size, resample))
        except ImageError:
            skipped += 1
    if skipped:
        print(f"--calibration-data {source}: skipped {skipped} undecodable file(s)", file=sys.stderr)
    if not pixels:
        raise ValueError(f"--calibration-data {source}: no decodable images.")
    return np.stack(pixels)


def validation_pixels(captioner, run_config, count=DEFAULT_CALIBRATION_IMAGES):
    """uint8 [n, H, W, 3]: the first `count` images (or all, if fewer) of the run's validation split, decoded and
    resized as `image_pixels` does; a one-line ValueError for an empty split."""
    from tfcaption.data.catalog import resolve_dataset
    from tfcaption.data.records import read_records

    encoder = captioner._require_backbone().image_encoder
    data = run_config.data
    data_dir = resolve_dataset(data.spec, data.root or None, data.options, verbose=False)
    records = read_records(data_dir, "val").take(count).as_numpy_iterator()
    pixels = [image_pixels(record["image"], encoder.image_size, captioner.preprocessor.resample) for record in records]
    if not pixels:
        raise ValueError(f"{data_dir}: the validation split has no images to calibrate --quantize int8 with.")
    return np.stack(pixels)


def representative_dataset(pixels, seeded=False):
    """The converter's `representative_dataset`: one image per call; for a sampling file a seed beside it, by
    input name (the converted file does not keep the function's input order)."""
    def dataset():
        for i, image in enumerate(pixels):
            yield {INPUT_NAME: image[None], SEED_NAME: np.array([i], np.int32)} if seeded else [image[None]]

    return dataset
