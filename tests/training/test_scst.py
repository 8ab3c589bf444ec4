"""Self-critical sequence training: the reward against pycocoevalcap, the log-probabilities against the
searches and numpy, the baselines and the loss against numpy, multinomial sampling, and one compiled step."""

import contextlib
import io
from collections import defaultdict

import keras
import numpy as np
import pytest
import tensorflow as tf
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider_scorer import CiderScorer

from tests.helpers.tiny import tiny_preset
from tfcaption.data.tokenizer import SpecialIds, Vocabulary
from tfcaption.decoding import generate
from tfcaption.metrics.coco import ptb_tokenize_python
from tfcaption.models import CaptionerBackbone
from tfcaption.training.scst import (
    ScstReward, ScstStep, baseline, caption_mask, references_from_batch, sample_sequences, scst_loss,
    sequence_log_probs,
)

CAPTIONS = [
    "a red circle left of a blue square", "a blue square", "two green triangles", "a red square above a circle",
    "one blue circle", "a green circle right of a red triangle", "a small red circle", "two blue squares",
    "a triangle below a green square", "a big blue circle", "three red circles", "a green square",
    "a red triangle left of a circle", "one small green triangle", "a blue triangle above a red square",
    "two circles and a square", "a large green circle", "a red square", "a blue circle right of a triangle",
    "two small red triangles",
]
MAX_LENGTH = 12
PAD, BOS, EOS = Vocabulary.pad_id, Vocabulary.bos_id, Vocabulary.eos_id
IDS = SpecialIds(PAD, BOS, EOS)  # the vocabulary's ids, given to the searches and the teacher-forced pass


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.build(CAPTIONS)


def _model(vocab, preset="small", seed=11, trained_specials=True):
    """A tiny model (dropout 0). With `trained_specials`, its word head has a bias that gives <pad> and
    <bos> almost no probability, as cross-entropy training does (neither is ever a target); an untrained
    head proposes them as often as any word."""
    keras.utils.set_random_seed(seed)
    model = CaptionerBackbone.from_model_config(tiny_preset(preset, vocab_size=vocab.size, max_length=MAX_LENGTH,
                                  output_bias=trained_specials))
    if trained_specials:
        bias = np.zeros(vocab.size, np.float32)
        bias[[PAD, BOS]] = -30.0
        model.decoder.output_dense.bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def model(vocab):
    return _model(vocab)


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_uniform((3, 32, 32, 3), seed=(1, 2), minval=0, maxval=255)


# ---------------------------------------------------------------------------------------- reward


def _candidate_tokens(vocab, seed, batch=3, k=4, steps=9):
    """(B, k, T) ids: encoded captions ending in <eos> (some equal to a reference), random words cut at T
    without <eos> (some with <unk>), an immediate <eos>, and an <eos> followed by <pad>."""
    rng = np.random.default_rng(seed)
    tokens = np.full((batch, k, steps), PAD, np.int32)
    for b in range(batch):
        for j in range(k):
            kind = (b * k + j) % 4
            if kind == 0:
                ids = vocab.encode(CAPTIONS[(3 * b + j) % len(CAPTIONS)])[: steps - 1] + [EOS]
            elif kind == 1:
                ids = rng.integers(0, vocab.size, steps).tolist()
                ids = [i if i not in (PAD, BOS, EOS) else 4 for i in ids]
            elif kind == 2:
                ids = [EOS]
            else:
                ids = rng.integers(4, vocab.size, rng.integers(1, steps - 1)).tolist() + [EOS]
            tokens[b, j, : len(ids)] = ids
    return tokens


def _references(batch=3):
    return [[CAPTIONS[(3 * b + j) % len(CAPTIONS)] for j in range(1 + b)] for b in range(batch)]


def _scored_text(ids, vocab, include_eos):
    """The test's own ids -> text: words until the first <eos>, PTB tokenised, "<eos>" if it ended so."""
    words = []
    for i in ids:
        if i == EOS:
            break
        if i not in (PAD, BOS):
            words.append(vocab.tokens[i])
    text = ptb_tokenize_python(" ".join(words))
    return (text + " <eos>").strip() if include_eos and EOS in list(ids) else text


