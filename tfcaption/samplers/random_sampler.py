"""Random sampling: a draw from the whole (tempered) distribution."""

import keras
import tensorflow as tf

from tfcaption.samplers.sampler import Sampler


@keras.saving.register_keras_serializable(package="tfcaption")
class RandomSampler(Sampler):
    """Draws each token from softmax(logits / temperature) (after the logit controls).

    Draws are stateless and per row: sequence j of image b uses the seed (the call's `seeds[b]`, else
    `seed`) and j, so a seed gives an image the same captions whatever batch it is in, and an image's
    `num_samples` sequences differ. A draw is argmax(logits + Gumbel noise), an exact categorical draw.

    Args:
        **kwargs: `Sampler`'s arguments (`temperature`, `seed`, logit controls).

    Example:
    >>> import tfcaption.samplers as samplers
    >>> sampler = samplers.RandomSampler(temperature=0.7, seed=1)
    >>> samplers.get("random").random
    True
    """

    random = True

    def get_next_token(self, logits, noise=None):
        return tf.argmax(logits + noise, axis=-1, output_type=tf.int32)
