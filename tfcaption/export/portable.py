"""What the LiteRT and ONNX exports share: one pixels-to-tokens function with the decoding inside, and the
files a runtime reads beside the model file.

The function takes `pixels`, uint8 [1, H, W, 3] RGB at the model's input size (resizing is the app's, as
LiteRT's task libraries leave it), and returns `tokens` int32 [1, k, T] (every beam, best first; k = 1 for
greedy search) and `scores` float32 [1, k] (sums of log-probabilities). The image encoder's own
normalisation, the encoder, and the decoding loop (greedy or beam search, fixed at export) are inside. A
random sampler (LiteRT only) takes a second input, `seed` int32 [1], and returns one caption (k = 1).
Detokenising stays outside: strings are not part of LiteRT's built-in ops.

A region-feature model (M2 on detector features) takes `features` instead, float32 [1, R, D]: R regions of D
values, R fixed at export (`regions`; a run's default is its dataset's `max_regions`, else the M2 release's
50). An image with fewer regions is zero-padded to R: rows of all zeros are the model's padding, masked by
its region encoder as in training and in the SavedModel (a `released`-mask model, m2_reference, attends to
them as the authors' code does, which is why that code always pads to 50). No count or mask input: the zero
rows are the mask, so the file needs nothing the SavedModel does not.

Beside the model file: `vocab.txt` (the tokenizer's tokens, id = line number; a BERT tokenizer's settings in
`tokenizer_config.json`) and `metadata.json` (`portable_metadata`). `image_pixels` turns encoded image
bytes into the uint8 input with the SavedModel's own decode and resize ops, run eagerly.
"""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tfcaption import samplers
from tfcaption.data.pipeline import decode_image, image_hw
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.data.vocabulary import save_vocabulary
from tfcaption.decoding.captioning import checked_max_steps, generate

DEFAULT_OUTPUT_ROOT = "exports"
METADATA_FILE = "metadata.json"
VOCAB_FILE = "vocab.txt"
INPUT_NAME = "pixels"
FEATURES_NAME = "features"
SEED_NAME = "seed"
OUTPUT_NAMES = ("tokens", "scores")
# Bumped when the layout or the metadata's meaning changes; readers refuse newer files.
FORMAT_VERSION = 1


def default_output(name, fmt):
    """`exports/<name>/<fmt>/` (name: the run's export name): beside the TF Serving tree, never inside it."""
    return os.path.join(DEFAULT_OUTPUT_ROOT, name, fmt)


def check_output_directory(output):
    """A ValueError when `output` lies inside a TF Serving model directory (a SavedModel, or a folder of
    numeric versions holding one), where TF Serving would meet files it does not serve."""
    path = os.path.abspath(output)
    while True:
        if os.path.isfile(os.path.join(path, "saved_model.pb")) or any(
                name.isdigit() and os.path.isfile(os.path.join(path, name, "saved_model.pb"))
                for name in (os.listdir(path) if os.path.isdir(path) else [])):
            raise ValueError(f"--output {output}: inside the TF Serving model directory {path}; write LiteRT and "
                             "ONNX files elsewhere (default exports/<name>/<format>/).")
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent


def _tokenizer_kind(captioner):
    return captioner.preprocessor.tokenizer


def run_input_regions(captioner, run_config, regions=None):
    """`regions` for a run's export: the caller's, else for a region-feature model the regions per image its
    dataset kept (`max_regions` in the data spec or options, else `MAX_REGIONS`); None for a pixel model."""
    if regions is not None or captioner._require_backbone().input_key == "images":
        return regions
    from tfcaption.data.region_features import MAX_REGIONS
    from tfcaption.data.sources import DatasetSpec

    options = {**DatasetSpec.parse(run_config.data.spec).options, **(run_config.data.options or {})}
    return int(options.get("max_regions", MAX_REGIONS))


def input_spec(captioner, regions=None):
    """The file's image input: uint8 `pixels` [1, H, W, 3], or float32 `features` [1, regions, D] for a
    region-feature model (`regions` None: `MAX_REGIONS`); a ValueError for `regions` on a pixel model."""
    encoder = captioner._require_backbone().image_encoder
    if encoder.input_key == "images":
        if regions is not None:
            raise ValueError("--regions applies to region-feature models; this model reads pixels.")
        height, width = image_hw(encoder.image_size)
        return tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)
    if regions is None:
        from tfcaption.data.region_features import MAX_REGIONS

        regions = MAX_REGIONS
    if isinstance(regions, bool) or not isinstance(regions, int) or regions < 1:
        raise ValueError(f"--regions must be an integer >= 1, got {regions!r}.")
    return tf.TensorSpec([1, regions, encoder.feature_dim], tf.float32, name=FEATURES_NAME)


def random_sampler(sampler):
    """`sampler` (a `Sampler`, name or config) when it draws at random, None for None, else a ValueError."""
    if sampler is None:
        return None
    sampler = samplers.get(sampler)
    if not sampler.random:
        raise ValueError(f"{type(sampler).__name__} is not a random sampler: greedy and beam search are the beam "
                         "size (1: greedy).")
    return sampler


