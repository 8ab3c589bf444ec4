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

A fourth, `caption_with_prompt`, where prompts were baked in at export (`prompts`, a BLIP run's
`tfcaption-export --prompt TEXT`): the image input plus `prompt` (string [B], one per image); its outputs
are `serving_default`'s. TF Serving signatures have no optional inputs, so the prompt is an input of its
own signature rather than of `serving_default`. The prompts are tokenized at export (their ids are
constants of the graph, so TF Serving needs no tensorflow-text); a request's prompt is matched to them as
written (surrounding whitespace aside), and an empty one is the first (default) prompt. A prompt not baked
in fails the call with InvalidArgumentError naming its row and the baked prompts (`prompt[1]: not a prompt
baked into this export at export time, got [a cat]; it takes [a picture of] ...`). Every other signature
decodes with the default prompt. A caption starts with its prompt (as transformers' decode gives it), and
`tokens` holds the prompt's pieces before the `max_steps` generated ones.

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

from tfcaption import samplers
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.data.vocabulary import BERT_SETTINGS_FILE, save_vocabulary
from tfcaption.decoding.captioning import as_sampler, checked_max_steps, generate
from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS
from tfcaption.export.image_decoding import decode_batch
from tfcaption.export.sampling import SETTING_NAMES, SETTINGS, PerRowSampler, checked_settings

DEFAULT_EXPORT_ROOT = "savedmodel"
SAMPLE_SIGNATURE = "sample"
PROMPT_SIGNATURE = "caption_with_prompt"
# The beam searches an export can fix: tfcaption's (M2's) and transformers' generate() (a BLIP run's).
BEAM_SEARCHES = ("beam", "generate_beam")
# The serving config's `attention_decoding`: what `caption_with_attention` decodes with. "serving_default":
# the export's beam search, attention along its best beam (this version); "greedy": beam size 1 whatever the
# export's beam (exports written before it; their signature keeps doing so, and readers label it greedy).
ATTENTION_DECODING = "serving_default"


IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")
PROMPT = tf.TensorSpec([None], tf.string, name="prompt")


def checked_features(features):
    """`features` unchanged, or InvalidArgumentError naming every batch index with NaN or inf values."""
    bad = tf.logical_not(tf.reduce_all(tf.math.is_finite(features), axis=[1, 2]))
    index = tf.strings.as_string(tf.where(bad)[:, 0])
    message = tf.strings.reduce_join(tf.strings.join(["features[", index, "]: NaN or infinite values"]),
                                     separator="; ")
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])
    with tf.control_dependencies([check]):
        return tf.identity(features)


def search_sampler(beam_size=3, beam_search="beam"):
    """The sampler an export's `serving_default` fixes: greedy for one beam, else `beam_search`'s beam search
    with `beam_size` beams ("beam": tfcaption's `BeamSampler`; "generate_beam": `GenerateBeamSampler`,
    transformers' `generate(num_beams=k)`, what a BLIP run decodes with)."""
    if beam_search not in BEAM_SEARCHES:
        raise ValueError(f"beam_search must be one of {', '.join(BEAM_SEARCHES)}, got {beam_search!r}.")
    if beam_search == "generate_beam" and int(beam_size) > 1:
        return samplers.GenerateBeamSampler(num_beams=int(beam_size))
    return as_sampler(None, int(beam_size))


def run_beam_search(run_config):
    """The beam search a run decodes with (`RunConfig.beam_search`), as `search_sampler` names it."""
    return "generate_beam" if run_config.beam_search == "generate" else "beam"


