"""The one captioning path: image inputs (pixels or region features) -> token ids -> caption strings.

Every caller decodes through here: evaluation and per-epoch validation, `tfcaption.load(...)`,
region-feature captioning, the SavedModel export and the benchmarks.

The special token ids (start, end, padding) are the tokenizer's, never the model's: every function here
takes them (`special_ids`: a `tfcaption.data.tokenizer.SpecialIds`, or the `Vocabulary` or
`CaptionerPreprocessor` that has them); `caption_batches` reads them from its `vocab`.

- `generate` is the graph part: encode once, decode with a sampler (`tfcaption.samplers`: greedy, beam,
  random, top-k, top-p; `decode` is the one place a sampler meets the decoder), and, when asked, the
  attention of each generated word along the returned caption, mixed over the encoder levels
  (`mix_levels`, the one place that mixing is computed, for inference and export alike).
- `compiled_generator` wraps it in a `tf.function` (XLA by default), one per model, sampler config and
  settings.
- `caption_batches` is the host loop: it feeds batches to the compiled generator and detokenises.
  Strings never enter the compiled function.
- `attention_results` turns recorded attention into per-word maps over the token grid (class tokens
  dropped), for `tfcaption.load(...).caption_with_attention` and TensorBoard's validation figures.
"""

import json
import numbers

import numpy as np
import tensorflow as tf

from tfcaption import samplers
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.samplers import loop_invariants


def mix_levels(level_attention, gates, tokens, eos_id):
    """One attention map per generated word from the per-level maps, as exports and inference report it.

    Each encoder level's map is weighted by that level's mean meshed gate, the weighted maps are summed
    and renormalised to sum to 1 over the image positions, so a map says where the word looked in the mix
    of levels the decoder actually used. A decoder without gates (the transformer decoder: one level)
    weighs its levels equally. Steps after a caption's first <eos> are zero.

    Args:
        level_attention: (B, T, N_levels, P) attention over P image positions per level.
        gates: (B, T, N_levels) mean gate per level, or None.
        tokens: (B, T) generated tokens.
        eos_id: the <eos> id.

    Returns:
        dict of float32 `attention` (B, T, P), `level_attention` (B, T, N, P) and, with gates, `gates`
        (B, T, N), each zero after <eos>.

    Example:
    >>> levels = tf.constant([[[[1.0, 0.0], [0.0, 1.0]]]])  # one word, two levels, two positions
    >>> out = mix_levels(levels, tf.constant([[[3.0, 1.0]]]), tf.constant([[5]]), eos_id=3)
    >>> out["attention"].numpy().round(2).tolist()
    [[[0.75, 0.25]]]
    """
    level_attention = tf.cast(level_attention, tf.float32)
    weights = tf.ones_like(level_attention[..., 0]) if gates is None else tf.cast(gates, tf.float32)
    # A step is part of the caption until (and including) its first <eos>.
    is_eos = tf.cast(tf.equal(tokens, eos_id), tf.int32)
    live = tf.cast(tf.equal(tf.cumsum(is_eos, axis=1, exclusive=True), 0), tf.float32)
    mixed = tf.einsum("btn,btnp->btp", weights, level_attention)
    attention = tf.math.divide_no_nan(mixed, tf.reduce_sum(mixed, axis=-1, keepdims=True))
    outputs = {"attention": attention * live[..., None], "level_attention": level_attention * live[..., None, None]}
    if gates is not None:
        outputs["gates"] = weights * live[..., None]
    return outputs


