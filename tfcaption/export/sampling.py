"""The export's `sample` signature: one compiled program for every mix of per-request sampling settings.

Each row (image) of a call carries its own settings, so requests with different settings share one call:

- `temperature` (float32 [B]): logits are divided by it; 0 is greedy (the most probable token, no draw).
- `top_k` (int32 [B]): draw among the k most probable tokens (ties with the k-th kept); 0 is off.
- `top_p` (float32 [B], in (0, 1]): draw from the nucleus (`tfcaption.samplers.utils.top_p_logits`),
  taken after top-k as `TopPSampler(k=...)` does; 1 is off.
- `seed` (int64 [B]): the row's draws depend only on it (and the step and token), never on the batch, so
  a seed gives an image the same caption alone or beside other rows (the samplers' per-row keys).
- `max_length` (int32 [B], in [0, max_steps]): tokens generated at most, <eos> included, the unit of
  `generate`'s `max_length` and the export's `max_steps` (docs/guides/decoding.md#caption-length): a row
  that has not drawn <eos> within them is cut there, after `max_length` words; 0 is off: the export's
  `max_steps` cuts the caption, as it cuts `serving_default`'s.

`checked_settings` fails the call with InvalidArgumentError naming each bad row (`top_p[2]: ...`), the
form the image decoder's errors take, so a batching server can fail only the request that sent it.
"""

import tensorflow as tf

from tfcaption.layers.large_negative import large_negative
from tfcaption.samplers import utils
from tfcaption.samplers.sampler import Sampler

# The sampling signature's settings inputs, in the order they are documented (image input first).
SETTINGS = (
    tf.TensorSpec([None], tf.float32, name="temperature"),
    tf.TensorSpec([None], tf.int32, name="top_k"),
    tf.TensorSpec([None], tf.float32, name="top_p"),
    tf.TensorSpec([None], tf.int64, name="seed"),
    tf.TensorSpec([None], tf.int32, name="max_length"),
)
SETTING_NAMES = tuple(spec.name for spec in SETTINGS)


class PerRowSampler(Sampler):
    """A random sampler whose temperature, top-k, top-p and length limit are (B,) tensors, one per image.

    Row b draws `argmax(filtered(logits / temperature[b]) + noise)`, top-k then top-p, with the Gumbel
    noise of its own seed; a row with temperature 0 takes the argmax without noise (greedy), so
    `top_k = 1` and temperature 0 both give greedy decoding's tokens. The settings must already be
    checked (`checked_settings`). Only what the export needs: not serialisable, one sequence per image.

    Args:
        temperature: (B,) float32 >= 0.
        top_k: (B,) int32 >= 0 (0: off).
        top_p: (B,) float32 in (0, 1] (1: off).
        max_length: (B,) int32 >= 1: the row's tokens generated at most, <eos> included; a row without
            <eos> by then is cut after `max_length` tokens, as the loop's `max_steps` cuts every row (a value
            above the loop's steps is no limit).
        **kwargs: `Sampler`'s logit controls.
    """

    random = True

    def __init__(self, temperature, top_k, top_p, max_length, **kwargs):
        super().__init__(**kwargs)
        self.row_temperature = tf.cast(temperature, tf.float32)
        self.row_top_k = tf.cast(top_k, tf.int32)
        self.row_top_p = tf.cast(top_p, tf.float32)
        self.row_max_length = tf.cast(max_length, tf.int32)

    def num_sequences(self, num_samples=1):
        if int(num_samples) != 1:
            raise ValueError("PerRowSampler decodes one sequence per image.")
        return 1

    def process_logits(self, logits, history, step, end_token_id, prefix=None):
        logits = super().process_logits(logits, history, step, end_token_id, prefix)
        greedy = self.row_temperature <= 0.0
        logits = logits / tf.where(greedy, 1.0, self.row_temperature)[:, None]
        vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
        is_end = tf.equal(tf.range(vocab), end_token_id)[None]  # (1, V)
        # <eos> one step past the row's length ends the row, so the loop can stop early; `__call__` cuts
        # that step and any later one, as max_steps would have.
        past = (step >= self.row_max_length)[:, None]  # (N, 1)
        return tf.where(tf.logical_and(past, tf.logical_not(is_end)), large_negative(), logits)

    def __call__(self, next, cache, batch_size, max_steps, **kwargs):
        result = super().__call__(next, cache, batch_size, max_steps, **kwargs)
        # A prompt's pieces come first (T = P - 1 + max_steps); the row's length counts the tokens after them.
        steps = result["tokens"].shape[-1]
        keep = tf.range(steps)[None, None, :] < (steps - int(max_steps)) + self.row_max_length[:, None, None]
        result["tokens"] = tf.where(keep, result["tokens"], kwargs["pad_token_id"])
        result["log_probs"] = tf.where(keep, result["log_probs"], 0.0)
        result["scores"] = tf.reduce_sum(result["log_probs"], axis=-1)
        return result

    def get_next_token(self, logits, noise=None):
        vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
        ranked = tf.math.top_k(logits, k=vocab).values  # (N, V) descending
        k = tf.where(self.row_top_k > 0, tf.minimum(self.row_top_k, vocab), vocab)
        kth = tf.gather(ranked, k[:, None] - 1, batch_dims=1)  # (N, 1)
        logits = tf.where(logits >= kth, logits, large_negative())
        nucleus = utils.top_p_logits(logits, self.row_top_p[:, None])
        logits = tf.where((self.row_top_p < 1.0)[:, None], nucleus, logits)
        greedy = (self.row_temperature <= 0.0)[:, None]
        return tf.argmax(logits + tf.where(greedy, 0.0, noise), axis=-1, output_type=tf.int32)