def pixels_to_tokens(captioner, beam_size=3, max_steps=None, sampler=None, regions=None):
    """The exported `tf.function`: uint8 `pixels` [1, H, W, 3] (or float32 `features` [1, R, D] for a
    region-feature model) -> {"tokens", "scores"} (see the module).

    Args:
        captioner: a `tfcaption.ImageCaptioner`.
        beam_size: 1 for greedy search, k > 1 for beam search with k beams (the run's own search:
            `ImageCaptioner.default_sampler`, transformers' for an imported BLIP run).
        max_steps: tokens generated at most, <eos> included (None: the model's longest).
        sampler: a random sampler (`RandomSampler`, `TopKSampler`, `TopPSampler`, or a name) instead of the
            search: the function then also takes `seed`, int32 [1] (the same seed, the same caption), and
            k = 1.
        regions: a region-feature model's R, fixed in the file (None: `MAX_REGIONS`); refused for pixels.
    """
    model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
    spec = input_spec(captioner, regions)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam size must be an integer >= 1, got {beam_size!r}.")
    sampler = random_sampler(sampler)
    max_steps = checked_max_steps(model, max_steps)

    def outputs(out):
        beams = out.get("beam_tokens", out["tokens"][:, None])
        scores = out.get("beam_scores", out["scores"][:, None])
        return {"tokens": tf.cast(beams, tf.int32), "scores": tf.cast(scores, tf.float32)}

    if sampler is not None:
        def sampled(inputs, seed):
            # int32 seeds: the samplers' hash then needs no 64-bit bitwise op (LiteRT has none).
            return outputs(generate(model, tf.cast(inputs, tf.float32), sampler, max_steps, seeds=seed,
                                    special_ids=vocab))

        return tf.function(sampled, input_signature=[spec, tf.TensorSpec([1], tf.int32, name=SEED_NAME)])

    def searched(inputs):
        return outputs(generate(model, tf.cast(inputs, tf.float32), search, max_steps, special_ids=vocab))

    search = captioner.default_sampler(beam_size)

    return tf.function(searched, input_signature=[spec])


def _input_metadata(captioner, regions):
    """metadata.json's `input` entry (and `image_size` for pixels)."""
    spec = input_spec(captioner, regions)
    if spec.name == FEATURES_NAME:
        return {"input": {"name": FEATURES_NAME, "dtype": "float32", "shape": spec.shape.as_list(),
                          "features": "one image's region features (e.g. the M2 release's detector features), "
                                      "rows of all zeros after the real regions up to the fixed count; rows of "
                                      "all zeros are padding (masked unless the model's mask is 'released')",
                          "regions": spec.shape[1], "feature_dim": spec.shape[2]}}
    height, width = spec.shape[1], spec.shape[2]
    resample = captioner.preprocessor.resample
    resize = ("PIL's bicubic on uint8 (the checkpoint's image processor)" if resample == "bicubic" else
              "bilinear with antialiasing (tf.image.resize)")
    return {"input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [1, height, width, 3],
                      # The model normalises inside (its image encoder's own scaling), so apps feed raw RGB values.
                      "pixels": "RGB values 0..255; the image encoder normalises them inside the model",
                      "resize": f"{resize} to the input size, as the SavedModel and training do; no resize "
                                "when the image has that size"},
            "image_size": [height, width], "resample": resample}


def portable_metadata(captioner, fmt, beam_size, max_steps, quantize=None, sampler=None, regions=None):
    """The `metadata.json` of a LiteRT or ONNX export: what an app needs to feed the model and read it."""
    model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
    max_steps = checked_max_steps(model, max_steps)
    sampler = random_sampler(sampler)
    if sampler is not None:
        beam_size = 1
    metadata = {
        "format": fmt, "format_version": FORMAT_VERSION, "quantize": quantize, **_input_metadata(captioner, regions),
        "outputs": {"tokens": {"dtype": "int32", "shape": [1, beam_size, max_steps]},
                    "scores": {"dtype": "float32", "shape": [1, beam_size]}},
        "sampler": "greedy" if beam_size == 1 else samplers.name_of(captioner.default_sampler(beam_size)),
        "beam_size": beam_size, "max_steps": max_steps,
        "special_ids": dataclasses.asdict(SpecialIds.of(vocab)),
        "tokenizer": _tokenizer_kind(captioner), "vocab": VOCAB_FILE,
        "image_encoder": model.image_encoder.serving_info(),
    }
    if sampler is not None:
        metadata.update(sampler=samplers.name_of(sampler), sampler_config=sampler.get_config(),
                        seed={"name": SEED_NAME, "dtype": "int32", "shape": [1]})
    return metadata


def write_sidecar_files(captioner, output, metadata):
    """Writes `vocab.txt` (and a BERT tokenizer's settings) and `metadata.json` into `output`."""
    save_vocabulary(captioner.preprocessor.vocabulary, os.path.join(output, VOCAB_FILE))
    with open(os.path.join(output, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)


def prepared_output(output, model_file):
    """Creates `output` (refusing a TF Serving directory and an existing model file); returns the model path."""
    check_output_directory(output)
    path = os.path.join(output, model_file)
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; refusing to overwrite it (choose another --output).")
    os.makedirs(output, exist_ok=True)
    return path


def read_metadata(model_path):
    """The `metadata.json` beside a LiteRT or ONNX model file, or a FileNotFoundError / ValueError naming it."""
    path = os.path.join(os.path.dirname(os.path.abspath(model_path)), METADATA_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_path}: no {METADATA_FILE} beside it (tfcaption-export writes it with "
                                "the model file).")
    with open(path) as f:
        metadata = json.load(f)
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {metadata['format_version']} is newer than this tfcaption "
                         f"reads ({FORMAT_VERSION}); upgrade tfcaption.")
    return metadata


def image_pixels(image_bytes, image_size, resample="bilinear"):
    """Encoded image bytes -> uint8 [H, W, 3], the SavedModel's decode and resize (`decode_image` with the
    run's `resample`) run eagerly, rounded to the nearest pixel value."""
    pixels = decode_image(tf.constant(image_bytes), image_size, resample).numpy()
    return np.round(pixels).astype(np.uint8)
