"""The one captioning path: image inputs (pixels or region features) -> token ids -> caption strings.

Every caller decodes through here: evaluation and per-epoch validation, `tfcaption.load(...)`,
region-feature captioning, the SavedModel export and the benchmarks.

- `generate` is the graph part: encode once, greedy (beam 1) or beam search, and, when asked, the
  attention of each generated word mixed over the encoder levels (`mix_levels`, the one place that
  mixing is computed, for inference and export alike).
- `compiled_generator` wraps it in a `tf.function` (XLA by default), one per model and settings.
- `caption_batches` is the host loop: it feeds batches to the compiled generator and detokenises.
  Strings never enter the compiled function.
- `attention_results` turns recorded attention into per-word maps over the token grid (class tokens
  dropped), for `tfcaption.load(...).caption_with_attention` and TensorBoard's validation figures.
"""

import weakref

import numpy as np
import tensorflow as tf

from tfcaption.decoding.beam_search import beam_search
from tfcaption.decoding.greedy import greedy_search


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


def generate(model, image_inputs, beam_size=1, max_steps=None, return_attention=False, search="auto", **options):
    """Encodes `image_inputs` once and decodes them.

    Beam size 1 runs greedy search (cheaper, identical tokens) unless `search="beam"` (the released M2
    loop is a beam search, and its reference options apply only there). Returns the best sequence per image:
    `tokens` (B, T), `log_probs` (B, T), `scores` (B,); with beam_size > 1 also `beam_tokens` (B, k, T),
    `beam_log_probs` (B, k, T) and `beam_scores` (B, k). `return_attention` (greedy only: the attention is
    recorded along the greedy path) adds `mix_levels`'s `attention`, `level_attention` and (for a decoder
    with gates) `gates`.
    Extra `options` go to the search (e.g. `length_penalty`, `stop_early`, `fill_token`).
    """
    max_steps = max_steps or model.config.max_length - 1
    encoder_outputs, encoder_mask = model.encode(image_inputs, training=False)
    if return_attention:
        if beam_size != 1:
            raise ValueError("attention maps are recorded along the greedy path: use beam_size=1.")
        outputs = greedy_search(model, encoder_outputs, encoder_mask, max_steps, return_attention=True, **options)
        outputs.update(mix_levels(outputs.pop("attention"), outputs.pop("gates", None), outputs["tokens"],
                                  model.config.eos_id))
        return outputs
    if search not in ("auto", "beam"):
        raise ValueError(f"search must be 'auto' or 'beam', got {search!r}.")
    if beam_size == 1 and search == "auto":
        return greedy_search(model, encoder_outputs, encoder_mask, max_steps, **options)
    beams = beam_search(model, encoder_outputs, encoder_mask, beam_size, max_steps, **options)
    return {
        "tokens": beams["tokens"][:, 0],
        "log_probs": beams["log_probs"][:, 0],
        "scores": beams["scores"][:, 0],
        "beam_tokens": beams["tokens"],
        "beam_log_probs": beams["log_probs"],
        "beam_scores": beams["scores"],
    }


_GENERATORS = weakref.WeakKeyDictionary()


def compiled_generator(model, beam_size=1, max_steps=None, jit_compile=True, **options):
    """A `tf.function` (XLA-compiled by default) mapping image inputs to `generate`'s dict.

    One function per model and settings, reused across calls, so repeated evaluations (every epoch's
    validation, every `caption` call) trace and compile once.
    """
    key = (beam_size, max_steps, jit_compile, tuple(sorted(options.items())))
    cache = _GENERATORS.setdefault(model, {})
    if key not in cache:
        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def run(image_inputs):
            return generate(model, image_inputs, beam_size, max_steps, **options)

        cache[key] = run
    return cache[key]


def _text(values, count):
    if values is None:
        return [""] * count
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1)]


def caption_batches(model, vocab, batches, beam_size=1, max_steps=None, jit_compile=True, limit=None,
                    keep_beams=False, return_attention=False, pad_to=None, **options):
    """Captions every batch and detokenises on the host.

    Args:
        model: a `Captioner`.
        vocab: its vocabulary (ids -> words happen here, outside the compiled function).
        batches: an iterable of dicts with the model's input (`model.input_key`: pixels or region
            features), `image_id`, and optionally `captions` (references) and `scene` — an `eval_dataset`,
            or batches built in Python. A batch smaller than the first (or than `pad_to`) is padded to that
            size by repeating its last row (the padding is dropped), so the compiled shapes never change.
        beam_size, max_steps, **options: as `generate`.
        limit: stop after this many images.
        keep_beams: add every beam as numpy arrays: `beam_tokens` (k, T), `beam_scores` (k,),
            `beam_log_probs` (k, T) (k = 1 for greedy), and the best beam's `log_probs`.
        return_attention: add `tokens` (T,), `attention` (T, P), `gates` (T, N) or None (greedy).

    Returns:
        one dict per image in batch order: `image_id`, `caption`, `score`, `tokens` (list of ints, the
        whole row), `references` (list of str), `scene` (str), plus the optional arrays above.
    """
    generator = compiled_generator(model, beam_size, max_steps, jit_compile=jit_compile,
                                   return_attention=return_attention, **options)
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
