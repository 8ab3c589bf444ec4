"""CiderD against pycocoevalcap's Cider (the reference implementation of CIDEr-D) and by hand."""

import math
from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.cider.cider_scorer import CiderScorer

from tfcaption.metrics.cider import CiderD
from tfcaption.metrics.coco import ptb_tokenize_python

VOCAB = ("a the dog dogs cat man woman sits on in with red blue table street runs plays two of "
         "near is are").split()


def _random_caption(rng, low=0, high=12):
    # a small vocabulary makes repeated words and shared n-grams (clipping, df > 1) common
    return " ".join(rng.choice(VOCAB, rng.integers(low, high)))


def _random_items(seed, count):
    rng = np.random.default_rng(seed)
    refs = [[_random_caption(rng, 1) for _ in range(rng.integers(1, 6))] for _ in range(count)]
    cands = [_random_caption(rng) for _ in range(count)]
    cands[0] = ""  # an empty candidate
    cands[1] = refs[1][0]  # a candidate equal to a reference
    cands[2] = "dog dog dog dog dog"  # repeated words: the clipping matters
    return cands, refs


def _pycocoevalcap_per_image(cands, refs):
    gts = {i: refs[i] for i in range(len(cands))}
    res = {i: [cands[i]] for i in range(len(cands))}
    return Cider().compute_score(gts, res)


