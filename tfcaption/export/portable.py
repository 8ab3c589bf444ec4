"""What the LiteRT and ONNX exports share: one pixels-to-tokens function with the decoding inside, and the
files a runtime reads beside the model file.

The function takes `pixels`, uint8 [1, H, W, 3] RGB at the model's input size (resizing is the app's, as
LiteRT's task libraries leave it), and returns `tokens` int32 [1, k, T] (every beam, best first; k = 1 for
greedy search) and `scores` float32 [1, k] (sums of log-probabilities). The image encoder's own
normalisation, the encoder, and the decoding loop (greedy or beam search, fixed at export) are inside. A
random sampler (LiteRT only) takes a second input, `seed` int32 [1], and returns one caption (k = 1).
Detokenising stays outside: strings are not part of LiteRT's built-in ops.

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


def random_sampler(sampler):
    """`sampler` (a `Sampler`, name or config) when it draws at random, None for None, else a ValueError."""
    if sampler is None:
        return None
    sampler = samplers.get(sampler)
    if not sampler.random:
        raise ValueError(f"{type(sampler).__name__} is not a random sampler: greedy and beam search are the beam "
                         "size (1: greedy).")
    return sampler


def pixels_to_tokens(captioner, beam_size=3, max_steps=None, sampler=None):
    """The exported `tf.function`: uint8 `pixels` [1, H, W, 3] -> {"tokens", "scores"} (see the module).

    Args:
        captioner: a `tfcaption.ImageCaptioner` with a pixel image encoder.
        beam_size: 1 for greedy search, k > 1 for beam search with k beams.
        max_steps: tokens generated at most, <eos> included (None: the model's longest).
        sampler: a random sampler (`RandomSampler`, `TopKSampler`, `TopPSampler`, or a name) instead of the
            search: the function then also takes `seed`, int32 [1] (the same seed, the same caption), and
            k = 1.
    """
    model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
    if model.input_key != "images":
        raise ValueError("LiteRT and ONNX exports take pixels; this model reads precomputed region features, "
                         "which they do not support yet.")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam size must be an integer >= 1, got {beam_size!r}.")
    sampler = random_sampler(sampler)
    max_steps = checked_max_steps(model, max_steps)
    height, width = image_hw(model.image_encoder.image_size)
    spec = tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)

    def outputs(out):
        beams = out.get("beam_tokens", out["tokens"][:, None])
        scores = out.get("beam_scores", out["scores"][:, None])
        return {"tokens": tf.cast(beams, tf.int32), "scores": tf.cast(scores, tf.float32)}

    if sampler is not None:
        def sampled(pixels, seed):
            # int32 seeds: the samplers' hash then needs no 64-bit bitwise op (LiteRT has none).
            return outputs(generate(model, tf.cast(pixels, tf.float32), sampler, max_steps, seeds=seed,
                                    special_ids=vocab))

        return tf.function(sampled, input_signature=[spec, tf.TensorSpec([1], tf.int32, name=SEED_NAME)])

    def searched(pixels):
        return outputs(generate(model, tf.cast(pixels, tf.float32), beam_size, max_steps, special_ids=vocab))

    return tf.function(searched, input_signature=[spec])


def portable_metadata(captioner, fmt, beam_size, max_steps, quantize=None, sampler=None):
    """The `metadata.json` of a LiteRT or ONNX export: what an app needs to feed the model and read it."""
    model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
    height, width = image_hw(model.image_encoder.image_size)
    max_steps = checked_max_steps(model, max_steps)
    sampler = random_sampler(sampler)
    if sampler is not None:
        beam_size = 1
    metadata = {
        "format": fmt, "format_version": FORMAT_VERSION, "quantize": quantize,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": [1, height, width, 3],
                  # The model normalises inside (its image encoder's own scaling), so apps feed raw RGB values.
                  "pixels": "RGB values 0..255; the image encoder normalises them inside the model",
                  "resize": "bilinear with antialiasing (tf.image.resize) to the input size, as the SavedModel "
                            "and training do; no resize when the image has that size"},
        "image_size": [height, width],
        "outputs": {"tokens": {"dtype": "int32", "shape": [1, beam_size, max_steps]},
                    "scores": {"dtype": "float32", "shape": [1, beam_size]}},
        "sampler": "greedy" if beam_size == 1 else "beam",
        "beam_size": beam_size, "max_steps": max_steps,
        "special_ids": dataclasses.asdict(SpecialIds.of(vocab)),
        "tokenizer": _tokenizer_kind(captioner), "vocab": VOCAB_FILE,
        "image_encoder": model.image_encoder.serving_info(),
    }
    if sampler is not None:
        name = next(name for name, cls in samplers.NAMES.items() if type(sampler) is cls)
        metadata.update(sampler=name, sampler_config=sampler.get_config(),
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


def image_pixels(image_bytes, image_size):
    """Encoded image bytes -> uint8 [H, W, 3], the SavedModel's decode and resize (`decode_image`) run
    eagerly, rounded to the nearest pixel value."""
    pixels = decode_image(tf.constant(image_bytes), image_size).numpy()
    return np.round(pixels).astype(np.uint8)
