"""Batched beam search with cached decoder keys and values, as a graph loop."""

import tensorflow as tf

from tfcaption.decoding.greedy import write_step

# Score of a candidate that must never be chosen (a finished beam's other
# continuations, the empty beams at step 0). Finite, so sums stay finite.
NEG_INF = -1e9


def caption_lengths(tokens, eos_id):
    """Tokens up to and including the first <eos> (all of them if none), as float32."""
    before_eos = tf.cumsum(tf.cast(tf.equal(tokens, eos_id), tf.int32), axis=-1, exclusive=True) == 0
    return tf.reduce_sum(tf.cast(before_eos, tf.float32), axis=-1)


def _gather_beams(tensor, flat_index):
    # tf.gather loses the static batch size; loop variables must keep their shape.
    gathered = tf.gather(tensor, flat_index, axis=0)
    gathered.set_shape(tensor.shape)
    return gathered


def beam_search(
    model,
    encoder_outputs,
    encoder_mask,
    beam_size,
    max_steps,
    fill_token=None,
    length_penalty=0.0,
    stop_early=True,
):
    """Beam search over a batch, with the semantics of the M2 authors' code.

    Score = sum of token log-probabilities. At step 0 the top-k of the first
    distribution seed the beams; each step expands every beam by every word
    and keeps the top k of the k*V candidates per image. A beam that emitted
    <eos> keeps its slot and score: its only surviving continuation is
    `fill_token` with log-probability 0 (the authors' code writes 0, i.e.
    <unk>, there; the default here writes <pad>). Beams come back sorted by
    score. With `stop_early` the loop ends as soon as every beam has finished,
    which returns exactly what running all `max_steps` would (finished beams
    no longer change); `stop_early=False` runs the fixed number of steps.

    `length_penalty` > 0 re-ranks the final beams by
    `score / ((5 + length) / 6) ** length_penalty` (Wu et al., 2016); 0 (the
    default) ranks by the raw sum, as released.

    Args:
        model: a `Captioner` (its `decoder` and `config` are used).
        encoder_outputs: (B, N, R, d) from `model.encode`.
        encoder_mask: (B, R) bool or None.
        beam_size: int k.
        max_steps: int, tokens generated at most (<eos> included).
        fill_token: token written after <eos>; defaults to the pad id.

    Returns:
        dict with `tokens` (B, k, max_steps) int32, `log_probs` (B, k,
        max_steps) float32 per-token log-probabilities (0 after <eos>), and
        `scores` (B, k) float32, best beam first.
    """
    config = model.config
    decoder = model.decoder
    eos = config.eos_id
    fill = config.pad_id if fill_token is None else fill_token
    k = beam_size
    batch = tf.shape(encoder_outputs)[0]
    flat = batch * k

    # Keys and values of the encoder outputs once per image: an image's k beams attend to them as one
    # grouped query sequence (`captions_per_image`), not to k copies.
    encoder_kv = decoder.project_encoder(encoder_outputs)
    cache = decoder.initial_cache(flat, max_steps)
    vocab = config.vocab_size

    # Only beam 0 is live at step 0, so the first top-k picks distinct words.
    scores = tf.tile(tf.concat([[0.0], tf.fill([k - 1], NEG_INF)], 0)[None], [batch, 1])
    tokens = tf.fill([flat], config.bos_id)
    finished = tf.zeros([batch, k], tf.bool)
    history = tf.fill([batch, k, max_steps], fill)
    history_log_probs = tf.zeros([batch, k, max_steps], tf.float32)
    fill_row = tf.one_hot(fill, vocab, on_value=0.0, off_value=NEG_INF)

    def body(step, tokens, cache, scores, finished, history, history_log_probs):
        logits, cache = decoder.step(tokens, step, cache, encoder_kv, encoder_mask, captions_per_image=k)
        log_probs = tf.reshape(tf.nn.log_softmax(tf.cast(logits, tf.float32)), [batch, k, vocab])
        word_log_probs = tf.where(finished[..., None], 0.0, log_probs)
        candidates = tf.where(
            finished[..., None], scores[..., None] + fill_row, scores[..., None] + log_probs
        )
        top_scores, top_index = tf.math.top_k(tf.reshape(candidates, [batch, k * vocab]), k=k)
        beam = top_index // vocab
        word = top_index % vocab
        flat_index = tf.reshape(beam + tf.range(batch)[:, None] * k, [-1])
        cache = [(_gather_beams(ck, flat_index), _gather_beams(cv, flat_index)) for ck, cv in cache]
        history = tf.gather(history, beam, batch_dims=1)
        history_log_probs = tf.gather(history_log_probs, beam, batch_dims=1)
        chosen_log_probs = tf.gather(
            tf.gather(word_log_probs, beam, batch_dims=1), word[..., None], batch_dims=2
        )[..., 0]
        history = write_step(history, step, word, axis=2)
        history_log_probs = write_step(history_log_probs, step, chosen_log_probs, axis=2)
        finished = tf.logical_or(tf.gather(finished, beam, batch_dims=1), tf.equal(word, eos))
        return step + 1, tf.reshape(word, [-1]), cache, top_scores, finished, history, history_log_probs

    def cond(step, tokens, cache, scores, finished, history, history_log_probs):
        running = step < max_steps
        if stop_early:
            running = tf.logical_and(running, tf.logical_not(tf.reduce_all(finished)))
        return running

    _, _, _, scores, finished, history, history_log_probs = tf.while_loop(
        cond, body, (tf.constant(0), tokens, cache, scores, finished, history, history_log_probs),
        maximum_iterations=max_steps,
    )
    if length_penalty:
        lengths = caption_lengths(history, eos)
        ranking = scores / tf.pow((5.0 + lengths) / 6.0, length_penalty)
        order = tf.argsort(ranking, axis=-1, direction="DESCENDING", stable=True)
        scores = tf.gather(scores, order, batch_dims=1)
        history = tf.gather(history, order, batch_dims=1)
        history_log_probs = tf.gather(history_log_probs, order, batch_dims=1)
    return {"tokens": history, "log_probs": history_log_probs, "scores": scores}