def as_sampler(sampler=None, beam_size=None, search=None, **options):
    """The `Sampler` a decoding call asked for.

    `sampler` is a `Sampler`, a name (`"beam"`, `"top_p"`, ...), a config dict, or an int (a beam size);
    `options` go to a named sampler's constructor. Without a sampler, `beam_size` is the shorthand that
    existing callers and run configs use: 1 (or None) is `GreedySampler`, k > 1 `BeamSampler(num_beams=k)`,
    `search="beam"` makes 1 a one-beam `BeamSampler` (the released M2 loop, whose options
    `length_penalty` and `fill_token` apply only there), and `search="generate"` makes k > 1
    `GenerateBeamSampler(num_beams=k)` (transformers' beam search, a run's `decode.beam_search: generate`).
    `fill_token` is accepted for `fill_token_id`.
    """
    if "fill_token" in options:
        options["fill_token_id"] = options.pop("fill_token")
    if isinstance(sampler, int) and not isinstance(sampler, bool):
        if beam_size is not None and beam_size != sampler:
            raise ValueError(f"give a sampler or a beam size, not both (got {sampler} and beam_size={beam_size}).")
        sampler, beam_size = None, sampler
    if search not in (None, "auto", "beam", "generate"):
        raise ValueError(f"search must be 'auto', 'beam' or 'generate', got {search!r}.")
    if sampler is not None:
        if beam_size is not None:
            raise ValueError(f"give a sampler or a beam size, not both (got {sampler!r} and beam_size={beam_size}).")
        return samplers.get(sampler, **options)
    beam_size = 1 if beam_size is None else int(beam_size)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}.")
    if beam_size == 1 and search != "beam":
        return samplers.GreedySampler(**options)
    if search == "generate":
        return samplers.GenerateBeamSampler(num_beams=beam_size, **options)
    return samplers.BeamSampler(num_beams=beam_size, **options)


def decode(model, encoder_outputs, encoder_mask, sampler, max_steps, num_samples=1, seeds=None,
           return_attention=False, *, special_ids, prompt_ids=None):
    """Runs `sampler` over the model's decoder from encoded images: the one place a decoding loop starts.

    The encoder's keys and values are projected once per image, and an image's k sequences (beams,
    samples) attend to them as one grouped query sequence (`captions_per_image`), not to k copies.

    Args:
        model: a `CaptionerBackbone` (its `decoder` is used).
        encoder_outputs: (B, N, R, d) from `model.encode`.
        encoder_mask: (B, R) bool or None.
        sampler: a `Sampler` (or anything `tfcaption.samplers.get` takes); None: greedy.
        max_steps: int, tokens generated at most (<eos> included).
        num_samples: sequences per image for random samplers.
        seeds: optional (B,) int seeds, one per image, for random samplers.
        return_attention: also record, along the returned sequences, the last decoder layer's
            cross-attention over the R image positions for every level it attends
            (`decoder.attention_levels`), averaged over heads, `attention` (B, k, T, levels, R), and for
            a decoder with gates the mean gate per level, `gates` (B, k, T, levels).
        special_ids: the tokenizer's start, end and padding ids (`SpecialIds`, a vocabulary or a
            `CaptionerPreprocessor`).
        prompt_ids: optional (P,) or per-image (B, P) int tensor, the start token then a prompt's pieces
            without an end token (`BertTokenizer.encode_prompt`): fed through the decoder before generation;
            `max_steps` counts the tokens generated after it.

    Returns:
        the sampler's dict: `tokens`, `log_probs` (B, k, T), `scores` (B, k), and the attention entries;
        with a prompt, T = P - 1 + `max_steps` and the prompt's pieces come first (zero log-probabilities
        and attention there).
    """
    sampler = samplers.get(sampler) or samplers.GreedySampler()
    ids, decoder = SpecialIds.of(special_ids), model.decoder
    k = sampler.num_sequences(num_samples)
    batch = tf.shape(encoder_outputs)[0]
    # Carried through the sampler's loops, not captured, when exporting full int8 (`loop_invariants`).
    encoder_kv = loop_invariants.carry(decoder.project_encoder(encoder_outputs))
    prompt_length = 1 if prompt_ids is None else _prompt_length(prompt_ids)
    cache = decoder.initial_cache(batch * k, prompt_length - 1 + max_steps)
    shapes = None
    if return_attention:
        levels, regions = decoder.attention_levels, encoder_outputs.shape[2] or tf.shape(encoder_outputs)[2]
        shapes = {"attention": (levels, regions)}
        if decoder.has_gates:
            shapes["gates"] = (levels,)

    def next(tokens, step, cache):
        kv = loop_invariants.current(encoder_kv)
        if not return_attention:
            return decoder.step(tokens, step, cache, kv, encoder_mask, captions_per_image=k)
        logits, cache, weights, gates = decoder.step(tokens, step, cache, kv, encoder_mask,
                                                     return_attention=True, captions_per_image=k)
        attention = {"attention": weights}
        if gates is not None:
            attention["gates"] = gates
        return logits, cache, attention

    return sampler(next, cache, batch, max_steps, start_token_id=ids.bos_id, end_token_id=ids.eos_id,
                   pad_token_id=ids.pad_id, num_samples=num_samples, seeds=seeds, attention_shapes=shapes,
                   prompt_ids=prompt_ids)


