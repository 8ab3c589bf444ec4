"""The sampler base class: one decoding rule over one next-token callback with a cache."""

import keras
import tensorflow as tf

from tfcaption.samplers import utils


def _check(condition, message):
    if not condition:
        raise ValueError(message)


@keras.saving.register_keras_serializable(package="tfcaption")
class Sampler:
    """Base sampler: the decoding loop, the logit controls and temperature; subclasses pick tokens.

    A sampler decodes from one callback, `next(tokens, step, cache)`, which feeds one token per sequence
    and returns `(logits (N, V), new_cache)`, or `(logits, new_cache, attention)` where `attention` is a
    dict of per-sequence tensors (N, ...) to record along the returned path. The loop is a graph
    `tf.while_loop` with static shapes: it compiles with `tf.function(jit_compile=True)`.

    A subclass overrides `get_next_token(logits, noise)`; a rule that is not one token per sequence per
    step (`BeamSampler`) overrides `__call__`. A new decoding rule is a new sampler.

    Logit controls every sampler applies before its rule, in this order (transformers' order):
    repetition penalty, banned tokens, no-repeat n-grams, minimum length, then temperature.

    Lengths count tokens generated, the end token included (transformers' `max_new_tokens`): that is
    `max_steps` in every call, and `min_length` here.

    Args:
        temperature: float > 0. Logits are divided by it: below 1 sharpens, above 1 flattens the
            distribution the rule picks from. Greedy ignores it (argmax is unchanged); beams rank by it.
        seed: int or None. The seed of random samplers; None draws a new one on every call. A row's
            draws depend only on its seed and its sample index, so a seed gives an image the same
            caption whatever batch it is decoded in (and the call's `seeds` give one seed per row).
        no_repeat_ngram_size: int >= 0. If n > 0, no n-gram of generated tokens occurs twice.
        repetition_penalty: float > 0. A generated token's logit is divided by it if positive and
            multiplied by it if negative (Keskar et al., 2019); 1 (the default) changes nothing.
        min_length: int >= 0. The end token is banned until this many tokens (the end token included)
            can be reached: a caption has at least `min_length - 1` words before its end token.
        banned_token_ids: ints (or None): tokens never generated (e.g. `<pad>`, `<unk>`).
        stop_early: end the loop once every sequence has ended; the outputs are those of running all
            `max_steps` steps.

    Call arguments:
        next: the callback above.
        cache: the callback's cache for N = batch_size * k sequences (`num_sequences(num_samples)`),
            image by image.
        batch_size: B, images (a scalar tensor or int).
        max_steps: int, tokens generated at most (the end token included).
        start_token_id, end_token_id, pad_token_id: ints; the start token is fed at step 0, the pad
            token is written after the end token.
        num_samples: sequences per image for samplers that draw several (random samplers; greedy
            repeats its one); a beam sampler's k is its `num_beams`.
        seeds: optional (B,) int tensor, one seed per image, replacing `seed`.
        attention_shapes: optional dict name -> per-sequence shape of the callback's attention entries;
            given, the callback must return them and the result holds them along the returned path.

    Returns:
        dict with `tokens` (B, k, max_steps) int32 (pad after the end token), `log_probs` (B, k,
        max_steps) float32, the model's log-probability of each token (the log-softmax of the raw
        logits: what teacher forcing gives; 0 after the end token), `scores` (B, k) float32, and each
        attention entry (B, k, max_steps, ...). Greedy and random samplers score a sequence by the sum of
        its `log_probs`; beams by their search score.

    Example:
    >>> import tfcaption.samplers as samplers
    >>> logits = tf.math.log([[0.1, 0.2, 0.6, 0.1]])
    >>> def next(tokens, step, cache):  # a model that always predicts token 2 then ends (1)
    ...     return tf.where(step < 2, logits, tf.math.log([[0.1, 0.7, 0.1, 0.1]])), cache
    >>> out = samplers.GreedySampler()(next, (), 1, 4, start_token_id=0, end_token_id=1, pad_token_id=3)
    >>> out["tokens"].numpy().tolist()
    [[[2, 2, 1, 3]]]
    """

    def __init__(self, temperature=1.0, seed=None, no_repeat_ngram_size=0, repetition_penalty=1.0, min_length=0,
                 banned_token_ids=None, stop_early=True):
        _check(isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0,
               f"temperature must be a number > 0, got {temperature!r}.")
        _check(seed is None or (isinstance(seed, int) and not isinstance(seed, bool)),
               f"seed must be an int or None, got {seed!r}.")
        _check(isinstance(no_repeat_ngram_size, int) and no_repeat_ngram_size >= 0,
               f"no_repeat_ngram_size must be an int >= 0, got {no_repeat_ngram_size!r}.")
        _check(isinstance(repetition_penalty, (int, float)) and repetition_penalty > 0,
               f"repetition_penalty must be a number > 0, got {repetition_penalty!r}.")
        _check(isinstance(min_length, int) and min_length >= 0, f"min_length must be an int >= 0, got {min_length!r}.")
        banned = () if banned_token_ids is None else tuple(banned_token_ids)
        _check(all(isinstance(t, int) and t >= 0 for t in banned),
               f"banned_token_ids must be token ids (ints >= 0), got {banned_token_ids!r}.")
        self.temperature = float(temperature)
        self.seed = seed
        self.no_repeat_ngram_size = int(no_repeat_ngram_size)
        self.repetition_penalty = float(repetition_penalty)
        self.min_length = int(min_length)
        self.banned_token_ids = sorted(set(int(t) for t in banned))
        self.stop_early = bool(stop_early)

    # ------------------------------------------------------------------------------ what subclasses set

    #: Whether `get_next_token` draws (it then receives Gumbel noise).
    random = False

    def get_next_token(self, logits, noise=None):
        """(N,) int32 tokens from (N, V) float32 processed logits; `noise` (N, V) Gumbel noise for random
        samplers (argmax(logits + noise) draws from softmax(logits))."""
        raise NotImplementedError

    def num_sequences(self, num_samples=1):
        """Sequences decoded per image: the callback's cache holds batch_size times this many."""
        return int(num_samples)

    # ------------------------------------------------------------------------------------ logit controls

    def process_logits(self, logits, history, step, end_token_id):
        """The logits the rule picks from: the controls, then temperature (`logits` itself when no control
        is set and the temperature is 1).

        Args:
            logits: (N, V) float32 raw logits.
            history: (N, T) int tokens written so far (positions >= `step` are ignored).
            step: scalar int, the index of the token being chosen.
            end_token_id: int.
        """
        logits = tf.cast(logits, tf.float32)
        vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
        if self.repetition_penalty != 1.0:
            logits = utils.apply_repetition_penalty(logits, history, step, self.repetition_penalty)
        if self.banned_token_ids:
            banned = tf.reduce_any(tf.one_hot(self.banned_token_ids, vocab, on_value=True, off_value=False,
                                              dtype=tf.bool), axis=0)
            logits = tf.where(banned[None], utils.NEG_INF, logits)
        if self.no_repeat_ngram_size:
            repeats = utils.repeated_ngram_tokens(history, step, self.no_repeat_ngram_size, vocab)
            logits = tf.where(repeats, utils.NEG_INF, logits)
        if self.min_length > 1:
            too_short = tf.logical_and(step < self.min_length - 1,
                                       tf.equal(tf.range(vocab), end_token_id))
            logits = tf.where(too_short[None], utils.NEG_INF, logits)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return logits

    # -------------------------------------------------------------------------------------- randomness

    def row_keys(self, batch_size, k, seeds=None):
        """(batch_size * k,) uint32 keys: image b's seed combined with the sample index j < k."""
        if seeds is None:
            if self.seed is None:
                # No seed asked for: a new draw on every call (inside XLA, a stateful op).
                seed = tf.random.uniform([], 0, 2**31 - 1, dtype=tf.int64)
            else:
                seed = tf.constant(self.seed, tf.int64)
            seeds = tf.fill(tf.reshape(batch_size, [1]), seed)
        seeds = tf.reshape(seeds, [-1])
        samples = tf.range(k, dtype=tf.int64)
        return tf.reshape(utils.combine_keys(seeds[:, None], samples[None, :]), [-1])

    # ------------------------------------------------------------------------------------------- the loop

    def run_loop(self, body, cache, state, max_steps):
        """Runs `body(step, cache, state) -> (step + 1, cache, state)` as a graph loop for `max_steps` steps,
        or until every sequence has ended (`state["finished"]`) with `stop_early`; returns the last state."""

        def cond(step, cache, state):
            running = step < max_steps
            if self.stop_early:
                running = tf.logical_and(running, tf.logical_not(tf.reduce_all(state["finished"])))
            return running

        _, _, state = tf.while_loop(cond, body, (tf.constant(0), cache, state), maximum_iterations=max_steps)
        return state

    def __call__(self, next, cache, batch_size, max_steps, *, start_token_id, end_token_id, pad_token_id,
                 num_samples=1, seeds=None, attention_shapes=None):
        k = self.num_sequences(num_samples)
        max_steps = int(max_steps)
        flat = batch_size * k
        attention_shapes = dict(attention_shapes or {})
        row_keys = self.row_keys(batch_size, k, seeds) if self.random else None

        state = {
            "tokens": tf.fill(tf.reshape(flat, [1]), start_token_id),
            "finished": tf.zeros(tf.reshape(flat, [1]), tf.bool),
            "history": tf.fill(tf.stack([flat, max_steps]), pad_token_id),
            "log_probs": tf.zeros(tf.stack([flat, max_steps]), tf.float32),
        }
        for name, shape in attention_shapes.items():
            state[f"attention/{name}"] = tf.zeros(tf.stack([flat, max_steps, *shape]), tf.float32)

        def body(step, cache, state):
            state = dict(state)
            outputs = next(state["tokens"], step, cache)
            logits, cache = tf.cast(outputs[0], tf.float32), outputs[1]
            for name in attention_shapes:
                key = f"attention/{name}"
                state[key] = utils.write_step(state[key], step, outputs[2][name])
            log_probs = tf.nn.log_softmax(logits)
            processed = self.process_logits(logits, state["history"], step, end_token_id)
            noise = utils.gumbel_noise(row_keys, step, tf.shape(logits)[-1]) if self.random else None
            word = tf.cast(self.get_next_token(processed, noise), tf.int32)
            word_log_prob = tf.gather(log_probs, word[:, None], batch_dims=1)[:, 0]
            finished = state["finished"]
            word = tf.where(finished, pad_token_id, word)
            state["history"] = utils.write_step(state["history"], step, word)
            state["log_probs"] = utils.write_step(state["log_probs"], step, tf.where(finished, 0.0, word_log_prob))
            state["finished"] = tf.logical_or(finished, tf.equal(word, end_token_id))
            state["tokens"] = word
            return step + 1, cache, state

        state = self.run_loop(body, cache, state, max_steps)

        result = {"tokens": utils.split_rows(state["history"], k), "log_probs": utils.split_rows(state["log_probs"], k)}
        result["scores"] = tf.reduce_sum(result["log_probs"], axis=-1)
        for name in attention_shapes:
            result[name] = utils.split_rows(state[f"attention/{name}"], k)
        return result

    # ------------------------------------------------------------------------------------------ config

    def get_config(self):
        return {
            "temperature": self.temperature,
            "seed": self.seed,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
            "min_length": self.min_length,
            "banned_token_ids": list(self.banned_token_ids),
            "stop_early": self.stop_early,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        settings = ", ".join(f"{name}={value!r}" for name, value in self.get_config().items())
        return f"{type(self).__name__}({settings})"