def prompt_ids_of(vocab, prompts, max_steps, max_length):
    """The prompts (strings, the first the default) as `generate`'s prompt ids, each checked: not empty, a
    tokenizer that takes prompts (BLIP's), and room in the position table for it and `max_steps` tokens."""
    if not prompts:
        return ()
    if not hasattr(vocab, "encode_prompt"):
        raise ValueError(f"--prompt needs a run whose tokenizer takes a prompt (an imported BLIP run's 'bert'); "
                         f"this run's tokenizer is a {type(vocab).__name__}.")
    ids = []
    for prompt in prompts:
        if not prompt.strip():
            raise ValueError("--prompt must not be empty (an empty prompt in a request is the default prompt).")
        ids.append(tuple(vocab.encode_prompt(prompt)))
        if len(ids[-1]) - 1 + max_steps > max_length:
            raise ValueError(f"--prompt {prompt!r} ({len(ids[-1]) - 1} tokens) and {max_steps} new tokens exceed "
                             f"this model's {max_length} positions: shorten the prompt or lower --max-steps.")
    return tuple(ids)


def _pad_steps(outputs, length, pad_id):
    """`generate`'s outputs with their step axis padded to `length` (tokens with `pad_id`, the rest with 0)."""
    padded = {}
    for name, value in outputs.items():
        if name in ("scores", "beam_scores"):
            padded[name] = value
            continue
        axis = 2 if name.startswith("beam_") else 1
        paddings = [[0, 0]] * value.shape.rank
        paddings[axis] = [0, length - value.shape[axis]]
        padded[name] = tf.pad(value, paddings, constant_values=pad_id if name.endswith("tokens") else 0)
    return padded