def _prompt_length(prompt_ids):
    """P, the static length of a (P,) or (B, P) prompt, or a one-line ValueError."""
    shape = tf.convert_to_tensor(prompt_ids).shape
    if shape.rank not in (1, 2) or shape[-1] is None or shape[-1] < 1:
        raise ValueError(f"prompt_ids must be a (P,) or (B, P) int tensor with a static P >= 1, got shape {shape}.")
    return int(shape[-1])


def check_prompt_fits(model, prompt_ids, max_steps):
    """A one-line ValueError where a prompt (`decode`'s `prompt_ids`, or None) and `max_steps` new tokens
    overflow the model's position table (callers check before tracing, where the error stays one line)."""
    if prompt_ids is not None and _prompt_length(prompt_ids) - 1 + max_steps > model.config.max_length:
        raise ValueError(f"the prompt ({_prompt_length(prompt_ids)} tokens with the start token) and {max_steps} new "
                         f"tokens exceed this model's {model.config.max_length} positions.")


def checked_max_steps(model, max_steps=None):
    """The caption length a decoding call runs: `max_steps` tokens generated, <eos> included (the one unit of
    every surface; see docs/guides/decoding.md#caption-length), None or 0 for the model's default
    (`max_length - 1`), or a ValueError outside 1..`model.config.max_length` (the position table's rows).

    Example:
    >>> class Model: config = type("Config", (), {"max_length": 7})
    >>> checked_max_steps(Model(), None), checked_max_steps(Model(), 3)
    (6, 3)
    """
    limit = model.config.max_length
    steps = max_steps or limit - 1
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= limit:
        raise ValueError(f"the caption length (tokens generated, <eos> included) must be an integer in 1..{limit} "
                         f"(this model's position table), got {max_steps!r}.")
    return int(steps)


def generate(model, image_inputs, sampler=None, max_steps=None, return_attention=False, *, special_ids,
             beam_size=None, seeds=None, search=None, prompt_ids=None, **options):
    """Encodes `image_inputs` once and decodes them with `sampler`.

    Args:
        model: a `CaptionerBackbone`.
        image_inputs: the model's image input (`model.input_key`), (B, ...).
        sampler: a `tfcaption.samplers.Sampler`, a name (`"greedy"`, `"beam"`, `"random"`, `"top_k"`,
            `"top_p"`, with `options` as its constructor arguments) or a config dict; None: greedy. An int
            is a beam size (`beam_size=` says the same: 1 greedy, k > 1 `BeamSampler(num_beams=k)`).
        max_steps: tokens generated at most, <eos> included (a caption that never ends is cut after that many
            words); None or 0: the model's `max_length - 1` (`checked_max_steps`).
        return_attention: add `mix_levels`'s `attention`, `level_attention` and (for a decoder with gates)
            `gates`, recorded along the returned caption (a beam's own ancestry).
        seeds: optional (B,) int seeds, one per image, for random samplers.
        special_ids: the tokenizer's start, end and padding ids (`SpecialIds`, a vocabulary or a
            `CaptionerPreprocessor`).
        prompt_ids: optional (P,) or (B, P) prompt, as `decode`'s: the returned tokens start with its
            pieces and `max_steps` counts the tokens after it (transformers' `max_new_tokens`).

    Returns:
        the best sequence per image: `tokens` (B, T), `log_probs` (B, T) (the model's per-token
        log-probabilities), `scores` (B,); for a `BeamSampler` also every beam, best first: `beam_tokens`
        (B, k, T), `beam_log_probs` (B, k, T) and `beam_scores` (B, k).
    """
    sampler, ids = as_sampler(sampler, beam_size, search, **options), SpecialIds.of(special_ids)
    max_steps = checked_max_steps(model, max_steps)
    encoder_outputs, encoder_mask = model.encode(image_inputs, training=False)
    check_prompt_fits(model, prompt_ids, max_steps)
    out = decode(model, encoder_outputs, encoder_mask, sampler, max_steps, seeds=seeds,
                 return_attention=return_attention, special_ids=ids, prompt_ids=prompt_ids)
    outputs = {"tokens": out["tokens"][:, 0], "log_probs": out["log_probs"][:, 0], "scores": out["scores"][:, 0]}
    if isinstance(sampler, (samplers.BeamSampler, samplers.GenerateBeamSampler)):
        outputs.update(beam_tokens=out["tokens"], beam_log_probs=out["log_probs"], beam_scores=out["scores"])
    if return_attention:
        gates = out["gates"][:, 0] if "gates" in out else None
        outputs.update(mix_levels(out["attention"][:, 0], gates, outputs["tokens"], ids.eos_id))
    return outputs


