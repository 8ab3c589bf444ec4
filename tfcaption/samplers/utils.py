"""Tensor helpers the samplers share: the step write, logit controls, filters and per-row randomness.

Every function keeps static shapes and uses ops XLA compiles, so a sampler's loop compiles under
`tf.function(jit_compile=True)`.
"""

import tensorflow as tf

from tfcaption.layers.large_negative import large_negative


def first_step_scores(batch_size, k):
    """float32 [B, k]: 0 for beam 0 and `large_negative()` for the others, a beam search's start (only beam 0
    is live at step 0, so the first top-k picks distinct words)."""
    return tf.tile(tf.concat([[0.0], tf.fill([k - 1], large_negative())], 0)[None], tf.stack([batch_size, 1]))


def write_step(buffer, step, value, axis=1):
    """Returns `buffer` with index `step` along the time `axis` replaced by `value`.

    `value` has `buffer`'s shape without that axis. A select on `range(steps) == step` keeps every shape
    static, which XLA needs inside loops (and, unlike a scalar one-hot, tf2onnx converts it).

    Example:
    >>> write_step(tf.zeros([2, 3], tf.int32), 1, tf.constant([7, 8])).numpy().tolist()
    [[0, 7, 0], [0, 8, 0]]
    """
    steps = buffer.shape[axis]
    column = tf.equal(tf.range(steps), tf.cast(step, tf.int32))
    shape = [1] * len(buffer.shape)
    shape[axis] = steps
    column = tf.reshape(column, shape)
    return tf.where(column, tf.expand_dims(tf.cast(value, buffer.dtype), axis), buffer)


def split_rows(tensor, k):
    """(B * k, ...) -> (B, k, ...), keeping every static dimension."""
    dims = [d if d is not None else tf.shape(tensor)[i] for i, d in enumerate(tensor.shape)][1:]
    out = tf.reshape(tensor, [-1, k] + dims)
    out.set_shape([None, k] + tensor.shape.as_list()[1:])
    return out


def caption_lengths(tokens, end_token_id):
    """Tokens up to and including the first end token (all of them if none), as float32."""
    before_end = tf.cumsum(tf.cast(tf.equal(tokens, end_token_id), tf.int32), axis=-1, exclusive=True) == 0
    return tf.reduce_sum(tf.cast(before_end, tf.float32), axis=-1)


def _scatter_flags(rows_tokens, flags, vocab_size):
    """(N, V) bool: True at (n, rows_tokens[n, j]) wherever flags[n, j]."""
    count = tf.shape(rows_tokens)[0]
    rows = tf.broadcast_to(tf.range(count)[:, None], tf.shape(rows_tokens))
    indices = tf.reshape(tf.stack([rows, tf.cast(rows_tokens, tf.int32)], axis=-1), [-1, 2])
    updates = tf.reshape(tf.cast(flags, tf.int32), [-1])
    marks = tf.tensor_scatter_nd_max(tf.zeros(tf.stack([count, vocab_size]), tf.int32), indices, updates)
    return marks > 0


def generated_tokens(history, step, vocab_size):
    """(N, V) bool: the tokens among `history[:, :step]` (N, T), the tokens generated so far."""
    steps = history.shape[1]
    done = tf.broadcast_to(tf.range(steps)[None] < step, tf.shape(history))
    return _scatter_flags(history, done, vocab_size)


def apply_repetition_penalty(logits, history, step, penalty):
    """Keskar et al.'s repetition penalty on the tokens generated so far, as transformers applies it.

    A generated token's logit is divided by `penalty` where it is positive and multiplied by it where it
    is negative (`penalty` > 1 makes repeats less likely); other logits are unchanged.

    Args:
        logits: (N, V) float32.
        history: (N, T) int, tokens written so far (positions >= `step` are ignored).
        step: scalar int, the index of the token being chosen.
        penalty: float > 0.
    """
    seen = generated_tokens(history, step, tf.shape(logits)[1])
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def repeated_ngram_tokens(history, step, ngram_size, vocab_size):
    """(N, V) bool: tokens that would complete an n-gram already in `history[:, :step]`.

    With n = `ngram_size`, a token w is banned at `step` where the last n - 1 generated tokens followed by
    w occur earlier in the caption (n = 1 bans every token already generated).
    """
    steps = history.shape[1]
    n = int(ngram_size)
    count = tf.shape(history)[0]
    if steps < n:
        return tf.zeros(tf.stack([count, vocab_size]), tf.bool)
    windows = steps - n + 1
    grams = tf.stack([history[:, i:i + windows] for i in range(n)], axis=-1)  # (N, W, n)
    complete = tf.range(windows) + n - 1 < step  # (W,): the window lies in the generated tokens
    if n > 1:
        last = tf.clip_by_value(step - n + 1 + tf.range(n - 1), 0, steps - 1)
        prefix = tf.gather(history, last, axis=1)  # (N, n - 1)
        match = tf.reduce_all(tf.equal(grams[..., :-1], prefix[:, None, :]), axis=-1)  # (N, W)
        match = tf.logical_and(match, complete[None])
    else:
        match = tf.broadcast_to(complete[None], tf.shape(grams)[:2])
    return _scatter_flags(grams[..., -1], match, vocab_size)