def _pycocoevalcap_cider(corpus, candidates, references):
    # As tests/metrics/test_cider.py: document frequencies of a scorer over the corpus (each caption a
    # document), and padding items so that pycocoevalcap's N (the number of items) is the corpus size.
    corpus_scorer = CiderScorer(n=4, sigma=6.0)
    for caption in corpus:
        corpus_scorer += (None, [caption])
    corpus_scorer.compute_doc_freq()
    scorer = CiderScorer(n=4, sigma=6.0)
    for candidate, refs in zip(candidates, references):
        scorer += (candidate, refs)
    for _ in range(len(corpus) - len(candidates)):
        scorer += ("", [""])
    scorer.document_frequency = defaultdict(float, corpus_scorer.document_frequency)
    return np.array(scorer.compute_cider()[: len(candidates)])


@pytest.mark.parametrize("include_eos", [False, True])
def test_reward_equals_pycocoevalcap_cider_d_with_training_captions_as_documents(vocab, include_eos):
    tokens = _candidate_tokens(vocab, seed=0)
    references = _references()
    batch, k = tokens.shape[:2]
    rewards = ScstReward(CAPTIONS, include_eos=include_eos)(tokens, references, vocab)
    assert rewards.shape == (batch, k) and rewards.dtype == np.float32

    eos = " <eos>" if include_eos else ""
    corpus = [ptb_tokenize_python(c) + eos for c in CAPTIONS]
    candidates = [_scored_text(row, vocab, include_eos) for row in tokens.reshape(batch * k, -1).tolist()]
    refs = [[ptb_tokenize_python(r) + eos for r in references[i // k]] for i in range(batch * k)]
    expected = _pycocoevalcap_cider(corpus, candidates, refs).reshape(batch, k)
    np.testing.assert_allclose(rewards, expected, rtol=0, atol=1e-6)
    assert rewards[0, 0] > 1.0  # a candidate equal to its reference
    if include_eos:  # the immediate <eos> is the one-word caption "<eos>", which matches every reference's
        assert candidates[2] == "<eos>"


def test_include_eos_changes_the_reward(vocab):
    tokens, references = _candidate_tokens(vocab, seed=0), _references()
    plain = ScstReward(CAPTIONS)(tokens, references, vocab)
    with_eos = ScstReward(CAPTIONS, include_eos=True)(tokens, references, vocab)
    assert np.abs(plain - with_eos).max() > 0.01


def test_bleu_mix_equals_the_hand_mix_of_cider_d_and_pycocoevalcap_bleu_4(vocab):
    tokens, references = _candidate_tokens(vocab, seed=1), _references()
    batch, k = tokens.shape[:2]
    mixed = ScstReward(CAPTIONS, bleu_weight=0.3)(tokens, references, vocab)
    cider = ScstReward(CAPTIONS)(tokens, references, vocab)
    candidates = [_scored_text(row, vocab, False) for row in tokens.reshape(batch * k, -1).tolist()]
    gts = {i: [ptb_tokenize_python(r) for r in references[i // k]] for i in range(batch * k)}
    res = {i: [candidates[i]] for i in range(batch * k)}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its corpus statistics
        bleu = np.array(Bleu(4).compute_score(gts, res)[1][3]).reshape(batch, k)
    assert bleu.max() > 0.5
    np.testing.assert_allclose(mixed, 0.7 * cider + 0.3 * bleu, rtol=0, atol=1e-5)


def test_decode_stops_at_eos_skips_pad_and_keeps_the_layout(vocab):
    tokens = np.full((2, 2, 6), PAD, np.int32)
    tokens[0, 0, :4] = vocab.encode("a red circle") + [EOS]
    tokens[0, 1, :3] = [EOS] + vocab.encode("a red")
    tokens[1, 0] = vocab.encode("a blue square")[:1] * 6  # no <eos>: every token is a word
    tokens[1, 1, :2] = [BOS, EOS]
    texts = ScstReward.decode(tokens, vocab)
    assert texts == [["a red circle", ""], ["a a a a a a", ""]]
    assert ScstReward.decode(tokens[0], vocab) == ["a red circle", ""]
    assert ScstReward.decode(tokens[0, 0], vocab) == "a red circle"


def test_reward_drops_padding_references_and_rejects_an_image_without_any(vocab):
    reward = ScstReward(CAPTIONS)
    tokens = _candidate_tokens(vocab, seed=2, batch=2, k=2)
    captions = tf.constant([[CAPTIONS[0], ""], [CAPTIONS[1], CAPTIONS[2]]])
    references = references_from_batch(captions)
    assert references == [[CAPTIONS[0]], [CAPTIONS[1], CAPTIONS[2]]]
    np.testing.assert_array_equal(reward(tokens, [[CAPTIONS[0], ""], references[1]], vocab),
                                  reward(tokens, references, vocab))
    with pytest.raises(ValueError, match="no reference"):
        reward(tokens, [[CAPTIONS[0]], [""]], vocab)
    with pytest.raises(ValueError, match="bleu_weight"):
        ScstReward(CAPTIONS, bleu_weight=1.5)


# ------------------------------------------------------------------------------- log-probabilities


def test_sequence_log_probs_equal_the_beam_and_greedy_search_log_probs(model, images):
    beams = generate(model, images, beam_size=3, max_steps=8, special_ids=IDS)
    log_probs, mask = sequence_log_probs(model, images, beams["beam_tokens"], training=False, special_ids=IDS)
    assert log_probs.dtype == tf.float32 and log_probs.shape == (3, 3, 8)
    np.testing.assert_allclose(log_probs.numpy(), beams["beam_log_probs"].numpy(), rtol=0, atol=2e-5)
    np.testing.assert_array_equal(mask.numpy(), caption_mask(beams["beam_tokens"], EOS).numpy())
    greedy = generate(model, images, beam_size=1, max_steps=8, special_ids=IDS)
    log_probs, _ = sequence_log_probs(model, images, greedy["tokens"][:, None], training=False, special_ids=IDS)
    np.testing.assert_allclose(log_probs.numpy()[:, 0], greedy["log_probs"].numpy(), rtol=0, atol=2e-5)


def test_sequence_log_probs_equal_numpy_from_the_models_logits_and_the_mask_stops_after_the_first_eos(
        model, images, vocab):
    w = vocab.encode("a red circle blue square")
    tokens = np.array([
        [[w[0], w[1], EOS, PAD, PAD, PAD], [w[2], w[3], w[4], w[0], w[1], w[2]], [EOS, PAD, PAD, PAD, PAD, PAD]],
        [[w[3], EOS, w[4], EOS, w[0], PAD], [w[1], w[1], w[1], w[1], EOS, PAD], [w[4], w[3], w[2], w[1], w[0], EOS]],
        [[w[0], EOS, PAD, PAD, PAD, PAD], [w[2], w[2], EOS, PAD, PAD, PAD], [w[1], w[0], w[3], EOS, PAD, PAD]],
    ], np.int32)
    expected_mask = np.array([
        [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]],  # first <eos> in, no <eos>: all
        [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]],  # a second <eos> is not trained
        [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]],
    ], np.float32)
    log_probs, mask = sequence_log_probs(model, images, tokens, training=False, special_ids=IDS)
    np.testing.assert_array_equal(mask.numpy(), expected_mask)

    flat = tokens.reshape(9, 6)
    inputs = np.concatenate([np.full((9, 1), BOS), flat[:, :-1]], axis=1)
    logits = model({"images": np.repeat(images.numpy(), 3, axis=0), "tokens": inputs, "padding_mask": inputs != PAD})
    logits = logits.numpy().astype(np.float64)
    logits -= logits.max(-1, keepdims=True)
    numpy_log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    chosen = np.take_along_axis(numpy_log_probs, flat[..., None], -1)[..., 0].reshape(3, 3, 6)
    np.testing.assert_allclose(log_probs.numpy(), chosen * expected_mask, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ baselines and loss


def test_baseline_equals_numpy_in_every_mode():
    rng = np.random.default_rng(0)
    rewards = rng.uniform(0, 3, (4, 5)).astype(np.float32)
    greedy = rng.uniform(0, 3, 4).astype(np.float32)
    np.testing.assert_allclose(baseline(rewards, "beam").numpy(),
                               np.repeat(rewards.mean(1, keepdims=True), 5, 1), rtol=1e-6)
    leave_one_out = np.array([[np.delete(row, i).mean() for i in range(5)] for row in rewards])
    np.testing.assert_allclose(baseline(rewards, "multinomial").numpy(), leave_one_out, rtol=1e-5)
    np.testing.assert_allclose(baseline(rewards, "greedy_baseline", greedy).numpy(),
                               np.repeat(greedy[:, None], 5, 1), rtol=0)
    with pytest.raises(ValueError, match="at least 2"):
        baseline(rewards[:, :1], "multinomial")
    with pytest.raises(ValueError, match="greedy_rewards"):
        baseline(rewards, "greedy_baseline")
    with pytest.raises(ValueError, match="mode"):
        baseline(rewards, "sample")


def test_scst_loss_is_the_per_sample_masked_mean_log_prob_times_the_advantage():
    rng = np.random.default_rng(1)
    log_probs = -rng.uniform(0, 4, (3, 4, 7)).astype(np.float32)
    lengths = rng.integers(1, 8, (3, 4))
    lengths[1, 2] = 0  # no trained token: contributes 0
    mask = (np.arange(7) < lengths[..., None]).astype(np.float32)
    rewards = rng.uniform(0, 2, (3, 4)).astype(np.float32)
    baselines = rng.uniform(0, 2, (3, 4)).astype(np.float32)
    per_sample = np.where(lengths > 0, (log_probs * mask).sum(-1) / np.maximum(lengths, 1), 0.0)
    expected = -(per_sample * (rewards - baselines)).mean()
    np.testing.assert_allclose(float(scst_loss(log_probs, mask, rewards, baselines)), expected, rtol=1e-5)
    # Tokens outside the mask change nothing.
    changed = np.where(mask > 0, log_probs, -100.0)
    np.testing.assert_allclose(float(scst_loss(changed, mask, rewards, baselines)), expected, rtol=1e-5)


# ------------------------------------------------------------------------------------ sampling


def test_multinomial_samples_are_reproducible_differ_across_seeds_and_match_their_log_probs(model, images):
    first = sample_sequences(model, images, 6, 10, "multinomial", seed=(1, 2), special_ids=IDS)
    again = sample_sequences(model, images, 6, 10, "multinomial", seed=tf.constant([1, 2], tf.int64),
                             special_ids=IDS)
    other = sample_sequences(model, images, 6, 10, "multinomial", seed=(1, 3), special_ids=IDS)
    tokens = first["tokens"].numpy()
    assert tokens.shape == (3, 6, 10) and tokens.dtype == np.int32
    np.testing.assert_array_equal(tokens, again["tokens"].numpy())
    assert not np.array_equal(tokens, other["tokens"].numpy())
    # Different samples of one image (the k rows are not copies of one draw).
    assert len({tuple(row) for row in tokens[0]}) > 1
    # The reported log-probabilities are those teacher forcing gives the same captions.
    log_probs, _ = sequence_log_probs(model, images, tokens, training=False, special_ids=IDS)
    np.testing.assert_allclose(first["log_probs"].numpy(), log_probs.numpy(), rtol=0, atol=2e-5)


def test_every_sample_ends_with_eos_or_reaches_max_steps_and_is_padded_after_eos(model, images):
    tokens = sample_sequences(model, images, 16, 10, "multinomial", seed=7, special_ids=IDS)["tokens"].numpy()
    tokens = tokens.reshape(-1, 10)
    ended = 0
    for row in tokens.tolist():
        length = row.index(EOS) + 1 if EOS in row else len(row)
        ended += EOS in row
        assert all(t not in (PAD, BOS) for t in row[:length])  # never drawn inside a caption
        assert all(t == PAD for t in row[length:])
    assert 0 < ended < len(tokens)  # both kinds occur with this untrained model


def test_first_token_frequencies_match_the_softmax(model, images):
    count = 4000
    first = sample_sequences(model, images[:1], count, 2, "multinomial", seed=3,
                             special_ids=IDS)["tokens"].numpy()[0, :, 0]
    logits = model({"images": images[:1], "tokens": np.array([[BOS, 4]])}).numpy()[0, 0].astype(np.float64)
    logits[[PAD, BOS]] = -np.inf  # never drawn (see sample_sequences)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    frequencies = np.bincount(first, minlength=probs.shape[0]) / count
    tolerance = 4.5 * np.sqrt(probs * (1 - probs) / count) + 1e-3
    assert (np.abs(frequencies - probs) <= tolerance).all(), (frequencies, probs)


def test_a_model_that_strongly_favours_one_word_samples_only_that_word(vocab, images):
    model = _model(vocab, seed=2)
    word = vocab.token_to_id("circle")
    bias = model.decoder.output_dense.bias.numpy()
    bias[word] = 60.0
    model.decoder.output_dense.bias.assign(bias)
    tokens = sample_sequences(model, images, 5, 6, "multinomial", seed=9, special_ids=IDS)["tokens"].numpy()
    assert (tokens == word).all()  # never <eos>: every sample runs to max_steps


def test_greedy_baseline_mode_adds_the_greedy_caption(model, images):
    out = sample_sequences(model, images, 3, 8, "greedy_baseline", seed=0, special_ids=IDS)
    assert out["tokens"].shape == (3, 3, 8)
    np.testing.assert_array_equal(out["greedy_tokens"].numpy(),
                                  generate(model, images, beam_size=1, max_steps=8, special_ids=IDS)["tokens"].numpy())
    beams = sample_sequences(model, images, 3, 8, "beam", special_ids=IDS)
    searched = generate(model, images, beam_size=3, max_steps=8, special_ids=IDS)["beam_tokens"]
    np.testing.assert_array_equal(beams["tokens"].numpy(), searched.numpy())


def test_no_mode_puts_pad_or_bos_inside_a_caption_even_where_the_searches_would(vocab, images):
    model = _model(vocab, trained_specials=False)
    released = generate(model, images, beam_size=3, max_steps=8, special_ids=IDS)["beam_tokens"].numpy()

    def inside(tokens):  # <pad> or <bos> before the caption's end
        live = caption_mask(tokens, EOS).numpy() > 0
        return ((tokens == PAD) | (tokens == BOS))[live].any()

    assert inside(released)  # the untrained head proposes <pad> like a word
    for mode in ("beam", "multinomial", "greedy_baseline"):
        out = sample_sequences(model, images, 3, 8, mode, seed=1, special_ids=IDS)
        assert not inside(out["tokens"].numpy()), mode
        if mode == "greedy_baseline":
            assert not inside(out["greedy_tokens"].numpy())


def test_sampling_rejects_bad_arguments(model, images):
    with pytest.raises(ValueError, match="mode"):
        sample_sequences(model, images, 2, 5, "top_k", special_ids=IDS)
    with pytest.raises(ValueError, match="max_steps"):
        sample_sequences(model, images, 2, MAX_LENGTH + 1, "beam", special_ids=IDS)


@pytest.mark.parametrize("preset", ["small", "cptr_small"])  # meshed and transformer decoders
def test_sampling_compiles_with_xla_for_both_decoder_types(vocab, images, preset):
    # "greedy_baseline" runs the new loops (multinomial and the banned-token greedy); the beams go through
    # the released beam search with the same decoder view, compiled by the ScstStep test.
    model = _model(vocab, preset)

    @tf.function(jit_compile=True)
    def sample(image_inputs, seed):
        return sample_sequences(model, image_inputs, 3, 8, "greedy_baseline", seed, special_ids=IDS)

    out = sample(images, tf.constant([4, 5], tf.int64))
    assert out["tokens"].shape == (3, 3, 8) and out["greedy_tokens"].shape == (3, 8)
    np.testing.assert_array_equal(out["greedy_tokens"].numpy(),
                                  generate(model, images, beam_size=1, max_steps=8, special_ids=IDS)["tokens"].numpy())
    # The compiled samples are a function of the seed, and their log-probabilities those of teacher forcing.
    np.testing.assert_array_equal(out["tokens"].numpy(), sample(images, tf.constant([4, 5], tf.int64))["tokens"])
    log_probs, _ = sequence_log_probs(model, images, out["tokens"], training=False, special_ids=IDS)
    np.testing.assert_allclose(out["log_probs"].numpy(), log_probs.numpy(), rtol=0, atol=2e-5)
    assert sample.experimental_get_tracing_count() == 1


# ----------------------------------------------------------------------------------------- step


def _batch(images):
    # Many references per image (one padded with ""), so that most words score and rewards differ.
    captions = tf.constant([CAPTIONS[0:6], CAPTIONS[6:11] + [""], CAPTIONS[11:17]])
    return {"images": images, "captions": captions}


def _adam(model, rate=1e-3):
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build(model.trainable_variables)
    return lambda grads: optimizer.apply(grads, model.trainable_variables)


def test_scst_step_runs_compiled_updates_the_weights_and_traces_once(vocab, images):
    model = _model(vocab, seed=5)
    step = ScstStep(model, _adam(model), ScstReward(CAPTIONS), num_samples=3, mode="beam", max_steps=8, vocab=vocab)
    before = [v.numpy().copy() for v in model.trainable_variables]
    batch = _batch(images)
    beams = sample_sequences(model, images, 3, 8, "beam", special_ids=IDS)["tokens"].numpy()
    expected_reward = ScstReward(CAPTIONS)(beams, references_from_batch(batch["captions"]), vocab)
    assert (expected_reward.std(axis=1) > 0).all()  # a gradient to follow
    results = [step.step(batch) for _ in range(3)]
    for result in results:
        assert set(result) == {"loss", "reward", "baseline"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in result.values())
    # Beam mode: the baseline is the mean reward, and the first step rewards the untouched model's beams.
    assert results[0]["baseline"] == pytest.approx(results[0]["reward"], abs=1e-5)
    assert results[0]["reward"] == pytest.approx(float(expected_reward.mean()), abs=1e-5)
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert sum(changed) > len(changed) // 2
    assert step.sample_function.experimental_get_tracing_count() == 1
    assert step.update_function.experimental_get_tracing_count() == 1
    assert int(step.iterations.numpy()) == 3


def test_scst_step_greedy_baseline_reports_the_greedy_captions_reward(vocab, images):
    model = _model(vocab, seed=6)
    reward = ScstReward(CAPTIONS, include_eos=True)
    step = ScstStep(model, _adam(model), reward, num_samples=2, mode="greedy_baseline", max_steps=6,
                    jit_compile=False, vocab=vocab)
    batch = _batch(images)
    greedy = generate(model, images, beam_size=1, max_steps=6, special_ids=IDS)["tokens"].numpy()[:, None]
    expected = reward(greedy, references_from_batch(batch["captions"]), vocab).mean()
    result = step.step(batch)
    assert result["baseline"] == pytest.approx(float(expected), abs=1e-5)
    assert np.isfinite(result["loss"])
    with pytest.raises(ValueError, match="num_samples >= 2"):
        ScstStep(model, _adam(model), reward, num_samples=1, mode="multinomial", max_steps=6, vocab=vocab)
    with pytest.raises(ValueError, match="max_steps"):
        ScstStep(model, _adam(model), reward, max_steps=MAX_LENGTH + 1, vocab=vocab)