def sampler_key(sampler):
    """A hashable key of a sampler's class and config (two equal samplers share one compiled function)."""
    return type(sampler).__name__, json.dumps(sampler.get_config(), sort_keys=True)


class _Generator:
    """`generate` for one model, sampler and settings, as the callable a `compiled_generator` compiles.

    An object rather than a closure because TensorFlow counts traces per Python code object: every closure
    made in `compiled_generator` shares one, so the first traces of five different generators (samplers,
    lengths, models) read as "5 out of the last 5 calls ... triggered tf.function retracing". A callable
    object without `__code__` is counted on its own, so only a generator's real retraces count.
    """

    def __init__(self, model, sampler, max_steps, return_attention, special_ids):
        self.model, self.sampler, self.max_steps, self.return_attention = model, sampler, max_steps, return_attention
        self.special_ids = special_ids

    def __call__(self, image_inputs, seeds=None, prompt_ids=None):
        return generate(self.model, image_inputs, self.sampler, self.max_steps, return_attention=self.return_attention,
                        seeds=seeds, special_ids=self.special_ids, prompt_ids=prompt_ids)


# The model attribute holding its compiled generators. On the model, not in a module-level
# WeakKeyDictionary keyed by it: the generators reference the model, so such an entry would keep its key alive.
GENERATORS_ATTRIBUTE = "_tfcaption_generators"


def compiled_generator(model, sampler=None, max_steps=None, jit_compile=True, return_attention=False, *,
                       special_ids, beam_size=None, search=None, prompt_length=None, **options):
    """A `tf.function` (XLA-compiled by default) mapping image inputs (and optional per-image `seeds`, and
    `prompt_ids` as `generate`'s) to `generate`'s dict.

    Prompts of different lengths need different functions: give `prompt_length` (P, the start token
    included) for the function fed prompts of that length, since the shape relaxation that spares retracing
    for new batch sizes would otherwise make P unknown, and the decoding loop needs it static.

    One function per model, special ids, sampler config and settings, held by the model and reused across
    calls, so repeated evaluations (every epoch's validation, every `caption` call) trace and compile once per
    input shape, and generating with many samplers or lengths never triggers TensorFlow's retracing warning.
    `sampler`, `special_ids`, `beam_size`, `search` and `options` are as `generate`'s.
    """
    sampler, ids = as_sampler(sampler, beam_size, search, **options), SpecialIds.of(special_ids)
    max_steps = checked_max_steps(model, max_steps)
    key = (sampler_key(sampler), ids, max_steps, jit_compile, bool(return_attention), prompt_length)
    cache = model.__dict__.get(GENERATORS_ATTRIBUTE)
    if cache is None:
        cache = {}
        # object.__setattr__: Keras would otherwise track the dict (and its functions) as model state.
        object.__setattr__(model, GENERATORS_ATTRIBUTE, cache)
    if key not in cache:
        cache[key] = tf.function(_Generator(model, sampler, max_steps, bool(return_attention), ids),
                                 jit_compile=jit_compile, reduce_retracing=True)
    return cache[key]


def _text(values, count):
    if values is None:
        return [""] * count
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


