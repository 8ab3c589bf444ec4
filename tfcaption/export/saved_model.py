"""Exporting a captioner as a SavedModel for TF Serving: image input in, captions (+ attention) out.

The input is the one the model's image encoder reads: `image_bytes` (string [batch], encoded JPEG, PNG,
GIF or BMP) for pixel models, `features` (float32 [batch, regions, feature_dim], all-zero rows as
padding) for region-feature models. Three signatures:

- `serving_default`: `caption` (string [B]), `score` (float32 [B], sum of log-probabilities),
  `tokens` (int32 [B, T]), and every beam best first: `beam_captions` (string [B, k]) and `beam_scores`
  (float32 [B, k]); beam size k and `T` are fixed at export (k = 1: the caption alone).
- `caption_with_attention`: the export's own decoding, beam size k as `serving_default`'s, with the
  attention recorded along the caption it returns (the best beam's own ancestry), so its `caption`,
  `score` and `tokens` are `serving_default`'s; plus `attention` (float32 [B, T, P]: the
  last decoder layer's cross-attention over the P image tokens, averaged over heads and, for the
  meshed decoder, mixed over the encoder levels by each level's mean gate; rows sum to 1),
  `level_attention` (float32 [B, T, N_levels, P]); `gates` (float32 [B, T, N_levels]) where the decoder
  has gates; and, where the tokens form a grid, `patch_grid` (int32 [B, 2], the same (rows, cols) for
  every image, so `attention[b, t, prefix:].reshape(patch_grid[b])` lies over the image, `prefix` being
  the serving config's `token_grid.prefix`; batch-shaped because TF Serving's row format needs every
  output to share the batch dimension). Region models report per-region weights. Rows after a
  caption's <eos> are zero.
- `sample`: sampling with settings chosen per row, so one compiled program serves any mix of requests:
  the image input plus `temperature` (float32 [B], 0: greedy), `top_k` (int32 [B], 0: off), `top_p`
  (float32 [B], 1: off), `seed` (int64 [B]: the row's draws depend on it alone, so a seed gives the same
  caption whatever batch the row is in) and `max_length` (int32 [B]: tokens generated at most, <eos>
  included, as the export's max_steps counts them; 0: the export's max_steps); outputs
  `caption`, `score` (the sum of the model's log-probabilities of the drawn tokens) and `tokens`, as
  `serving_default`'s. See `tfcaption.export.sampling`. A bad setting fails the call with
  InvalidArgumentError naming its row (`top_p[1]: must be in (0, 1] ...`).

Bad inputs (empty, not an image, truncated, more than `max_pixels` pixels; features with NaN or inf)
fail the call with InvalidArgumentError naming the batch index (see `tfcaption.export.image_decoding`).
"""

import dataclasses
import json
import os
import re
import tempfile
import uuid

import tensorflow as tf

from tfcaption.data.tokenizer import SpecialIds
from tfcaption.decoding.captioning import checked_max_steps, generate
from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS
from tfcaption.export.image_decoding import decode_batch
from tfcaption.export.sampling import SETTING_NAMES, SETTINGS, PerRowSampler, checked_settings

DEFAULT_EXPORT_ROOT = "savedmodel"
SAMPLE_SIGNATURE = "sample"
SIGNATURES = ("serving_default", "caption_with_attention", SAMPLE_SIGNATURE)
# The serving config's `attention_decoding`: what `caption_with_attention` decodes with. "serving_default":
# the export's beam search, attention along its best beam (this version); "greedy": beam size 1 whatever the
# export's beam (exports written before it; their signature keeps doing so, and readers label it greedy).
ATTENTION_DECODING = "serving_default"


IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")


def checked_features(features):
    """`features` unchanged, or InvalidArgumentError naming every batch index with NaN or inf values."""
    bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(features), axis=[1, 2]))
    index = tf.strings.as_string(tf.where(bad)[:, 0])
    message = tf.strings.reduce_join(tf.strings.join(["features[", index, "]: NaN or infinite values"]),
                                     separator="; ")
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])
    with tf.control_dependencies([check]):
        return tf.identity(features)


