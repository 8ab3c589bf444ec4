"""The sampler base class: one decoding rule over one next-token callback with a cache."""

import keras
import tensorflow as tf

from tfcaption.layers.large_negative import large_negative
from tfcaption.samplers import loop_invariants, utils


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

    `max_steps` counts the tokens generated after the prompt, the end token included (transformers'
    `max_new_tokens`). The controls see the row as transformers' `generate()` sees its input ids: the
    start token, the prompt, then the generated tokens (`min_length` counts them all).

    Args:
        temperature: float > 0. Logits are divided by it: below 1 sharpens, above 1 flattens the
            distribution the rule picks from. Greedy ignores it (argmax is unchanged); beams rank by it.
        seed: int or None. The seed of random samplers; None draws a new one on every call. A row's
            draws depend only on its seed and its sample index, so a seed gives an image the same
            caption whatever batch it is decoded in (and the call's `seeds` give one seed per row).
        no_repeat_ngram_size: int >= 0. If n > 0, no n-gram of the row (start token and prompt
            included) occurs twice.
        repetition_penalty: float > 0. The logit of a token already in the row (start token and prompt
            included) is divided by it if positive and multiplied by it if negative (Keskar et al., 2019);
            1 (the default) changes nothing.
        min_length: int >= 0. The end token is banned while the row (start token, prompt, generated
            tokens) is shorter than this: without a prompt a caption has at least `min_length - 1` words
            before its end token.
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
        prompt_ids: optional (P,) or per-image (B, P) int tensor: the start token then a prompt's pieces,
            without an end token. Its first P - 1 tokens are fed before the loop and its last at the
            first step (the callback's `step` is always the fed token's position, the start token's 0);
            the result's rows start with its P - 1 pieces (zero log-probabilities and attention).

    Returns:
        dict with `tokens` (B, k, T) int32 (T = max_steps, or P - 1 + max_steps with a prompt; pad after
        the end token), `log_probs` (B, k, T) float32, the model's log-probability of each token (the
        log-softmax of the raw logits: what teacher forcing gives; 0 after the end token), `scores` (B, k)
        float32, and each attention entry (B, k, T, ...). Greedy and random samplers score a sequence by the sum of
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

    def process_logits(self, logits, history, step, end_token_id, prefix=None):
        """The logits the rule picks from: the controls, then temperature (`logits` itself when no control
        is set and the temperature is 1).

        Args:
            logits: (N, V) float32 raw logits (or log-probabilities: generate()-style beams process those).
            history: (N, T) int tokens written so far (positions >= `step` are ignored).
            step: scalar int, the index of the token being chosen.
            end_token_id: int.
            prefix: optional (N, P) int, the tokens before the generated ones (the start token, then the
                prompt): the controls count them as transformers' `generate()` counts its input ids. None:
                the start token alone, which the repetition controls do not see.
        """
        logits = tf.cast(logits, tf.float32)
        vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
        # `seen`/`position`: the tokens the repetition controls look at, and the chosen token's index there.
        seen, position = history, step
        if prefix is not None:
            seen = tf.concat([tf.cast(prefix, history.dtype), history], axis=1)
            position = step + prefix.shape[1]
        length = step + 1 if prefix is None else position  # tokens before the chosen one, start token included
        if self.repetition_penalty != 1.0:
            logits = utils.apply_repetition_penalty(logits, seen, position, self.repetition_penalty)
        if self.banned_token_ids:
            banned = tf.reduce_any(tf.one_hot(self.banned_token_ids, vocab, on_value=True, off_value=False,
                                              dtype=tf.bool), axis=0)
            logits = tf.where(banned[None], large_negative(), logits)
        if self.no_repeat_ngram_size:
            repeats = utils.repeated_ngram_tokens(seen, position, self.no_repeat_ngram_size, vocab)
            logits = tf.where(repeats, large_negative(), logits)
        if self.min_length > 1:
            too_short = tf.logical_and(length < self.min_length, tf.equal(tf.range(vocab), end_token_id))
            logits = tf.where(too_short[None], large_negative(), logits)
        if self.temperature != 1.0:
            logits = logits / self.temperature
        return logits

    # ------------------------------------------------------------------------------------------- prompts

    @staticmethod
    def start(next, cache, batch_size, k, start_token_id, prompt_ids=None):
        """Feeds a prompt through `next` before generation starts.

        Args:
            next, cache: the call's callback and cache (N = batch_size * k sequences).
            batch_size, k: images and sequences per image.
            start_token_id: int, fed first when there is no prompt.
            prompt_ids: None, or a (P,) or per-image (B, P) int tensor: the start token (`[DEC]`) then the
                prompt's pieces, without an end token (`BertTokenizer.encode_prompt`); P must be static.

        Returns:
            `(next_at, cache, tokens, prefix)`: the callback with the positions shifted past the prompt (its
            step 0 feeds the prompt's last token), the cache holding the prompt's first P - 1 tokens, the
            (N,) tokens fed at step 0, and the (N, P) prefix (start token and prompt) of every sequence.
        """
        flat = batch_size * k
        if prompt_ids is None:
            prefix = tf.fill(tf.stack([flat, 1]), tf.constant(start_token_id, tf.int32))
        else:
            prompt = tf.cast(tf.convert_to_tensor(prompt_ids), tf.int32)
            _check(prompt.shape.rank in (1, 2) and prompt.shape[-1] is not None and prompt.shape[-1] >= 1,
                   f"prompt_ids must be a (P,) or (B, P) int tensor with a static P >= 1, got shape {prompt.shape}.")
            if prompt.shape.rank == 1:
                prompt = tf.tile(prompt[None], tf.stack([batch_size, 1]))
            prefix = tf.repeat(prompt, k, axis=0)  # image by image, as the cache's rows
        length = prefix.shape[1]
        if length > 1:
            def feed(position, cache):
                token = tf.gather(prefix, position, axis=1)
                return position + 1, next(token, position, cache)[1]

            _, cache = loop_invariants.while_loop(lambda position, cache: position < length - 1, feed,
                                                  (tf.constant(0), cache), maximum_iterations=length - 1)

        def next_at(tokens, step, cache):
            return next(tokens, step + (length - 1), cache)

        return next_at, cache, prefix[:, -1], prefix

    @staticmethod
    def with_prefix(result, prefix, k):
        """`result`'s per-step entries (B, k, T, ...) with the prompt's P - 1 positions (the start token
        left out) in front: its tokens in `tokens`, zeros in every other entry; `scores` unchanged."""
        words = utils.split_rows(prefix[:, 1:], k)  # (B, k, P - 1)
        if words.shape[2] == 0:
            return result
        out = dict(result)
        for name, value in result.items():
            if name == "scores":
                continue
            front = (tf.cast(words, value.dtype) if name == "tokens" else
                     tf.zeros(tf.concat([tf.shape(words), tf.shape(value)[3:]], 0), value.dtype))
            out[name] = tf.concat([front, value], axis=2)
        return out

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
        samples = tf.range(k)
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

        _, _, state = loop_invariants.while_loop(cond, body, (tf.constant(0), cache, state),
                                                 maximum_iterations=max_steps)
        return state

    def __call__(self, next, cache, batch_size, max_steps, *, start_token_id, end_token_id, pad_token_id,
                 num_samples=1, seeds=None, attention_shapes=None, prompt_ids=None):
        k = self.num_sequences(num_samples)
        max_steps = int(max_steps)
        flat = batch_size * k
        attention_shapes = dict(attention_shapes or {})
        row_keys = self.row_keys(batch_size, k, seeds) if self.random else None
        next, cache, tokens, prefix = self.start(next, cache, batch_size, k, start_token_id, prompt_ids)

        state = {
            "tokens": tokens,
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
            processed = self.process_logits(logits, state["history"], step, end_token_id, prefix)
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
        return self.with_prefix(result, prefix, k)

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
