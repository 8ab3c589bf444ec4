"""Captioning images from Python: `tfcaption.load(path).caption(images)`.

`caption_with_attention(images)` also returns, per generated word, where the
decoder looked (a map over the image encoder's token grid, levels mixed by
`tfcaption.decoding.mix_levels`; per-region weights for region models) and,
for the meshed decoder, how it weighed the encoder levels, for
`tfcaption.viz.attention.attention_figure`. Region-feature models take feature
arrays `(R, feature_dim)` (or a batch of them) where pixel models take images.
Run directories caption through `tfcaption.ImageCaptioner` (attention maps
through `tfcaption.decoding.caption_batches`), exports through their
signatures, LiteRT and ONNX files through their runtimes
(`tfcaption.export.portable_runtime`).
"""

import json
import os

import numpy as np
import tensorflow as tf

from tfcaption.data.image_check import ImageSkipped, check_image
from tfcaption.data.pipeline import decode_image
from tfcaption.data.tokenizer import Vocabulary
from tfcaption.decoding.captioning import attention_results, caption_batches, display_image
from tfcaption.export.portable_runtime import PortableBackend, portable_format


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


def checked_image_bytes(image, name="image"):
    """The encoded bytes to caption for a path, bytes or array, checked as tfcaption-prepare checks images.

    `tfcaption.data.image_check.check_image` is the one image check: TensorFlow's decoder decides, and
    formats only Pillow reads (WebP, TIFF) come back as JPEG. Raises `ImageError` naming `name`.
    """
    try:
        return check_image(read_image_bytes(image)).data
    except ImageSkipped as skipped:
        raise ImageError(f"{name}: not a decodable image ({skipped.detail})") from None


class AttentionUnavailableError(ValueError):
    """The model cannot report attention maps (an export that predates them)."""


class _SavedModelBackend:
    def __init__(self, path, sampler=None, max_length=None):
        self.path = path
        self.loaded = tf.saved_model.load(path)
        self.signature = self.loaded.signatures["serving_default"]
        self.settings = None
        if sampler is not None:  # the export's `sample` signature, with the sampler's settings
            from tfcaption.export.sampling import settings_of

            self.settings = settings_of(sampler)
            if "sample" not in self.loaded.signatures:
                raise ValueError(f"{path}: this export predates the sampling signature ('sample'); re-export it "
                                 "with tfcaption-export, or pass the run directory to sample.")
            self.signature = self.loaded.signatures["sample"]
        config = {}
        if tf.io.gfile.exists(self._asset("config.json")):  # the oldest exports carry no config
            with tf.io.gfile.GFile(self._asset("config.json")) as f:
                config = json.load(f)
        serving = config.get("serving", {})
        self.input_name = serving.get("input", "image_bytes")  # exports before region models: image bytes
        self.input_key = "images" if self.input_name == "image_bytes" else "features"
        self._image_size = serving.get("image_size")
        self._prefix = (serving.get("token_grid") or {}).get("prefix", 0)
        # The tokenizer's <eos>: the serving config's (this version), the model config's (exports written while
        # the ids were model fields), else the word vocabulary's (the oldest exports, which carry no config).
        special = serving.get("special_ids") or config.get("model", {})
        self._eos_id = special.get("eos_id", Vocabulary.eos_id)
        self._vocab_tokens = None
        if max_length:
            self._set_max_length(int(max_length), serving.get("max_steps"))

    def _set_max_length(self, max_length, export_steps):
        """`sample`'s per-row `max_length` for every call; serving_default's beam search decodes the export's
        length, fixed at export."""
        if export_steps is not None and not 1 <= max_length <= export_steps:
            raise ValueError(f"{self.path}: this export decodes at most {export_steps} tokens (tfcaption-export "
                             f"--max-steps); got a caption length of {max_length}.")
        if self.settings is not None:
            self.settings = {**self.settings, "max_length": max_length}
        elif max_length != export_steps:
            raise ValueError(f"{self.path}: serving_default's beam search decodes the export's {export_steps} "
                             f"tokens; to cut captions at {max_length} give a sampler (--sampler greedy) or "
                             f"re-export with tfcaption-export --max-steps {max_length}.")

    def _feed(self, inputs):
        dtype = tf.string if self.input_key == "images" else tf.float32
        return {self.input_name: tf.constant(inputs, dtype)}

    def _sample_feed(self, count):
        seed = self.settings["seed"]
        if seed is None:  # as the samplers do without a seed: a new draw on every call
            seed = int(np.random.randint(0, 2**31 - 1))
        values = {**self.settings, "seed": seed}
        dtypes = {"temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
                  "max_length": tf.int32}
        return {name: tf.fill([count], tf.constant(values[name], dtype)) for name, dtype in dtypes.items()}

    def __call__(self, inputs):
        feed = self._feed(inputs)
        if self.settings is not None:
            feed.update(self._sample_feed(len(inputs)))
        outputs = self.signature(**feed)
        captions = [c.decode("utf-8") for c in outputs["caption"].numpy()]
        return captions, outputs["score"].numpy()

    def _asset(self, name):
        return os.path.join(self.path, "assets", name)

    def with_attention(self, inputs):
        if "caption_with_attention" not in self.loaded.signatures:
            raise AttentionUnavailableError(
                f"{self.path}: this export predates attention maps (no 'caption_with_attention' signature); "
                "re-export it with tfcaption-export, or pass the run directory as the model."
            )
        signature = self.loaded.signatures["caption_with_attention"]
        outputs = signature(**self._feed(inputs))
        if self._vocab_tokens is None:
            with tf.io.gfile.GFile(self._asset("vocab.txt")) as f:
                self._vocab_tokens = f.read().splitlines()
        images = grid = None
        if "patch_grid" in outputs:
            images = [display_image(decode_image(tf.constant(b), self._image_size)) for b in inputs]
            # (rows, cols), given per image ([B, 2]) by the export; the same for every image.
            grid = tuple(int(v) for v in np.asarray(outputs["patch_grid"]).reshape(-1, 2)[0]) + (self._prefix,)
        captions = [c.decode("utf-8") for c in outputs["caption"].numpy()]
        gates = outputs["gates"].numpy() if "gates" in outputs else None
        return attention_results(
            captions, outputs["score"].numpy(), outputs["tokens"].numpy(), outputs["attention"].numpy(),
            gates, images, grid, self._vocab_tokens, self._eos_id,
        )