def test_matches_pycocoevalcap_with_per_image_document_frequencies():
    cands, refs = _random_items(0, 200)
    expected_mean, expected = _pycocoevalcap_per_image(cands, refs)
    scorer = CiderD(tokenize=False)
    mean, scores = scorer.score(cands, refs)
    assert scores.shape == (200,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert mean == pytest.approx(expected_mean, abs=1e-9)
    assert scores[1] > 1.0 and scores[0] == 0.0
    # second call: references now come from the cache, n-gram tables are shared with the first
    cands2, refs2 = _random_items(1, 150)
    _, expected2 = _pycocoevalcap_per_image(cands2, refs2)
    np.testing.assert_allclose(scorer.score(cands2, refs2)[1], expected2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scorer.score(cands, refs)[1], expected, rtol=0, atol=1e-6)


def test_fixed_corpus_one_document_per_image_matches_pycocoevalcap():
    cands, refs = _random_items(2, 120)
    _, expected = _pycocoevalcap_per_image(cands, refs)
    scorer = CiderD(refs, tokenize=False)  # the same documents, fixed up front
    assert scorer.corpus_size == 120
    # scored in two halves: with fixed frequencies the batch split must not matter
    first = scorer.score(cands[:50], refs[:50])[1]
    second = scorer.score(cands[50:], refs[50:])[1]
    np.testing.assert_allclose(np.concatenate([first, second]), expected, rtol=0, atol=1e-6)


def test_each_caption_its_own_document_matches_pycocoevalcap():
    # M2's SCST reward: df and N from the training captions, each caption a document.
    rng = np.random.default_rng(3)
    corpus = [_random_caption(rng, 1) for _ in range(300)]
    cands, refs = _random_items(4, 60)
    refs[5] = [corpus[0], corpus[1]]  # references inside the corpus ...
    refs[6] = ["zebra giraffe elephant", "a zebra"]  # ... and with n-grams it never saw (df 0)
    cands[6] = "a zebra near a giraffe"

    # The reference value uses only pycocoevalcap code: frequencies from a scorer over the corpus,
    # and padding items so that its N = log(number of items) is the corpus size.
    corpus_scorer = CiderScorer(n=4, sigma=6.0)
    for caption in corpus:
        corpus_scorer += (None, [caption])
    corpus_scorer.compute_doc_freq()
    scorer = CiderScorer(n=4, sigma=6.0)
    for cand, ref in zip(cands, refs):
        scorer += (cand, ref)
    for _ in range(len(corpus) - len(cands)):
        scorer += ("", [""])
    scorer.document_frequency = defaultdict(float, corpus_scorer.document_frequency)
    expected = np.array(scorer.compute_cider()[: len(cands)])

    ours = CiderD.from_captions(corpus, tokenize=False)
    assert ours.corpus_size == 300
    mean, scores = ours.score(cands, refs)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    assert mean == pytest.approx(expected.mean(), abs=1e-9)
    assert scores[6] > 0


def test_scores_equal_a_hand_computed_example():
    # Two images, per-image frequencies: N = 2 and every n-gram has df 1, so idf = ln 2 everywhere.
    # Image 1: candidate == reference "a b": cosine 1 for unigrams and bigrams, 0 for n = 3, 4
    #          (both vectors empty) -> 10 * (1 + 1 + 0 + 0) / 4 = 5.
    # Image 2: "c" against "c d": unigram cosine ln2^2 / (ln2 * sqrt(2) ln2) = 1/sqrt(2); lengths
    #          (bigram counts) 0 and 1 -> penalty exp(-1 / 72) -> 10 / 4 * exp(-1/72) / sqrt(2).
    mean, scores = CiderD().score(["a b", "c"], [["a b"], ["c d"]])
    expected_2 = 2.5 * math.exp(-1.0 / 72.0) / math.sqrt(2.0)
    np.testing.assert_allclose(scores, [5.0, expected_2], rtol=1e-12)
    assert mean == pytest.approx((5.0 + expected_2) / 2)


def test_beams_scored_in_one_batch_equal_one_by_one():
    # SCST layout: several beams per image share the image's references; with a fixed corpus each
    # item's reward must not depend on what else is in the batch.
    rng = np.random.default_rng(5)
    images = [[_random_caption(rng, 3) for _ in range(5)] for _ in range(8)]
    scorer = CiderD.from_captions([c for refs in images for c in refs], tokenize=False)
    beams = [_random_caption(rng, 2) for _ in range(40)]
    refs = [images[i // 5] for i in range(40)]
    _, batch = scorer.score(beams, refs)
    single = [scorer.score([b], [r])[1][0] for b, r in zip(beams, refs)]
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-12)


def test_raw_text_is_tokenised_like_the_python_ptb_tokeniser():
    refs = [["A dog's ball, on the grass.", "The dog plays (outside)!"], ["Two CATS sit."]]
    cands = ["A dog's ball.", "two cats sit on a mat"]
    raw = CiderD(tokenize=True).score(cands, refs)[1]
    pre = CiderD(tokenize=False).score(
        [ptb_tokenize_python(c) for c in cands],
        [[ptb_tokenize_python(r) for r in rr] for rr in refs])[1]
    np.testing.assert_allclose(raw, pre, rtol=0, atol=1e-12)
    assert raw[0] > 0 and raw[1] > 0


def test_small_cache_gives_the_same_scores():
    cands, refs = _random_items(6, 80)
    big = CiderD(refs, tokenize=False).score(cands, refs)[1]
    small_scorer = CiderD(refs, tokenize=False, cache_size=7)
    for _ in range(2):  # the cache is emptied and refilled on every call
        np.testing.assert_allclose(small_scorer.score(cands, refs)[1], big, rtol=0, atol=1e-12)
    # emptied before this call's references went in (a call's own references are always kept)
    assert len(small_scorer._cache) == len({r for rr in refs for r in rr})


def test_mismatched_inputs_are_errors_and_empty_inputs_score_zero():
    scorer = CiderD()
    with pytest.raises(ValueError, match="2 candidates but 1"):
        scorer.score(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="references\\[0\\]"):
        scorer.score(["a"], [[]])
    with pytest.raises(ValueError, match="empty"):
        CiderD([])
    mean, scores = scorer.score([], [])
    assert mean == 0.0 and scores.shape == (0,)
    mean, scores = scorer.score(["", ""], [[""], ["..."]])  # nothing to match at all
    assert mean == 0.0 and np.all(scores == 0.0)


def test_candidates_sharing_no_ngram_with_any_reference_score_zero():
    references = [["a red circle", "one red circle"], ["two blue squares", "blue squares"]]
    mean, scores = CiderD(references).score(["green", "yellow"], references)
    assert mean == 0.0 and scores.tolist() == [0.0, 0.0]