def _bad_rows(name, bad, values, rule):
    """A message naming every bad row of one setting: `name[i]: <rule>, got <value>` joined by "; "."""
    index = tf.where(bad)[:, 0]
    got = tf.strings.as_string(tf.gather(values, index))
    return tf.strings.reduce_join(
        tf.strings.join([f"{name}[", tf.strings.as_string(index), f"]: {rule}, got ", got]), separator="; ")


def checked_settings(batch_size, temperature, top_k, top_p, seed, max_length, max_steps):
    """The settings unchanged (`max_length` 0, off, replaced by `max_steps + 1`, a step never reached), or
    InvalidArgumentError naming each bad row and, where a setting's length is not the batch's, that setting."""
    settings = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed, "max_length": max_length}
    sizes = [tf.debugging.assert_equal(tf.shape(value)[0], batch_size,
                                       message=f"{name} must hold one value per image (as many as the images)")
             for name, value in settings.items()]
    with tf.control_dependencies(sizes):
        rules = [
            ("temperature", tf.logical_not(tf.logical_and(tf.math.is_finite(temperature), temperature >= 0.0)),
             temperature, "must be a number >= 0 (0: greedy)"),
            ("top_k", top_k < 0, top_k, "must be an int >= 0 (0: off)"),
            ("top_p", tf.logical_not(tf.logical_and(top_p > 0.0, top_p <= 1.0)), top_p,
             "must be in (0, 1] (1: off)"),
            ("max_length", tf.logical_or(max_length < 0, max_length > max_steps), max_length,
             f"must be in [0, {max_steps}] (0: off, the export's max_steps)"),
        ]
        bad_any = tf.reduce_any(tf.stack([tf.reduce_any(bad) for _, bad, _, _ in rules]))
        messages = tf.stack([_bad_rows(name, bad, values, rule) for name, bad, values, rule in rules])
        message = tf.strings.reduce_join(tf.boolean_mask(messages, tf.strings.length(messages) > 0), separator="; ")
        check = tf.debugging.Assert(tf.logical_not(bad_any), [message])
    with tf.control_dependencies([check]):
        max_length = tf.where(max_length == 0, tf.constant(max_steps + 1, tf.int32), max_length)
        return (tf.identity(temperature), tf.identity(top_k), tf.identity(top_p), tf.identity(seed),
                tf.identity(max_length))


def settings_of(sampler):
    """The `sample` signature's settings for a sampler: a dict of `temperature`, `top_k`, `top_p`, `seed`
    (None: the sampler draws a new seed per call) and `max_length` (0), or ValueError for what the signature
    cannot do (beam search, logit controls).

    Example:
    >>> import tfcaption.samplers as samplers
    >>> settings_of(samplers.TopPSampler(p=0.8, k=20, temperature=0.7, seed=3))
    {'temperature': 0.7, 'top_k': 20, 'top_p': 0.8, 'seed': 3, 'max_length': 0}
    >>> settings_of("greedy")["temperature"]
    0.0
    """
    from tfcaption import samplers

    sampler = samplers.get(sampler)
    if isinstance(sampler, (samplers.BeamSampler, samplers.GenerateBeamSampler)):
        raise ValueError("a SavedModel's beam search is its serving_default signature, fixed at export: load it "
                         "without a sampler (or pass the run directory to choose the beams).")
    defaults = samplers.GreedySampler().get_config()
    controls = [name for name in ("no_repeat_ngram_size", "repetition_penalty", "min_length", "banned_token_ids")
                if sampler.get_config()[name] != defaults[name]]
    if controls:
        raise ValueError(f"a SavedModel's sample signature applies no logit controls ({', '.join(controls)} set): "
                         "pass the run directory to use them.")
    settings = {"temperature": sampler.temperature, "top_k": 0, "top_p": 1.0, "seed": sampler.seed, "max_length": 0}
    if isinstance(sampler, samplers.GreedySampler):
        settings["temperature"] = 0.0
    elif isinstance(sampler, samplers.TopKSampler):
        settings["top_k"] = sampler.k
    elif isinstance(sampler, samplers.TopPSampler):
        settings.update(top_p=sampler.p, top_k=sampler.k or 0)
    elif not isinstance(sampler, samplers.RandomSampler):
        raise ValueError(f"a SavedModel's sample signature cannot run {type(sampler).__name__}: pass the run "
                         "directory to use it.")
    return settings