class CaptionerModule(tf.Module):
    """The exported module: read the input (decode bytes / check features), caption, detokenise, in core TF ops.

    The graph holds no Python, no tensorflow-text and no lookup-table
    resources, so stock TF Serving can load it, and so can any process that
    imports only TensorFlow. Beam size, the longest caption, the pixel
    limit and the prompts are fixed here. Decoding may be XLA-compiled (`jit_compile`); it is
    off by default because TF Serving builds do not always include XLA.

    Args:
        captioner: a `tfcaption.ImageCaptioner` (its backbone, its preprocessor's vocabulary and resize are
            exported).
        beam_search: "beam" or "generate_beam" (`search_sampler`): the beam search of `serving_default` and
            `caption_with_attention` when `beam_size` > 1.
        prompts: strings tokenized now and baked in, the first the default of every signature (a tokenizer
            with `encode_prompt`: BLIP's); with any, a `caption_with_prompt` signature.
    """

    def __init__(self, captioner, beam_size=3, max_steps=None, jit_compile=False, max_pixels=DEFAULT_MAX_PIXELS,
                 beam_search="beam", prompts=()):
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
        object.__setattr__(self, "search", search_sampler(self.beam_size, beam_search))
        self.beam_search = beam_search
        self.max_steps = checked_max_steps(model, max_steps)  # tokens generated, <eos> included
        self.max_pixels = int(max_pixels)
        self.resample = captioner.preprocessor.resample
        # Once each, the first kept first, stripped as a request's prompt is before matching.
        self.prompts = tuple(dict.fromkeys(prompt.strip() for prompt in prompts))
        self.prompt_ids = prompt_ids_of(vocab, self.prompts, self.max_steps, model.config.max_length)
        self.default_prompt = 0 if self.prompt_ids else None
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
        if self.prompt_ids:
            self.serve_with_prompt = tf.function(self._serve_with_prompt, input_signature=[spec, PROMPT])

    def signatures(self):
        """{name: function} of every signature this export has."""
        functions = {"serving_default": self.serve, "caption_with_attention": self.serve_with_attention,
                     SAMPLE_SIGNATURE: self.serve_sample}
        if self.prompt_ids:
            functions[PROMPT_SIGNATURE] = self.serve_with_prompt
        return functions

    def _prompt(self, index):
        """Prompt `index`'s ids as a constant (None: no prompt)."""
        return None if index is None else tf.constant(self.prompt_ids[index], tf.int32)

    def _tokens(self, inputs, prompt=None):
        # `prompt` (a Python index into the baked prompts) is traced once per value.
        return generate(self.model, inputs, self.search, self.max_steps, special_ids=self.vocab,
                        prompt_ids=self._prompt(prompt))

    def _tokens_with_attention(self, inputs):
        # The same sampler as `_tokens`, so the caption is serving_default's best beam.
        return generate(self.model, inputs, self.search, self.max_steps, return_attention=True,
                        special_ids=self.vocab, prompt_ids=self._prompt(self.default_prompt))

    def _sampled_tokens(self, inputs, temperature, top_k, top_p, seed, max_length):
        sampler = PerRowSampler(temperature, top_k, top_p, max_length)
        return generate(self.model, inputs, sampler, self.max_steps, seeds=seed, special_ids=self.vocab,
                        prompt_ids=self._prompt(self.default_prompt))

    def _decode_batch(self, image_bytes):
        return decode_batch(image_bytes, self.image_encoder.image_size, self.max_pixels, resample=self.resample)

    def _text_outputs(self, outputs):
        return {
            "caption": self.vocab.decode_tf(outputs["tokens"]),
            "score": outputs["scores"],
            "tokens": tf.cast(outputs["tokens"], tf.int32),
        }

    def _caption_outputs(self, outputs):
        result = self._text_outputs(outputs)
        beams = outputs.get("beam_tokens", outputs["tokens"][:, None])
        result["beam_captions"] = self.vocab.decode_tf(beams)
        result["beam_scores"] = outputs.get("beam_scores", outputs["scores"][:, None])
        return result

    def _serve(self, inputs):
        return self._caption_outputs(self._generate(self._read(inputs), self.default_prompt))

    def _prompt_rows(self, prompt, batch_size):
        """Each row's baked prompt index (int32 [B]), or InvalidArgumentError naming each unknown prompt."""
        size = tf.debugging.assert_equal(tf.shape(prompt)[0], batch_size,
                                         message="prompt must hold one string per image (as many as the images)")
        with tf.control_dependencies([size]):
            text = tf.strings.strip(prompt)
        matches = tf.equal(text[:, None], tf.constant(self.prompts)[None, :])  # (B, prompts)
        empty = tf.equal(text, "")
        bad = tf.logical_not(tf.logical_or(empty, tf.reduce_any(matches, axis=1)))
        rows = tf.where(bad)[:, 0]
        # Brackets, not quotes, around the prompts: the assertion's message escapes quotes.
        baked = ", ".join(f"[{prompt}]" for prompt in self.prompts)
        labels = tf.strings.join(["prompt[", tf.strings.as_string(rows), "]: not a prompt baked into this export "
                                  "at export time, got [", tf.gather(text, rows), f"]; it takes {baked} "
                                  "(tfcaption-export --prompt), or an empty string for the first"])
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                                    [tf.strings.reduce_join(labels, separator="; ")])
        with tf.control_dependencies([check]):
            # An empty prompt is the default (index 0); argmax of no match never survives the check.
            return tf.where(empty, 0, tf.argmax(tf.cast(matches, tf.int32), axis=1, output_type=tf.int32))

    def _serve_with_prompt(self, inputs, prompt):
        inputs = self._read(inputs)
        index = self._prompt_rows(prompt, tf.shape(inputs)[0])
        if len(self.prompt_ids) == 1:
            return self._caption_outputs(self._generate(inputs, 0))
        # A prompt's length is static in the decoding loop, so each baked prompt decodes its own rows; the
        # results are padded to the longest prompt's steps and put back in request order.
        length = max(len(ids) for ids in self.prompt_ids) - 1 + self.max_steps
        rows, parts = [], []
        for group in range(len(self.prompt_ids)):
            where = tf.cast(tf.where(tf.equal(index, group))[:, 0], tf.int32)
            rows.append(where)
            parts.append(_pad_steps(self._generate(tf.gather(inputs, where), group), length,
                                    SpecialIds.of(self.vocab).pad_id))
        outputs = {name: tf.dynamic_stitch(rows, [part[name] for part in parts]) for name in parts[0]}
        return self._caption_outputs(outputs)

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
        config = {
            "beam_size": self.beam_size, "max_steps": self.max_steps, "max_pixels": self.max_pixels,
            "input": self.input_name, "input_shape": info["input_shape"], "token_grid": info["token_grid"],
            # A square side, as exports before the parts existed wrote it (older readers use it).
            "image_size": image_size[0] if image_size and image_size[0] == image_size[1] else image_size,
            "patch_grid": None if self.patch_grid is None else list(self.patch_grid),
            "signatures": list(self.signatures()), "attention_decoding": ATTENTION_DECODING,
            "sampling": {"signature": SAMPLE_SIGNATURE, "inputs": [self.input_name, *SETTING_NAMES],
                         "outputs": ["caption", "score", "tokens"]},
            # The tokenizer's, for readers of the `tokens` outputs (the model config carries no token id).
            "special_ids": dataclasses.asdict(SpecialIds.of(self.vocab)),
        }
        if self.beam_search != "beam":
            config["beam_search"] = self.beam_search
        if self.prompts:
            config["prompts"] = {"signature": PROMPT_SIGNATURE, "input": PROMPT.name, "default": self.prompts[0],
                                 "baked": list(self.prompts), "ids": [list(ids) for ids in self.prompt_ids]}
        if self.resample != "bilinear":
            config["resample"] = self.resample
        return config