class _RunBackend:
    """A run directory through `tfcaption.ImageCaptioner` (its backbone, vocabulary and decode settings)."""

    def __init__(self, path, beam_size=None, sampler=None, max_length=None, prompt=None):
        from tfcaption.decoding.captioning import checked_max_steps
        from tfcaption.models.image_captioner import ImageCaptioner

        self.captioner = ImageCaptioner.from_preset(path)
        if beam_size:
            self.captioner.beam_size = int(beam_size)  # the caller's default over the run's decode.beam_size
        self.new_tokens = None  # the caller's length: after a prompt, the tokens after it
        if max_length:  # the caller's over the run's data.max_decode_steps, checked against the position table
            self.captioner.max_length = self.new_tokens = checked_max_steps(self.captioner.backbone, max_length)
        # One sampler for `caption` and `caption_with_attention`: the caller's, else the run's decode settings.
        self.sampler = self.captioner.resolve_sampler(sampler)
        self.model, self.vocab = self.captioner.backbone, self.captioner.preprocessor.vocabulary
        self.max_steps = self.captioner.max_length
        self.input_key = self.model.input_key
        self.path = path
        self.prompt = prompt
        if prompt is not None:
            self.captioner.preprocessor.prompt_ids(prompt)  # a prompt the tokenizer refuses fails here, once

    def _caption(self, inputs, **options):
        if self.input_key == "images":
            size = self.model.image_encoder.image_size
            inputs = tf.stack([decode_image(tf.constant(b), size) for b in inputs]).numpy()
        batch = {self.input_key: inputs, "image_id": [str(i) for i in range(len(inputs))]}
        return inputs, caption_batches(self.model, self.vocab, [batch], max_steps=self.max_steps, **options)

    def __call__(self, inputs):
        results = self.captioner.generate(list(inputs), sampler=self.sampler, max_length=self.new_tokens,
                                          return_details=True, prompt=self.prompt)
        tokens = [caption_tokens(r["tokens"], self.vocab.eos_id) for r in results]
        return [r["caption"] for r in results], np.array([r["score"] for r in results], np.float32), tokens

    def with_attention(self, inputs):
        if self.prompt is not None:
            raise ValueError("attention maps are drawn for captions decoded without a prompt; leave the prompt out.")
        # The same sampler as `caption`: it records the attention along the caption it returns (a beam's
        # own ancestry), so both calls show the same caption.
        inputs, results = self._caption(inputs, sampler=self.sampler, return_attention=True)
        grid, display = self.model.token_grid, None
        if grid is not None:
            grid = (grid.rows, grid.cols, grid.prefix)
            display = [display_image(image) for image in inputs]
        gates = [r["gates"] for r in results] if self.model.decoder.has_gates else None
        return attention_results(
            [r["caption"] for r in results], [r["score"] for r in results], [np.asarray(r["tokens"]) for r in results],
            [r["attention"] for r in results], gates, display, grid, self.vocab.tokens, self.vocab.eos_id,
        )


