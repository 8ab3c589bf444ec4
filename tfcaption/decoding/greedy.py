"""Batched greedy decoding with cached decoder keys and values, as a graph loop."""

import tensorflow as tf


def write_step(buffer, step, value, axis=1):
    """Returns `buffer` with index `step` along the time `axis` replaced by `value`.

    `value` has `buffer`'s shape without that axis. A one-hot select keeps
    every shape static, which XLA needs inside loops.
    """
    steps = buffer.shape[axis]
    column = tf.one_hot(step, steps, on_value=True, off_value=False, dtype=tf.bool)
    shape = [1] * len(buffer.shape)
    shape[axis] = steps
    column = tf.reshape(column, shape)
    return tf.where(column, tf.expand_dims(tf.cast(value, buffer.dtype), axis), buffer)


def greedy_search(model, encoder_outputs, encoder_mask, max_steps, return_attention=False, stop_early=True):
    """Picks the most probable word at every step.

    After <eos> a sequence writes <pad> with log-probability 0, matching
    `beam_search(..., beam_size=1)` token for token.

    Args:
        model: a `Captioner`.
        encoder_outputs: (B, N, R, d) from `model.encode`.
        encoder_mask: (B, R) bool or None.
        max_steps: int, tokens generated at most (<eos> included).
        return_attention: also return, per generated token, the last decoder
            layer's cross-attention over the R image positions for every
            level it attends (`decoder.attention_levels`: N for the meshed
            decoder, 1 for the transformer decoder), averaged over heads,
            (B, max_steps, levels, R), and, for a decoder with gates, the mean
            gate per level, (B, max_steps, levels).
        stop_early: end the loop once every sequence has emitted <eos>
            (the outputs are the same as running all steps).

    Returns:
        dict with `tokens` (B, max_steps) int32, `log_probs` (B, max_steps),
        `scores` (B,), and `attention` / `gates` when asked.
    """
    config = model.config
    decoder = model.decoder
    batch = tf.shape(encoder_outputs)[0]
    levels, regions = decoder.attention_levels, encoder_outputs.shape[2] or tf.shape(encoder_outputs)[2]
    with_gates = return_attention and decoder.has_gates
    encoder_kv = decoder.project_encoder(encoder_outputs)
    cache = decoder.initial_cache(batch, max_steps)

    state = {
        "tokens": tf.fill([batch], config.bos_id),
        "finished": tf.zeros([batch], tf.bool),
        "history": tf.fill([batch, max_steps], config.pad_id),
        "log_probs": tf.zeros([batch, max_steps], tf.float32),
    }
    if return_attention:
        state["attention"] = tf.zeros([batch, max_steps, levels, regions], tf.float32)
    if with_gates:
        state["gates"] = tf.zeros([batch, max_steps, levels], tf.float32)

    def body(step, cache, state):
        state = dict(state)
        if return_attention:
            logits, cache, weights, gates = decoder.step(
                state["tokens"], step, cache, encoder_kv, encoder_mask, return_attention=True
            )
            state["attention"] = write_step(state["attention"], step, weights)
            if with_gates:
                state["gates"] = write_step(state["gates"], step, gates)
        else:
            logits, cache = decoder.step(state["tokens"], step, cache, encoder_kv, encoder_mask)
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32))
        word = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        word_log_prob = tf.gather(log_probs, word[:, None], batch_dims=1)[:, 0]
        finished = state["finished"]
        word = tf.where(finished, config.pad_id, word)
        word_log_prob = tf.where(finished, 0.0, word_log_prob)
        state["history"] = write_step(state["history"], step, word)
        state["log_probs"] = write_step(state["log_probs"], step, word_log_prob)
        state["finished"] = tf.logical_or(finished, tf.equal(word, config.eos_id))
        state["tokens"] = word
        return step + 1, cache, state

    def cond(step, cache, state):
        running = step < max_steps
        if stop_early:
            running = tf.logical_and(running, tf.logical_not(tf.reduce_all(state["finished"])))
        return running

    _, _, state = tf.while_loop(cond, body, (tf.constant(0), cache, state), maximum_iterations=max_steps)
    result = {
        "tokens": state["history"],
        "log_probs": state["log_probs"],
        "scores": tf.reduce_sum(state["log_probs"], -1),
    }
    if return_attention:
        result["attention"] = state["attention"]
    if with_gates:
        result["gates"] = state["gates"]
    return result
