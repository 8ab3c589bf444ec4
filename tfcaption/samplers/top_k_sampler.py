"""Top-k sampling: a draw among the k most probable tokens."""

import keras
import tensorflow as tf

from tfcaption.samplers import utils
from tfcaption.samplers.sampler import Sampler


@keras.saving.register_keras_serializable(package="tfcaption")
class TopKSampler(Sampler):
    """Draws each token among the `k` most probable ones, renormalised (Fan et al., 2018).

    k = 1 is greedy decoding. Draws are stateless and per row, as `RandomSampler`'s.

    Args:
        k: int >= 1.
        **kwargs: `Sampler`'s arguments.

    Example:
    >>> import tfcaption.samplers as samplers
    >>> samplers.TopKSampler(k=5, temperature=0.8, seed=3).k
    5

    Reference:
        Fan et al., "Hierarchical Neural Story Generation", ACL 2018.
    """

    random = True

    def __init__(self, k=5, **kwargs):
        if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"k must be an int >= 1, got {k!r}.")
        super().__init__(**kwargs)
        self.k = int(k)

    def get_next_token(self, logits, noise=None):
        return tf.argmax(utils.top_k_logits(logits, self.k) + noise, axis=-1, output_type=tf.int32)

    def get_config(self):
        return {"k": self.k, **super().get_config()}