def caption_batches(model, vocab, batches, sampler=None, max_steps=None, jit_compile=True, limit=None,
                    keep_beams=False, return_attention=False, pad_to=None, *, beam_size=None, search=None,
                    **options):
    """Captions every batch and detokenises on the host.

    Args:
        model: a `CaptionerBackbone`.
        vocab: its vocabulary (ids -> words happen here, outside the compiled function), whose special
            ids start, end and pad the captions.
        batches: an iterable of dicts with the model's input (`model.input_key`: pixels or region
            features), `image_id`, and optionally `captions` (references) and `scene` — an `eval_dataset`,
            or batches built in Python. A batch smaller than the first (or than `pad_to`) is padded to that
            size by repeating its last row (the padding is dropped), so the compiled shapes never change.
        sampler, max_steps, beam_size, search, **options: as `generate` (a name, a `Sampler`, or the
            `beam_size` shorthand).
        limit: stop after this many images.
        keep_beams: add every beam as numpy arrays: `beam_tokens` (k, T), `beam_scores` (k,),
            `beam_log_probs` (k, T) (k = 1 for greedy), and the best beam's `log_probs`.
        return_attention: add `attention` (T, P) and `gates` (T, N) or None, recorded along the caption
            returned (a beam's own ancestry), so they belong to `caption`.

    Returns:
        one dict per image in batch order: `image_id`, `caption`, `score`, `tokens` (list of ints, the
        whole row), `references` (list of str), `scene` (str), plus the optional arrays above.
    """
    generator = compiled_generator(model, sampler, max_steps, jit_compile=jit_compile,
                                   return_attention=return_attention, special_ids=vocab, beam_size=beam_size,
                                   search=search, **options)
    results, width = [], pad_to
    for batch in batches:
        inputs = np.asarray(batch[model.input_key])
        real = inputs.shape[0]
        width = max(width or real, real)
        if real < width:
            inputs = np.concatenate([inputs, np.repeat(inputs[-1:], width - real, axis=0)])
        outputs = {name: value.numpy()[:real] for name, value in generator(inputs).items()}
        ids = _text(batch["image_id"], real)
        scenes = _text(batch.get("scene"), real)
        references = batch.get("captions")
        references = references.numpy() if hasattr(references, "numpy") else references
        for i in range(real):
            refs = [] if references is None else [r for r in _text(np.atleast_1d(np.asarray(references[i])), 0) if r]
            tokens = outputs["tokens"][i]
            record = {"image_id": ids[i], "caption": vocab.decode(tokens.tolist()), "score": float(outputs["scores"][i]),
                      "tokens": tokens.tolist(), "references": refs, "scene": scenes[i]}
            if keep_beams:
                record["log_probs"] = outputs["log_probs"][i]
                for name in ("tokens", "scores", "log_probs"):
                    beams = outputs.get(f"beam_{name}")
                    record[f"beam_{name}"] = beams[i] if beams is not None else outputs[name][i][None]
            if return_attention:
                gates = outputs.get("gates")
                record.update(attention=outputs["attention"][i], gates=None if gates is None else gates[i])
            results.append(record)
            if limit and len(results) >= limit:
                return results
    return results


def display_image(image):
    """Decoded pixel values in [0, 255] -> uint8 RGB, the pixels the model saw."""
    return np.clip(np.round(np.asarray(image)), 0, 255).astype(np.uint8)


def caption_words(tokens, vocab_tokens, eos_id):
    """Generated words up to, not including, <eos> (one per attention row)."""
    words = []
    for token in tokens:
        if token == eos_id:
            break
        words.append(vocab_tokens[token])
    return words


def attention_results(captions, scores, tokens, attention, gates, images, grid, vocab_tokens, eos_id):
    """Per image: words, and their attention as (n, rows, cols) over a grid (prefix tokens such as a class
    token dropped and the rest renormalised) or (n, regions) without one; gates (n, levels) or None."""
    results = []
    for i, caption in enumerate(captions):
        words = caption_words(tokens[i].tolist(), vocab_tokens, eos_id)
        n = len(words)
        maps = np.asarray(attention[i][:n], np.float32)
        if grid is not None:
            rows, cols, prefix = grid
            maps = maps[:, prefix:]
            if prefix:
                maps = maps / np.maximum(maps.sum(-1, keepdims=True), 1e-12)
            maps = maps.reshape(n, rows, cols)
        results.append({
            "caption": caption,
            "score": float(scores[i]),
            "words": words,
            "attention": maps,
            "gates": None if gates is None else np.asarray(gates[i][:n], np.float32),
            "image": None if images is None else images[i],
        })
    return results
