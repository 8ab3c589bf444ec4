"""The logit controls and filters against direct numpy on small random logits, and the per-row draws."""

import numpy as np
import pytest
import tensorflow as tf

from tfcaption.layers.large_negative import LARGE_NEGATIVE
from tfcaption.samplers import utils


def _logits(seed, rows=5, vocab=11):
    return np.random.default_rng(seed).normal(0, 2, (rows, vocab)).astype(np.float32)


def _history(seed, rows=5, steps=9, vocab=11):
    return np.random.default_rng(seed).integers(0, 4, (rows, steps)).astype(np.int32)  # few ids: many repeats


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_numpy(penalty):
    logits, history, step = _logits(0), _history(1), 6
    expected = logits.copy()
    for row in range(len(logits)):
        for token in set(history[row, :step].tolist()):
            value = logits[row, token]
            expected[row, token] = value / penalty if value > 0 else value * penalty
    out = tf.function(utils.apply_repetition_penalty, jit_compile=True)(logits, history, step, penalty)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_repeated_ngram_tokens_match_numpy(n):
    history, vocab = _history(2), 11
    for step in range(history.shape[1] + 1):
        expected = np.zeros((len(history), vocab), bool)
        for row in range(len(history)):
            done = history[row, :step].tolist()
            prefix = done[len(done) - n + 1:] if n > 1 else []
            for start in range(len(done) - n + 1):
                if done[start:start + n - 1] == prefix:
                    expected[row, done[start + n - 1]] = True
        out = utils.repeated_ngram_tokens(tf.constant(history), tf.constant(step), n, vocab)
        np.testing.assert_array_equal(out.numpy(), expected, err_msg=f"step {step}")


@pytest.mark.parametrize("p", [1e-6, 0.3, 0.75, 0.95, 1.0])
def test_top_p_filter_matches_numpy(p):
    logits = _logits(3)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = np.zeros_like(logits, bool)
    for row in range(len(logits)):
        order = np.argsort(-probs[row])
        before = np.concatenate([[0.0], np.cumsum(probs[row][order])[:-1]])
        kept = order[(before < p) | (np.arange(len(order)) == 0)]
        expected[row, kept] = True
    out = tf.function(utils.top_p_logits, jit_compile=True)(logits, p).numpy()
    np.testing.assert_array_equal(out > LARGE_NEGATIVE / 2, expected)
    np.testing.assert_array_equal(out[expected], logits[expected])


@pytest.mark.parametrize("k", [1, 3, 11])
def test_top_k_filter_matches_numpy(k):
    logits = _logits(4)
    kept = utils.top_k_logits(tf.constant(logits), k).numpy() > LARGE_NEGATIVE / 2
    expected = np.zeros_like(kept)
    np.put_along_axis(expected, np.argsort(-logits, -1)[:, :k], True, -1)
    np.testing.assert_array_equal(kept, expected)


def test_row_draws_depend_on_the_row_key_only_and_are_uniform():
    keys = utils.to_key(tf.constant([5, 6, 5], tf.int64))
    u = utils.row_uniform(keys, 3, 1000).numpy()
    np.testing.assert_array_equal(u[0], u[2])  # same key, same step: same numbers
    assert not np.array_equal(u[0], u[1])
    assert not np.array_equal(u[0], utils.row_uniform(keys, 4, 1000).numpy()[0])  # another step
    assert ((u > 0) & (u < 1)).all()
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.01
    # Compiled, the same numbers.
    np.testing.assert_array_equal(tf.function(utils.row_uniform, jit_compile=True)(keys, 3, 1000).numpy(), u)


def test_gumbel_max_draws_follow_the_softmax():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    keys = utils.combine_keys(tf.constant(9, tf.int64), tf.range(20000, dtype=tf.int64))
    draws = tf.argmax(logits[None] + utils.gumbel_noise(keys, 0, 4), axis=-1).numpy()
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    np.testing.assert_allclose(frequencies, np.exp(logits), atol=0.015)