def top_k_logits(logits, k):
    """`logits` with every token below the k-th largest set to `large_negative()` (ties with the k-th are kept)."""
    k = min(int(k), logits.shape[-1]) if logits.shape[-1] is not None else int(k)
    kth = tf.math.top_k(logits, k=k).values[:, -1:]
    return tf.where(logits >= kth, logits, large_negative())


def top_p_logits(logits, p):
    """`logits` outside the nucleus set to `large_negative()` (Holtzman et al.).

    The nucleus is the smallest set of most probable tokens whose probabilities sum to at least `p`: a
    token is kept where the probability of the tokens strictly more probable than it is below `p`, and
    the most probable token is always kept (p -> 0 keeps only it, as greedy picks).
    """
    probs = tf.nn.softmax(logits)
    ranked = tf.math.top_k(probs, k=logits.shape[-1] or tf.shape(logits)[-1]).values  # (N, V) descending
    before = tf.cumsum(ranked, axis=-1, exclusive=True)
    keep = tf.logical_or(before < p, tf.range(tf.shape(ranked)[-1])[None] == 0)
    threshold = tf.reduce_min(tf.where(keep, ranked, 2.0), axis=-1, keepdims=True)
    return tf.where(probs >= threshold, logits, large_negative())


# ------------------------------------------------------------------------------ per-row randomness
# A counter-based hash (Wellons' "lowbias32" mixer) gives each (row key, step, token) its own uniform
# number, so a row's draws depend on its seed and key alone, never on the batch it is decoded in.

_MASK32 = 0xFFFFFFFF


def _u32(value):
    return tf.constant(value & _MASK32, tf.uint32)


def _shift(x, bits):
    return tf.bitwise.right_shift(x, tf.constant(bits, tf.uint32))


def mix32(x):
    """A bijective avalanche mix of uint32 values."""
    x = tf.bitwise.bitwise_xor(x, _shift(x, 16)) * _u32(0x7FEB352D)
    x = tf.bitwise.bitwise_xor(x, _shift(x, 15)) * _u32(0x846CA68B)
    return tf.bitwise.bitwise_xor(x, _shift(x, 16))


def to_key(value):
    """uint32 keys from integer tensors of any width (the high 32 bits of an int64 are folded in)."""
    value = tf.convert_to_tensor(value)
    if value.dtype == tf.uint32:
        return value
    if value.dtype == tf.int32:
        # The int64 path's key without 64-bit bitwise ops (LiteRT has none): an int32's high 32 bits are all
        # zeros or, for a negative value, all ones.
        high = tf.where(value < 0, _u32(_MASK32), _u32(0))
        return mix32(tf.bitwise.bitwise_xor(tf.cast(value, tf.uint32), mix32(high + _u32(0x9E3779B9))))
    value = tf.cast(value, tf.int64)
    low = tf.cast(tf.bitwise.bitwise_and(value, _MASK32), tf.uint32)
    high = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(value, 32), _MASK32), tf.uint32)
    return mix32(tf.bitwise.bitwise_xor(low, mix32(high + _u32(0x9E3779B9))))


def combine_keys(key, other):
    """One uint32 key from two (broadcasting), order-sensitive."""
    return mix32(tf.bitwise.bitwise_xor(to_key(key), mix32(to_key(other) + _u32(0x632BE5AB))))


def combine_seeds(*parts):
    """An int64 seed in [0, 2**32) from integer parts (ints or tensors, broadcasting): e.g. a base seed,
    a training step and a row index, for `Sampler(seeds=...)`."""
    key = to_key(parts[0])
    for part in parts[1:]:
        key = combine_keys(key, part)
    return tf.cast(key, tf.int64)


def row_uniform(row_keys, step, vocab_size):
    """(N, V) float32 uniform numbers in (0, 1): one per (row key, step, token)."""
    step_key = combine_keys(row_keys, tf.cast(step, tf.int32))  # (N,)
    tokens = mix32(tf.cast(tf.range(vocab_size), tf.uint32) * _u32(0x2545F491) + _u32(0x68E31DA4))  # (V,)
    bits = mix32(tf.bitwise.bitwise_xor(step_key[:, None], tokens[None, :]))
    return (tf.cast(_shift(bits, 8), tf.float32) + 0.5) * (1.0 / (1 << 24))


def gumbel_noise(row_keys, step, vocab_size):
    """(N, V) standard Gumbel noise: argmax(logits + noise) is a draw from softmax(logits)."""
    return -tf.math.log(-tf.math.log(row_uniform(row_keys, step, vocab_size)))
