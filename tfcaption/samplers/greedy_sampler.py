"""Greedy decoding: the most probable token at every step."""

import keras
import tensorflow as tf

from tfcaption.samplers.sampler import Sampler


@keras.saving.register_keras_serializable(package="tfcaption")
class GreedySampler(Sampler):
    """Picks the most probable token (after the logit controls) at every step.

    After the end token a sequence writes the pad token with log-probability 0, so its tokens equal
    `BeamSampler(num_beams=1)`'s. Takes every `Sampler` argument (temperature changes nothing here).

    Example:
    >>> import tfcaption.samplers as samplers
    >>> sampler = samplers.GreedySampler(no_repeat_ngram_size=2)
    >>> samplers.get("greedy").get_config()["temperature"]
    1.0
    """

    def get_next_token(self, logits, noise=None):
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
