"""Beam search as transformers' `generate()` runs it, as a sampler."""

import keras
import tensorflow as tf

from tfcaption.layers.large_negative import large_negative
from tfcaption.samplers import loop_invariants, utils
from tfcaption.samplers.sampler import Sampler


def _gather_rows(tensor, flat_index):
    # tf.gather loses the static batch size; loop variables must keep their shape.
    gathered = tf.gather(tensor, flat_index, axis=0)
    gathered.set_shape(tensor.shape)
    return gathered


@keras.saving.register_keras_serializable(package="tfcaption")
class GenerateBeamSampler(Sampler):
    """Beam search with the semantics of transformers' `generate(num_beams=k)` (`early_stopping=False`).

    A beam's score is the sum of its processed log-probabilities: the controls (`Sampler`'s) act on the
    log-softmax of the logits, as transformers' logits processors do in beam search. Each step ranks the
    k * V continuations of the k running beams and keeps the top 2k. Of these, a candidate ending with the
    end token becomes a finished hypothesis, scored `score / generated ** length_penalty` (generated: the
    tokens after the prompt, the end token included), but only if it ranks among the top k; the best k
    candidates that did not end are the next running beams. A row keeps its k best hypotheses. It stops
    accepting new ones (and the loop ends once every row has) when its best running beam's score divided
    by its current length ** `length_penalty` cannot beat its worst hypothesis (all k slots filled). At
    `max_steps`, the top k candidates of the last step are hypotheses, ended or not.

    Args:
        num_beams: int k >= 1 (the sequences per image: the call's `num_samples` is ignored).
        length_penalty: float, the exponent of the hypothesis length (transformers' default 1.0).
        fill_token_id: int or None: the token written after a hypothesis ends. None: transformers' rule,
            the pad token unless its id is 0, then the end token.
        **kwargs: `Sampler`'s arguments (temperature, logit controls; `stop_early` changes nothing here).

    The result holds the k hypotheses per image, best first: `tokens`, `log_probs` (the model's own
    per-token log-probabilities), `scores` (the normalised scores, transformers' `sequences_scores`) and
    every attention entry along each hypothesis' ancestry.

    Example:
    >>> import tfcaption.samplers as samplers
    >>> samplers.get("generate_beam", num_beams=3).length_penalty
    1.0
    """

    def __init__(self, num_beams=3, length_penalty=1.0, fill_token_id=None, **kwargs):
        if not (isinstance(num_beams, int) and not isinstance(num_beams, bool) and num_beams >= 1):
            raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}.")
        if not (isinstance(length_penalty, (int, float)) and not isinstance(length_penalty, bool)):
            raise ValueError(f"length_penalty must be a number, got {length_penalty!r}.")
        if fill_token_id is not None and not (isinstance(fill_token_id, int) and fill_token_id >= 0):
            raise ValueError(f"fill_token_id must be a token id or None, got {fill_token_id!r}.")
        super().__init__(**kwargs)
        self.num_beams = int(num_beams)
        self.length_penalty = float(length_penalty)
        self.fill_token_id = fill_token_id

    def num_sequences(self, num_samples=1):
        return self.num_beams

    def __call__(self, next, cache, batch_size, max_steps, *, start_token_id, end_token_id, pad_token_id,
                 num_samples=1, seeds=None, attention_shapes=None, prompt_ids=None):
        k, eos, max_steps = self.num_beams, end_token_id, int(max_steps)
        fill = self.fill_token_id if self.fill_token_id is not None else (pad_token_id or end_token_id)
        flat = batch_size * k
        attention_shapes = dict(attention_shapes or {})
        next, cache, tokens, prefix = self.start(next, cache, batch_size, k, start_token_id, prompt_ids)
        # Per-step buffers a beam carries (B, k, T, ...), gathered along its ancestry.
        buffers = {"tokens": tf.fill(tf.stack([batch_size, k, max_steps]), fill),
                   "log_probs": tf.zeros(tf.stack([batch_size, k, max_steps]), tf.float32)}
        for name, shape in attention_shapes.items():
            buffers[f"attention/{name}"] = tf.zeros(tf.stack([batch_size, k, max_steps, *shape]), tf.float32)
        no_hypothesis = tf.fill(tf.stack([batch_size, k]), large_negative())
        state = {
            "scores": utils.first_step_scores(batch_size, k),
            "tokens": tokens,
            "running": buffers,
            "hypotheses": dict(buffers),
            "hypothesis_scores": no_hypothesis,
            "hypothesis_filled": tf.zeros(tf.stack([batch_size, k]), tf.bool),
            "open": tf.ones(tf.reshape(batch_size, [1]), tf.bool),  # the row can still gain a hypothesis
        }
        top_k_mask = tf.range(2 * k) < k  # (2k,)

        def body(step, cache, state):
            state = dict(state)
            outputs = next(state["tokens"], step, cache)
            logits, cache = tf.cast(outputs[0], tf.float32), outputs[1]
            vocab = logits.shape[-1] if logits.shape[-1] is not None else tf.shape(logits)[-1]
            model_log_probs = tf.nn.log_softmax(logits)  # (N, V)
            history = tf.reshape(state["running"]["tokens"], tf.stack([flat, max_steps]))
            processed = self.process_logits(model_log_probs, history, step, eos, prefix)
            candidates = state["scores"][..., None] + utils.split_rows(processed, k)  # (B, k, V)
            top_scores, top_index = tf.math.top_k(tf.reshape(candidates, tf.stack([batch_size, k * vocab])), 2 * k)
            beam, word = top_index // vocab, top_index % vocab  # (B, 2k)
            ends = tf.logical_or(tf.equal(word, eos), step >= max_steps - 1)  # at max_steps every candidate ends

            # The 2k candidates' buffers: their beam's, with this step written.
            chosen_log_probs = tf.gather(tf.gather(utils.split_rows(model_log_probs, k), beam, batch_dims=1),
                                         word[..., None], batch_dims=2)[..., 0]
            written = {"tokens": word, "log_probs": chosen_log_probs}
            for name in attention_shapes:
                written[f"attention/{name}"] = tf.gather(utils.split_rows(tf.cast(outputs[2][name], tf.float32), k),
                                                         beam, batch_dims=1)
            candidate = {name: utils.write_step(tf.gather(value, beam, batch_dims=1), step, written[name], axis=2)
                         for name, value in state["running"].items()}

            # Running beams: the best k candidates that did not end.
            running_scores = tf.where(ends, large_negative() + top_scores, top_scores)
            keep_scores, keep = tf.math.top_k(running_scores, k)  # (B, k)
            state["running"] = {name: tf.gather(value, keep, batch_dims=1) for name, value in candidate.items()}
            state["scores"] = keep_scores
            kept_beam = tf.gather(beam, keep, batch_dims=1)
            cache = tf.nest.map_structure(
                lambda c: _gather_rows(c, tf.reshape(kept_beam + tf.range(batch_size)[:, None] * k, [-1])), cache)
            state["tokens"] = tf.reshape(tf.gather(word, keep, batch_dims=1), [-1])

            # Hypotheses: ended candidates among the top k, while the row is open, merged with the kept ones.
            generated = tf.cast(step + 1, tf.float32)
            added = tf.logical_and(ends, top_k_mask[None])
            new_scores = top_scores / tf.pow(generated, self.length_penalty)
            kept = tf.logical_and(added, state["open"][:, None])
            new_scores = tf.where(kept, new_scores, large_negative() + new_scores)
            merged_scores = tf.concat([state["hypothesis_scores"], new_scores], axis=1)  # (B, 3k)
            best_scores, best = tf.math.top_k(merged_scores, k)
            state["hypotheses"] = {
                name: tf.gather(tf.concat([state["hypotheses"][name], candidate[name]], axis=1), best, batch_dims=1)
                for name in candidate}
            state["hypothesis_scores"] = best_scores
            state["hypothesis_filled"] = tf.gather(tf.concat([state["hypothesis_filled"], added], axis=1), best,
                                                   batch_dims=1)

            # The stopping rule (early_stopping=False): can the best running beam, at its current length,
            # still beat the worst hypothesis?
            best_running = keep_scores[:, 0] / tf.pow(generated, self.length_penalty)
            worst = tf.where(tf.reduce_all(state["hypothesis_filled"], axis=1),
                             tf.reduce_min(best_scores, axis=1), large_negative())
            state["open"] = tf.logical_and(state["open"], best_running > worst)
            return step + 1, cache, state

        def cond(step, cache, state):
            return tf.logical_and(step < max_steps, tf.reduce_any(state["open"]))

        _, _, state = loop_invariants.while_loop(cond, body, (tf.constant(0), cache, state),
                                                 maximum_iterations=max_steps)
        hypotheses = state["hypotheses"]
        result = {"tokens": hypotheses["tokens"], "log_probs": hypotheses["log_probs"],
                  "scores": state["hypothesis_scores"]}
        for name in attention_shapes:
            result[name] = hypotheses[f"attention/{name}"]
        return self.with_prefix(result, prefix, k)

    def get_config(self):
        return {"num_beams": self.num_beams, "length_penalty": self.length_penalty,
                "fill_token_id": self.fill_token_id, **super().get_config()}