class CaptionerModule(tf.Module):
    """The exported module: read the input (decode bytes / check features), caption, detokenise, in core TF ops.

    The graph holds no Python, no tensorflow-text and no lookup-table
    resources, so stock TF Serving can load it, and so can any process that
    imports only TensorFlow. Beam size, the longest caption and the pixel
    limit are fixed here. Decoding may be XLA-compiled (`jit_compile`); it is
    off by default because TF Serving builds do not always include XLA.

    Args:
        captioner: a `tfcaption.ImageCaptioner` (its backbone and its preprocessor's vocabulary are exported).
    """

    def __init__(self, captioner, beam_size=3, max_steps=None, jit_compile=False, max_pixels=DEFAULT_MAX_PIXELS):
        super().__init__(name="tfcaption")
        model, vocab = captioner._require_backbone(), captioner.preprocessor.vocabulary
        # The Keras model is kept out of the SavedModel's object graph on purpose: saving a Keras 3
        # variable writes a *copy* (a second tf.Variable) to the checkpoint while the traced functions
        # read the original, so TF1-style loaders (TF Serving, `saved_model_cli run`) restore the copy and
        # the graph then fails with "Could not find variable ...". Tracking the underlying tf.Variables
        # that the functions capture makes the checkpoint restore exactly what the graph reads.
        object.__setattr__(self, "model", model)
        self.weights = [variable.value for variable in model.variables]
        self.vocab = vocab
        self.beam_size = int(beam_size)
        self.max_steps = checked_max_steps(model, max_steps)  # tokens generated, <eos> included
        self.max_pixels = int(max_pixels)
        object.__setattr__(self, "image_encoder", model.image_encoder)  # untracked, as the model above
        grid = model.token_grid
        self.patch_grid = None if grid is None else (grid.rows, grid.cols)
        self._generate = tf.function(self._tokens, jit_compile=jit_compile)
        self._attend = tf.function(self._tokens_with_attention, jit_compile=jit_compile)
        self._sample = tf.function(self._sampled_tokens, jit_compile=jit_compile)
        if self.image_encoder.input_key == "images":
            spec, self._read = IMAGE_BYTES, self._decode_batch
        else:
            spec = tf.TensorSpec([None, None, self.image_encoder.feature_dim], tf.float32, name="features")
            self._read = checked_features
        self.input_name = spec.name
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.serve_with_attention = tf.function(self._serve_with_attention, input_signature=[spec])
        self.serve_sample = tf.function(self._serve_sample, input_signature=[spec, *SETTINGS])

    def _tokens(self, inputs):
        return generate(self.model, inputs, self.beam_size, self.max_steps, special_ids=self.vocab)

    def _tokens_with_attention(self, inputs):
        # The same sampler as `_tokens` (beam size k), so the caption is serving_default's best beam.
        return generate(self.model, inputs, self.beam_size, self.max_steps, return_attention=True,
                        special_ids=self.vocab)

    def _sampled_tokens(self, inputs, temperature, top_k, top_p, seed, max_length):
        sampler = PerRowSampler(temperature, top_k, top_p, max_length)
        return generate(self.model, inputs, sampler, self.max_steps, seeds=seed, special_ids=self.vocab)

    def _decode_batch(self, image_bytes):
        return decode_batch(image_bytes, self.image_encoder.image_size, self.max_pixels)

    def _text_outputs(self, outputs):
        return {
            "caption": self.vocab.decode_tf(outputs["tokens"]),
            "score": outputs["scores"],
            "tokens": tf.cast(outputs["tokens"], tf.int32),
        }

    def _serve(self, inputs):
        outputs = self._generate(self._read(inputs))
        result = self._text_outputs(outputs)
        beams = outputs.get("beam_tokens", outputs["tokens"][:, None])
        result["beam_captions"] = self.vocab.decode_tf(beams)
        result["beam_scores"] = outputs.get("beam_scores", outputs["scores"][:, None])
        return result

    def _serve_sample(self, inputs, temperature, top_k, top_p, seed, max_length):
        inputs = self._read(inputs)
        settings = checked_settings(tf.shape(inputs)[0], temperature, top_k, top_p, seed, max_length, self.max_steps)
        return self._text_outputs(self._sample(inputs, *settings))

    def _serve_with_attention(self, inputs):
        outputs = self._attend(self._read(inputs))  # attention mixed by decoding.mix_levels
        result = self._text_outputs(outputs)
        result.update({name: outputs[name] for name in ("attention", "level_attention", "gates") if name in outputs})
        if self.patch_grid is not None:
            # One (rows, cols) row per image: TF Serving's row ("instances") format needs every output to
            # share the batch dimension, so a bare [2] tensor would fail (or be mis-split) there.
            batch = tf.shape(result["tokens"])[0]
            result["patch_grid"] = tf.tile(tf.constant([self.patch_grid], tf.int32), [batch, 1])
        return result

    def serving_config(self):
        """The `serving` section of the exported config.json."""
        info = self.image_encoder.serving_info()
        image_size = info["image_size"]
        return {
            "beam_size": self.beam_size, "max_steps": self.max_steps, "max_pixels": self.max_pixels,
            "input": self.input_name, "input_shape": info["input_shape"], "token_grid": info["token_grid"],
            # A square side, as exports before the parts existed wrote it (older readers use it).
            "image_size": image_size[0] if image_size and image_size[0] == image_size[1] else image_size,
            "patch_grid": None if self.patch_grid is None else list(self.patch_grid),
            "signatures": list(SIGNATURES), "attention_decoding": ATTENTION_DECODING,
            "sampling": {"signature": SAMPLE_SIGNATURE, "inputs": [self.input_name, *SETTING_NAMES],
                         "outputs": ["caption", "score", "tokens"]},
            # The tokenizer's, for readers of the `tokens` outputs (the model config carries no token id).
            "special_ids": dataclasses.asdict(SpecialIds.of(self.vocab)),
        }


