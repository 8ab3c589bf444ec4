"""Beam search with the M2 authors' semantics, as a sampler."""

import keras
import tensorflow as tf

from tfcaption.layers.large_negative import large_negative
from tfcaption.samplers import utils
from tfcaption.samplers.sampler import Sampler


def _gather_rows(tensor, flat_index):
    # tf.gather loses the static batch size; loop variables must keep their shape.
    gathered = tf.gather(tensor, flat_index, axis=0)
    gathered.set_shape(tensor.shape)
    return gathered


@keras.saving.register_keras_serializable(package="tfcaption")
class BeamSampler(Sampler):
    """Batched beam search with the semantics of the M2 authors' code.

    Score = sum of token log-probabilities (of the processed logits: with no logit control and
    temperature 1, the model's). At step 0 the top k of the first distribution seed the beams; each step
    expands every beam by every word and keeps the top k of the k * V candidates per image. A beam that
    emitted the end token keeps its slot and score: its only surviving continuation is `fill_token_id`
    with log-probability 0 (the authors' code writes 0 there; the default writes the pad token). Beams
    come back sorted, best first. With `stop_early` the loop ends once every beam has ended, which returns
    exactly what running all `max_steps` would.

    Args:
        num_beams: int k >= 1 (the sequences per image: the call's `num_samples` is ignored).
        length_penalty: float >= 0. > 0 re-ranks the final beams by
            `score / ((5 + length) / 6) ** length_penalty` (Wu et al., 2016); 0 (the default) ranks by the
            raw sum, as released.
        length_normalization: float >= 0. > 0 compares candidates during the search, and ranks the
            final beams, by `score / length ** length_normalization` (length: tokens up to and including
            the end token), the normalisation transformers' `generate()` applies to its beams; 0 (the
            default) is M2's raw sum.
        fill_token_id: int or None: the token written after the end token (None: the pad token).
        **kwargs: `Sampler`'s arguments (temperature, logit controls, stop_early).

    The result's `scores` are the beams' raw sums (M2's scores, in ranking order) and `log_probs` the
    model's per-token log-probabilities; every attention entry follows each beam's ancestry, so it belongs
    to the tokens returned.

    Example:
    >>> import tfcaption.samplers as samplers
    >>> samplers.get("beam").num_beams
    3

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020 (beam_search.py).
        Wu et al., "Google's Neural Machine Translation System", arXiv 1609.08144 (length penalty).
    """

    def __init__(self, num_beams=3, length_penalty=0.0, length_normalization=0.0, fill_token_id=None, **kwargs):
        if not (isinstance(num_beams, int) and not isinstance(num_beams, bool) and num_beams >= 1):
            raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}.")
        for name, value in (("length_penalty", length_penalty), ("length_normalization", length_normalization)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
        if fill_token_id is not None and not (isinstance(fill_token_id, int) and fill_token_id >= 0):
            raise ValueError(f"fill_token_id must be a token id or None, got {fill_token_id!r}.")
        super().__init__(**kwargs)
        self.num_beams = int(num_beams)
        self.length_penalty = float(length_penalty)
        self.length_normalization = float(length_normalization)
        self.fill_token_id = fill_token_id

    def num_sequences(self, num_samples=1):
        return self.num_beams

    def __call__(self, next, cache, batch_size, max_steps, *, start_token_id, end_token_id, pad_token_id,
                 num_samples=1, seeds=None, attention_shapes=None, prompt_ids=None):
        k = self.num_beams
        max_steps = int(max_steps)
        eos = end_token_id
        fill = pad_token_id if self.fill_token_id is None else self.fill_token_id
        flat = batch_size * k
        attention_shapes = dict(attention_shapes or {})
        alpha = self.length_normalization
        next, cache, tokens, prefix = self.start(next, cache, batch_size, k, start_token_id, prompt_ids)

        state = {
            "scores": utils.first_step_scores(batch_size, k),
            "tokens": tokens,
            "finished": tf.zeros(tf.stack([batch_size, k]), tf.bool),
            "lengths": tf.zeros(tf.stack([batch_size, k]), tf.float32),
            "history": tf.fill(tf.stack([batch_size, k, max_steps]), fill),
            "log_probs": tf.zeros(tf.stack([batch_size, k, max_steps]), tf.float32),
        }
        for name, shape in attention_shapes.items():
            state[f"attention/{name}"] = tf.zeros(tf.stack([batch_size, k, max_steps, *shape]), tf.float32)

        def body(step, cache, state):
            state = dict(state)
            outputs = next(state["tokens"], step, cache)
            logits, cache = tf.cast(outputs[0], tf.float32), outputs[1]
            vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
            history = tf.reshape(state["history"], tf.stack([flat, max_steps]))
            processed = self.process_logits(logits, history, step, eos, prefix)
            model_log_probs = utils.split_rows(tf.nn.log_softmax(logits), k)  # (B, k, V)
            # No control and temperature 1 return the logits themselves: rank by the model's log-probs.
            log_probs = model_log_probs if processed is logits else utils.split_rows(tf.nn.log_softmax(processed), k)
            finished, scores = state["finished"], state["scores"]
            fill_row = tf.one_hot(fill, vocab, on_value=0.0, off_value=large_negative())
            candidates = tf.where(finished[..., None], scores[..., None] + fill_row, scores[..., None] + log_probs)
            candidates = tf.reshape(candidates, tf.stack([batch_size, k * vocab]))
            lengths = tf.where(finished, state["lengths"], tf.cast(step + 1, tf.float32))  # (B, k)
            if alpha:
                norms = tf.repeat(tf.pow(lengths, alpha), vocab, axis=1)  # (B, k * V), beam-major as candidates
                ranking = candidates / tf.reshape(norms, tf.shape(candidates))
                _, top_index = tf.math.top_k(ranking, k=k)
                top_scores = tf.gather(candidates, top_index, batch_dims=1)
            else:
                top_scores, top_index = tf.math.top_k(candidates, k=k)
            beam = top_index // vocab
            word = top_index % vocab
            flat_index = tf.reshape(beam + tf.range(batch_size)[:, None] * k, [-1])
            cache = tf.nest.map_structure(lambda c: _gather_rows(c, flat_index), cache)
            word_log_probs = tf.where(finished[..., None], 0.0, model_log_probs)
            chosen_log_probs = tf.gather(tf.gather(word_log_probs, beam, batch_dims=1), word[..., None],
                                         batch_dims=2)[..., 0]
            state["history"] = utils.write_step(tf.gather(state["history"], beam, batch_dims=1), step, word, axis=2)
            state["log_probs"] = utils.write_step(tf.gather(state["log_probs"], beam, batch_dims=1), step,
                                                  chosen_log_probs, axis=2)
            for name in attention_shapes:
                key = f"attention/{name}"
                value = tf.gather(utils.split_rows(tf.cast(outputs[2][name], tf.float32), k), beam, batch_dims=1)
                state[key] = utils.write_step(tf.gather(state[key], beam, batch_dims=1), step, value, axis=2)
            state["lengths"] = tf.gather(lengths, beam, batch_dims=1)
            state["finished"] = tf.logical_or(tf.gather(finished, beam, batch_dims=1), tf.equal(word, eos))
            state["scores"] = top_scores
            state["tokens"] = tf.reshape(word, [-1])
            return step + 1, cache, state

        state = self.run_loop(body, cache, state, max_steps)
        result = {"tokens": state["history"], "log_probs": state["log_probs"], "scores": state["scores"]}
        for name in attention_shapes:
            result[name] = state[f"attention/{name}"]
        if self.length_penalty:
            lengths = utils.caption_lengths(result["tokens"], eos)
            ranking = result["scores"] / tf.pow((5.0 + lengths) / 6.0, self.length_penalty)
            order = tf.argsort(ranking, axis=-1, direction="DESCENDING", stable=True)
            result = {name: tf.gather(value, order, batch_dims=1) for name, value in result.items()}
        return self.with_prefix(result, prefix, k)

    def get_config(self):
        return {"num_beams": self.num_beams, "length_penalty": self.length_penalty,
                "length_normalization": self.length_normalization, "fill_token_id": self.fill_token_id,
                **super().get_config()}