def next_version(model_dir):
    """The smallest integer version above every existing numeric one (1 for a new model)."""
    if not tf.io.gfile.exists(model_dir):
        return 1
    versions = [int(name.strip("/")) for name in tf.io.gfile.listdir(model_dir) if re.fullmatch(r"\d+/?", name)]
    return max(versions, default=0) + 1


def export_saved_model(captioner, export_root=DEFAULT_EXPORT_ROOT, model_name="captioner", version=None,
                       beam_size=3, max_steps=None, run_config=None, jit_compile=False,
                       max_pixels=DEFAULT_MAX_PIXELS, beam_search="beam", prompts=()):
    """Writes `export_root/model_name/version/` in TF Serving's layout and returns its path.

    The SavedModel is written to a temporary sibling and renamed into place,
    so a serving process watching the directory never sees half a model, and
    an existing version is never overwritten. The vocabulary (with a BERT
    tokenizer's tokenizer_config.json) and the config (with the serving
    settings: beam size and search, max steps, image size, max_pixels, patch
    grid, signature names, baked prompts) travel inside it as assets.
    `captioner` is a `tfcaption.ImageCaptioner`; `beam_search` and `prompts`
    are `CaptionerModule`'s.
    """
    model_dir = os.path.join(export_root, model_name)
    version = next_version(model_dir) if version is None else int(version)
    target = os.path.join(model_dir, str(version))
    if tf.io.gfile.exists(target):
        raise FileExistsError(f"Export version already exists, refusing to overwrite: {target}")
    module = CaptionerModule(captioner, beam_size, max_steps, jit_compile=jit_compile, max_pixels=max_pixels,
                             beam_search=beam_search, prompts=prompts)
    tf.io.gfile.makedirs(model_dir)
    model, vocab = module.model, module.vocab
    with tempfile.TemporaryDirectory() as assets_dir:
        vocab_path = save_vocabulary(vocab, os.path.join(assets_dir, "vocab.txt"))
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
        settings_path = os.path.join(assets_dir, BERT_SETTINGS_FILE)
        if os.path.isfile(settings_path):  # a BertTokenizer's settings, beside its vocab.txt
            module.tokenizer_config_file = tf.saved_model.Asset(settings_path)
        staging = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
        try:
            tf.saved_model.save(module, staging, signatures=module.signatures())
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
               max_steps=None, max_pixels=None, prompts=(), beam_search=None):
    """`export_saved_model` with a run's settings: `run_config.export`, its caption length and its beam search
    (`run_beam_search`).

    Any argument given replaces the run's value (what tfcaption-export's flags do); `prompts` are baked in.
    """
    return export_saved_model(
        captioner, export_root or run_config.export.root, model_name or run_config.export_name, version=version,
        beam_size=beam_size or run_config.export.beam_size, max_steps=max_steps or run_config.data.max_decode_steps,
        run_config=run_config, max_pixels=max_pixels or DEFAULT_MAX_PIXELS,
        beam_search=beam_search or run_beam_search(run_config), prompts=prompts,
    )