class CaptionPredictor:
    """Captions images with a SavedModel export or a training run directory.

    Args:
        path: a SavedModel directory (`savedmodel/<name>/<version>`, or
            `savedmodel/<name>` for its newest version), a run directory, or
            a LiteRT / ONNX file (`model.tflite`, `model.onnx`) written by
            `tfcaption-export --format`, with its metadata.json and vocab.txt
            beside it (`tfcaption.export.portable_runtime`: its decoding is
            fixed at export, so another beam size, sampler or length is a
            ValueError, and it reports no attention; a region-feature file
            takes arrays of at most the regions fixed at export).
        beam_size: for run directories (a SavedModel's is fixed at export):
            the shorthand for greedy (1) or `BeamSampler(num_beams=k)`; default
            the run's `decode.beam_size`.
        sampler: a `tfcaption.samplers.Sampler` or a name (`"top_p"`, ...),
            which wins over `beam_size` (for a run directory the name
            `"beam"` searches with `beam_size` beams, else the run's). A
            random sampler without a `seed` draws new captions on every call
            (so `caption` and `caption_with_attention` differ): give it a
            seed. A SavedModel samples with its `sample` signature (greedy,
            random, top-k and top-p samplers without logit controls; an
            export written before that signature says to re-export); its
            `caption_with_attention` stays the export's beam search
            (`serving_default`'s caption).
        max_length: tokens generated per caption at most, <eos> included (`ImageCaptioner.generate`'s
            `max_length`, `tfcaption-caption --max-steps`; after a prompt, the tokens after it); None: the
            run's or export's. A SavedModel shortens captions only when it samples (`sample`'s
            `max_length`): its beam search decodes the length fixed at export.
        prompt: for run directories: text every caption continues (`ImageCaptioner.generate`'s `prompt`,
            `tfcaption-caption --prompt`); the captions include it.
    """

    def __init__(self, path, beam_size=None, sampler=None, max_length=None, prompt=None):
        path = resolve_model_path(path)
        if prompt is not None and (portable_format(path) is not None
                                   or tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))):
            raise ValueError(f"{path}: a prompt applies to run directories here (an export takes the prompts "
                             "baked into it through its caption_with_prompt signature); pass the run directory.")
        if portable_format(path) is not None:
            self.backend = PortableBackend(path, beam_size, sampler, max_length)
        elif tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            self.backend = _SavedModelBackend(path, sampler, max_length)
        else:
            self.backend = _RunBackend(path, beam_size, sampler, max_length, prompt)
        self.path = path

    @property
    def input_key(self):
        """"images" (paths, bytes or arrays of pixels) or "features" (region-feature arrays)."""
        return self.backend.input_key

    @property
    def captioner(self):
        """The `tfcaption.ImageCaptioner` of a run directory (None for a SavedModel: exports are TF-only)."""
        return getattr(self.backend, "captioner", None)

    def _inputs(self, images):
        if self.input_key == "features":
            return _feature_inputs(images)
        return _encoded_inputs(images)

    def caption(self, images):
        """Captions a list of images (paths, encoded bytes or arrays), or of region-feature arrays
        `(R, feature_dim)` / one `(B, R, feature_dim)` batch for a region-feature model.

        Returns a list of `{"caption": str, "score": float}` (one dict for a
        single image), for a run directory with `tokens`: the caption's token
        ids as generated (a prompt's first, the start token left out, up to
        and including the end token). Raises `ImageError` naming the first
        input that is not a decodable image (or not a finite feature array).
        """
        single, data = self._inputs(images)
        captions, scores, *tokens = self.backend(data)
        results = [{"caption": c, "score": float(s)} for c, s in zip(captions, scores)]
        for result, row in zip(results, tokens[0] if tokens else ()):
            result["tokens"] = row
        return results[0] if single else results

    def caption_with_attention(self, images):
        """Captions images and reports where each word looked.

        A run directory decodes with the same sampler as `caption` (beam
        search included: the attention follows the returned beam's ancestry),
        so both calls give the same caption and score; a SavedModel uses its
        `caption_with_attention` signature, which decodes with the export's
        beam search and returns `serving_default`'s caption and score
        (exports whose serving config says `"attention_decoding": "greedy"`,
        written before, decode it greedily).

        Returns per image (one dict for a single image): `caption`, `score`,
        `words` (generated words before <eos>), `attention` float32
        [len(words), rows, cols] over the image encoder's token grid (encoder
        levels combined by their mean gate, each map summing to 1), or
        [len(words), regions] for a region-feature model; `gates` float32
        [len(words), levels] (mean meshed gate per encoder level; None for a
        decoder without gates) and `image` (uint8 RGB at the model's input
        size, for drawing; None for region features).

        Raises:
            ImageError: an input is not a decodable image.
            AttentionUnavailableError: an export without the signature.
        """
        single, data = self._inputs(images)
        results = self.backend.with_attention(data)
        return results[0] if single else results