def next_version(model_dir):
    """The smallest integer version above every existing numeric one (1 for a new model)."""
    if not tf.io.gfile.exists(model_dir):
        return 1
    versions = [int(name.strip("/")) for name in tf.io.gfile.listdir(model_dir) if re.fullmatch(r"\d+/?", name)]
    return max(versions, default=0) + 1


def export_saved_model(captioner, export_root=DEFAULT_EXPORT_ROOT, model_name="captioner", version=None,
                       beam_size=3, max_steps=None, run_config=None, jit_compile=False,
                       max_pixels=DEFAULT_MAX_PIXELS):
    """Writes `export_root/model_name/version/` in TF Serving's layout and returns its path.

    The SavedModel is written to a temporary sibling and renamed into place,
    so a serving process watching the directory never sees half a model, and
    an existing version is never overwritten. The vocabulary and the config
    (with the serving settings: beam size, max steps, image size, max_pixels,
    patch grid, signature names) travel inside it as assets. `captioner` is a
    `tfcaption.ImageCaptioner`.
    """
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"Export version already exists, refusing to overwrite: {target}")
    tf.io.gfile.makedirs(model_dir)
    module = CaptionerModule(captioner, beam_size, max_steps, jit_compile=jit_compile, max_pixels=max_pixels)
    model, vocab = module.model, module.vocab
    with tempfile.TemporaryDirectory() as assets_dir:
        vocab_path = vocab.save(os.path.join(assets_dir, "vocab.txt"))
        config_path = os.path.join(assets_dir, "config.json")
        export_config = {
            **(run_config.to_dict() if run_config is not None else {}),
            "model": model.config.to_dict(),
            "serving": module.serving_config(),
        }
        with open(config_path, "w") as f:
            json.dump(export_config, f, indent=2, sort_keys=True)
        module.vocab_file = tf.saved_model.Asset(vocab_path)
        module.config_file = tf.saved_model.Asset(config_path)
        staging = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        signatures = {"serving_default": module.serve, "caption_with_attention": module.serve_with_attention,
                      SAMPLE_SIGNATURE: module.serve_sample}
        try:
            tf.saved_model.save(module, staging, signatures=signatures)
        except BaseException:
            if tf.io.gfile.exists(staging):
                tf.io.gfile.rmtree(staging)
            raise
    try:
        tf.io.gfile.rename(staging, target)
    except tf.errors.OpError:
        tf.io.gfile.rmtree(staging)
        raise FileExistsError(f"Export version already exists, refusing to overwrite: {target}")
    return target


def export_run(captioner, run_config, export_root=None, model_name=None, version=None, beam_size=None,
               max_steps=None, max_pixels=None):
    """`export_saved_model` with a run's settings: `run_config.export` and its caption length.

    Any argument given replaces the run's value (what tfcaption-export's flags do).
    """
    return export_saved_model(
        captioner, export_root or run_config.export.root, model_name or run_config.export_name, version=version,
        beam_size=beam_size or run_config.export.beam_size, max_steps=max_steps or run_config.data.max_decode_steps,
        run_config=run_config, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
    )
