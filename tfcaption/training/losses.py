"""The teacher-forced loss: per-token cross-entropy with the padding left out."""

import tensorflow as tf


def masked_cross_entropy(targets, logits, pad_id, label_smoothing=0.0):
    """Per-token cross-entropy with the targets equal to `pad_id` (the tokenizer's) zeroed; returns (sum, token
    count)."""
    mask = tf.cast(tf.not_equal(targets, pad_id), tf.float32)
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        labels = tf.one_hot(targets, tf.shape(logits)[-1])
        losses = tf.nn.softmax_cross_entropy_with_logits(
            labels * (1.0 - label_smoothing) + label_smoothing / tf.cast(tf.shape(logits)[-1], tf.float32), logits
        )
    else:
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)
