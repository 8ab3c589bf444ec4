"""`GenerateBeamSampler` runs transformers' beam search: checked layer-free against a plain numpy rendering of
the algorithm (top 2k candidates, ended ones among the top k become hypotheses scored by sum / generated
length, the best k others run on, the early_stopping=False stopping rule, the last step's top k added)."""

import numpy as np
import pytest
import tensorflow as tf

from tfcaption import samplers

VOCAB, STEPS, EOS, PAD, START, SEED_COUNT = 6, 6, 1, 0, 5, 8


def _tables(seed, batch):
    rng = np.random.default_rng(seed)
    # A strong end token in some rows and steps, so hypotheses end at different lengths.
    step_logits = rng.normal(size=(batch, STEPS, VOCAB, VOCAB)) * 2.0
    history_logits = rng.normal(size=(batch, 5, VOCAB))
    return step_logits.astype(np.float32), history_logits.astype(np.float32)


def _logits(tables, image, fed, step):
    """The hand-made model: logits from the image, the step, the last token fed and the sum of all fed."""
    step_logits, history_logits = tables
    return step_logits[image, step, fed[-1]] + history_logits[image, sum(fed) % 5]


def _callback(tables, k):
    step_logits, history_logits = (tf.constant(t) for t in tables)

    def next(tokens, step, cache):
        image, total = cache
        total = total + tokens
        logits = tf.gather_nd(step_logits, tf.stack([image, tf.fill(tf.shape(image), step), tokens], -1))
        logits += tf.gather_nd(history_logits, tf.stack([image, total % 5], -1))
        return logits, (image, total)

    return next


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def _numpy_beam_search(tables, image, k, length_penalty=1.0):
    """transformers' beam search for one image, with Python lists."""
    running = [([], 0.0)] + [([], -1e9)] * (k - 1)  # (generated tokens, summed log-probs)
    hypotheses = []  # (score, tokens)
    for step in range(STEPS):
        candidates = []
        for beam, (tokens, score) in enumerate(running):
            log_probs = _log_softmax(_logits(tables, image, [START] + tokens, step))
            candidates += [(score + log_probs[word], beam, word) for word in range(VOCAB)]
        candidates = sorted(candidates, key=lambda c: -c[0])[:2 * k]
        next_running = []
        for rank, (score, beam, word) in enumerate(candidates):
            tokens = running[beam][0] + [word]
            if word == EOS or step == STEPS - 1:
                if rank < k:
                    hypotheses = sorted(hypotheses + [(score / (step + 1) ** length_penalty, tokens)],
                                        key=lambda h: -h[0])[:k]
            elif len(next_running) < k:
                next_running.append((tokens, score))
        running = next_running
        if len(hypotheses) == k and running and running[0][1] / (step + 1) ** length_penalty <= hypotheses[-1][0]:
            break
    return hypotheses


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("k", [2, 3])
def test_generate_beam_search_matches_the_numpy_algorithm(k, jit_compile):
    batch = SEED_COUNT
    tables = _tables(k, batch)
    sampler = samplers.GenerateBeamSampler(num_beams=k)

    def run():
        cache = (tf.repeat(tf.range(batch), k), tf.zeros([batch * k], tf.int32))
        return sampler(_callback(tables, k), cache, batch, STEPS, start_token_id=START, end_token_id=EOS,
                       pad_token_id=PAD)

    out = tf.function(run, jit_compile=True)() if jit_compile else run()
    lengths = []
    for image in range(batch):
        reference = _numpy_beam_search(tables, image, k)
        for j, (score, tokens) in enumerate(reference):
            # transformers' fill rule: the pad id is 0, so the end token fills the row.
            row = tokens + [EOS] * (STEPS - len(tokens))
            np.testing.assert_array_equal(out["tokens"][image, j].numpy(), row)
            np.testing.assert_allclose(out["scores"][image, j].numpy(), score, rtol=1e-5, atol=1e-5)
        lengths.append(len(reference[0][1]))
    assert len(set(lengths)) > 1  # the cases exercise both early ends and the last step


def test_generate_beam_sampler_is_serializable_by_name():
    sampler = samplers.get("generate_beam", num_beams=4, length_penalty=0.5, min_length=3)
    again = samplers.deserialize(samplers.serialize(sampler))
    assert type(again) is samplers.GenerateBeamSampler and again.get_config() == sampler.get_config()
    assert samplers.get("generate_beam").num_sequences() == 3
    with pytest.raises(ValueError, match="num_beams"):
        samplers.GenerateBeamSampler(num_beams=0)