def caption_tokens(row, eos_id):
    """A generated token row up to and including its first end token (the fill after it dropped)."""
    row = [int(token) for token in row]
    return row[:row.index(eos_id) + 1] if eos_id in row else row


def _encoded_inputs(images):
    """(single, [encoded bytes]) for one image or a list; checks each decodes."""
    single = not isinstance(images, (list, tuple))
    images = [images] if single else list(images)
    data = []
    for i, image in enumerate(images):
        name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"
        data.append(checked_image_bytes(image, name))
    return single, data


def _feature_inputs(features):
    """(single, float32 [B, R, D]) for one (R, D) array, a list of them (zero-padded to the longest), or a batch."""
    items = features if isinstance(features, (list, tuple)) else [features]
    if any(isinstance(item, (str, bytes, bytearray, os.PathLike)) for item in items):
        raise ImageError("this model reads precomputed region features, not images: pass arrays "
                         "(regions, feature_dim), or use --features FILE.h5 with tfcaption-caption")
    single = not isinstance(features, (list, tuple)) and np.ndim(features) == 2
    arrays = [np.asarray(f, np.float32) for f in ([features] if single else list(features))]
    for i, array in enumerate(arrays):
        if array.ndim != 2:
            raise ImageError(f"features {i}: expected an array (regions, feature_dim), got shape {array.shape}")
        if not np.isfinite(array).all():
            raise ImageError(f"features {i}: NaN or infinite values")
    if len({a.shape[1] for a in arrays}) > 1:
        raise ImageError(f"features: every array needs the same feature_dim, got {sorted({a.shape[1] for a in arrays})}")
    batch = np.zeros((len(arrays), max(a.shape[0] for a in arrays), arrays[0].shape[1]), np.float32)
    for i, array in enumerate(arrays):
        batch[i, :len(array)] = array
    return single, batch


def resolve_model_path(path):
    """A model directory; for `savedmodel/<name>` picks the newest integer version inside."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Model not found: {path}")
    if tf.io.gfile.isdir(path) and not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        versions = [n.strip("/") for n in tf.io.gfile.listdir(path) if n.strip("/").isdigit()]
        if versions and not tf.io.gfile.exists(os.path.join(path, "config.json")):
            return os.path.join(path, max(versions, key=int))
    return path


def load(path, beam_size=None, sampler=None, max_length=None, prompt=None):
    """Loads a captioner for notebooks and scripts: `tfcaption.load(path).caption(images)`.

    `sampler`: a `tfcaption.samplers.Sampler` or a name, e.g.
    `from tfcaption import samplers; tfcaption.load(run, sampler=samplers.TopPSampler(p=0.9, seed=1))`; a
    SavedModel samples with its `sample` signature (see `CaptionPredictor`). `max_length`: tokens generated per
    caption at most, <eos> included (docs/guides/decoding.md#caption-length); None: the run's or export's.
    """
    return CaptionPredictor(path, beam_size, sampler, max_length, prompt)
