"""Top-p (nucleus) sampling: a draw among the most probable tokens that cover probability p."""

import keras
import tensorflow as tf

from tfcaption.samplers import utils
from tfcaption.samplers.sampler import Sampler


@keras.saving.register_keras_serializable(package="tfcaption")
class TopPSampler(Sampler):
    """Draws each token from the nucleus: the smallest set of most probable tokens whose probability sums
    to at least `p`, renormalised (`utils.top_p_logits`).

    p -> 0 keeps only the most probable token (greedy); p = 1 is `RandomSampler`. Draws are stateless and
    per row, as `RandomSampler`'s.

    Args:
        p: float in (0, 1].
        k: int or None. If set, only the `k` most probable tokens are considered and the nucleus is taken
            among them (their probabilities renormalised).
        **kwargs: `Sampler`'s arguments.

    Example:
    >>> import tfcaption.samplers as samplers
    >>> samplers.get("top_p").p
    0.9

    Reference:
        Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020.
    """

    random = True

    def __init__(self, p=0.9, k=None, **kwargs):
        if not (isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1):
            raise ValueError(f"p must be a number in (0, 1], got {p!r}.")
        if k is not None and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
            raise ValueError(f"k must be an int >= 1 or None, got {k!r}.")
        super().__init__(**kwargs)
        self.p = float(p)
        self.k = None if k is None else int(k)

    def get_next_token(self, logits, noise=None):
        if self.k is not None:
            logits = utils.top_k_logits(logits, self.k)
        return tf.argmax(utils.top_p_logits(logits, self.p) + noise, axis=-1, output_type=tf.int32)

    def get_config(self):
        return {"p": self.p, "k": self.k, **super().get_config()}
