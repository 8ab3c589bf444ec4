"""CIDEr-D without java, fast enough to be an SCST reward and a per-epoch validation metric.

`tfcaption.metrics.coco.caption_metrics` calls pycocoevalcap for the reported numbers. That scorer
rebuilds every n-gram vector on each call and walks Python dicts pair by pair, which is
too slow to score the 5 beams of every training image at every SCST step, and it always
takes its document frequencies from the captions it is scoring. `CiderD` computes the same quantity:

    CIDEr-D(c, R) = 10 / |R| * sum_{r in R} 1/4 * sum_{n=1..4}
                    exp(-(l_c - l_r)^2 / (2 sigma^2)) * <min(g_n(c), g_n(r)), g_n(r)> / (|g_n(c)| |g_n(r)|)

with g_n the tf-idf vector of the n-grams (tf = count, idf = log(N) - log(max(1, df))), sigma = 6 and
l the sentence length as pycocoevalcap counts it (the number of bigrams, max(words - 1, 0)). Given the
same tokens and the same document-frequency corpus it equals pycocoevalcap.cider.Cider to
floating-point rounding (the tests check 1e-6 on random captions).

Where the speed comes from: only splitting captions into words and looking the words up runs in Python.
N-grams are interned exactly, without hashing tuples: an n-gram of order k is the pair
(id of its (k-1)-gram prefix, id of its last word), packed into one int64 and looked up in a sorted
table per order with `np.searchsorted`, for all n-grams of a batch at once. Reference captions are
cooked once (ids, counts, and with a fixed corpus their tf-idf weights and norms) and cached across
calls; the clipped dot products of all (candidate, reference) pairs of a call are one sorted-key join.

Document frequencies, two modes (M2 uses both):

* ``CiderD(reference_corpus)`` with a fixed corpus: a list of documents, each a list of captions; an
  n-gram's df is the number of documents containing it and N = len(corpus). M2's SCST reward uses the
  training captions with EACH CAPTION ITS OWN DOCUMENT: build that with
  ``CiderD.from_captions(train_captions)``. Evaluation-style frequencies over a fixed image set (one
  document per image, its references) are ``CiderD(list_of_reference_lists)``.
* ``CiderD(None)`` (the default): the frequencies come from the references passed to each `score`
  call, one document per item, N = number of items, exactly as pycocoevalcap's Cider does. Use it to
  validate a whole split in one call; not on a batch of SCST beams (the repeated references of one
  image's beams would count as separate documents).

Reference:
    Vedantam, Zitnick, Parikh, "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015
    (CIDEr-D: Section 5.1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tfcaption.metrics.coco import ptb_tokenize_python

_SHIFT = 32  # ids (< 2**31) live in the low 32 bits of a packed key
_LOW = (1 << _SHIFT) - 1


class _PairTable:
    """Exact interning of the n-grams of one order as sorted packed (prefix id, word id) keys."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)
        self.ids = np.zeros(0, dtype=np.int64)
        self.size = 0

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.size == 0:
            return np.zeros(keys.shape, dtype=np.int64), np.zeros(keys.shape, dtype=bool)
        # Binary search is several times faster on a large table when the queries come sorted.
        order = np.argsort(keys)
        pos = np.empty(keys.shape, dtype=np.int64)
        pos[order] = np.searchsorted(self.keys, keys[order])
        np.minimum(pos, self.size - 1, out=pos)
        found = self.keys[pos] == keys
        return self.ids[pos], found

    def lookup(self, keys: np.ndarray, insert: bool) -> np.ndarray:
        """Ids of `keys`. Keys not in the table are inserted (insert=True) or get provisional ids
        >= size, consistent within this call and never equal to a stored id (insert=False)."""
        ids, found = self._find(keys)
        missing = ~found
        if missing.any():
            new_keys, inverse = np.unique(keys[missing], return_inverse=True)
            new_ids = self.size + np.arange(new_keys.shape[0], dtype=np.int64)
            ids = ids.copy()
            ids[missing] = new_ids[inverse]
            if insert:
                where = np.searchsorted(self.keys, new_keys)
                self.keys = np.insert(self.keys, where, new_keys)
                self.ids = np.insert(self.ids, where, new_ids)
                self.size += new_keys.shape[0]
                if self.size >= 1 << (_SHIFT - 1):
                    raise OverflowError("CiderD: more than 2**31 distinct n-grams of one order.")
        return ids


class _Cooked:
    """Cooked sentences: one row per distinct (sentence, order, n-gram), sorted in that order."""

    __slots__ = ("sent", "order", "ids", "tf", "lengths", "bounds")

    def __init__(self, sent, order, ids, tf, lengths):
        self.sent, self.order, self.ids, self.tf, self.lengths = sent, order, ids, tf, lengths
        self.bounds = np.searchsorted(sent, np.arange(lengths.shape[0] + 1))


class CiderD:
    """CIDEr-D scorer (pycocoevalcap-compatible) with exact vectorised n-gram interning.

    Args:
        reference_corpus: documents for the document frequencies, each a list of captions; None
            takes them from the references of each `score` call (one document per item). See the
            module docstring for M2's two conventions (`from_captions` builds M2's SCST corpus).
        n: largest n-gram order (4 in CIDEr-D).
        sigma: standard deviation of the Gaussian length penalty (6 in CIDEr-D).
        tokenize: True applies `ptb_tokenize_python` to every caption (raw text in, java-free
            PTB-like tokens); False splits on whitespace only, for captions that are already
            tokenised (decoded from the vocabulary, or PTB output to reproduce pycocoevalcap).
        cache_size: most reference captions kept cooked; the cache is emptied when it would be
            exceeded (the n-gram tables are kept; one call's own references are always cached).

    Example:
        >>> scorer = CiderD.from_captions(["a dog runs", "a cat sleeps", "two dogs play"])
        >>> mean, per_item = scorer.score(["a dog runs"], [["a dog runs", "a dog is running"]])

    Reference:
        Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation", CVPR 2015.
    """

    def __init__(
        self,
        reference_corpus: Sequence[Sequence[str]] | None = None,
        n: int = 4,
        sigma: float = 6.0,
        tokenize: bool = True,
        cache_size: int = 1_000_000,
    ):
        if n < 1:
            raise ValueError(f"CiderD: n must be >= 1, got {n}.")
        self.n = int(n)
        self.sigma = float(sigma)
        self.tokenize = bool(tokenize)
        self.cache_size = int(cache_size)
        self._words: dict[str, int] = {}
        self._tables = [_PairTable() for _ in range(self.n)]  # index 0 unused: unigram id = word id
        self._cache: dict[str, tuple] = {}
        self.fixed_corpus = reference_corpus is not None
        self._num_documents = 0
        if self.fixed_corpus:
            self._build_document_frequencies(reference_corpus)

    @classmethod
    def from_captions(cls, captions: Iterable[str], **kwargs) -> "CiderD":
        """Fixed document frequencies with each caption its own document (M2's SCST reward)."""
        return cls([[caption] for caption in captions], **kwargs)

    @property
    def corpus_size(self) -> int | None:
        """N of the fixed corpus (None when frequencies come from each call's references)."""
        return self._num_documents if self.fixed_corpus else None

    def get_config(self) -> dict:
        return {"n": self.n, "sigma": self.sigma, "tokenize": self.tokenize,
                "cache_size": self.cache_size, "corpus_size": self.corpus_size}

    # ----------------------------------------------------------------------------- cooking
    def _split(self, caption: str) -> list[str]:
        return ptb_tokenize_python(caption).split() if self.tokenize else caption.split()

    def _cook(self, sentences: Sequence[str], insert: bool) -> _Cooked:
        """N-gram ids and counts of many sentences at once."""
        word_lists = [self._split(s) for s in sentences]
        words_index = self._words
        # setdefault(w, len(d)) gives a new word the next id: words are interned permanently (their
        # number is bounded by the vocabulary), so unigram ids never need provisional values.
        flat = np.fromiter((words_index.setdefault(w, len(words_index))
                            for ws in word_lists for w in ws), dtype=np.int64)
        lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
        sent = np.repeat(np.arange(len(word_lists), dtype=np.int64), lengths)
        remaining = lengths[sent] - (np.arange(flat.shape[0]) - (np.cumsum(lengths) - lengths)[sent])
        parts_key = [((sent * self.n) << _SHIFT) | flat]
        prefix = flat
        for k in range(1, self.n):
            at = np.nonzero(remaining > k)[0]  # positions starting an n-gram of order k + 1
            ids = self._tables[k].lookup((prefix[at] << _SHIFT) | flat[at + k], insert)
            prefix = np.zeros_like(flat)
            prefix[at] = ids
            parts_key.append(((sent[at] * self.n + k) << _SHIFT) | ids)
        keys, tf = np.unique(np.concatenate(parts_key), return_counts=True)
        head = keys >> _SHIFT
        return _Cooked(head // self.n, head % self.n, keys & _LOW, tf.astype(np.float64),
                       np.maximum(lengths - 1, 0))

    def _build_document_frequencies(self, corpus: Sequence[Sequence[str]], chunk: int = 20000):
        documents = [list(doc) for doc in corpus]
        if not documents:
            raise ValueError("CiderD: reference_corpus is empty.")
        counts = [np.zeros(0, dtype=np.int64) for _ in range(self.n)]
        for start in range(0, len(documents), chunk):
            docs = documents[start:start + chunk]
            owner = np.repeat(np.arange(len(docs), dtype=np.int64), [len(d) for d in docs])
            cooked = self._cook([c for d in docs for c in d], insert=True)
            # an n-gram counts once per document, however many of its captions contain it
            key = np.unique(((owner[cooked.sent] * self.n + cooked.order) << _SHIFT) | cooked.ids)
            order, ids = (key >> _SHIFT) % self.n, key & _LOW
            for k in range(self.n):
                size = len(self._words) if k == 0 else self._tables[k].size
                grown = np.zeros(size, dtype=np.int64)
                grown[:counts[k].shape[0]] = counts[k]
                counts[k] = grown + np.bincount(ids[order == k], minlength=size)
        self._num_documents = len(documents)
        log_n = math.log(float(self._num_documents))
        self._idf = [log_n - np.log(np.maximum(c.astype(np.float64), 1.0)) for c in counts]

    def _fixed_idf(self, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Corpus idf; n-grams the corpus never saw (df 0) get log(N), as in pycocoevalcap."""
        out = np.full(ids.shape, math.log(float(self._num_documents)))
        for k in range(self.n):
            idf = self._idf[k]
            sel = np.nonzero((order == k) & (ids < idf.shape[0]))[0]
            out[sel] = idf[ids[sel]]
        return out

    def _references(self, captions: list[str]) -> list[tuple]:
        """Cached (order, ids, tf, length, weights, norms) per reference caption."""
        cache = self._cache
        missing = list(dict.fromkeys(c for c in captions if c not in cache))
        if missing and len(cache) + len(missing) > self.cache_size:
            cache.clear()
            missing = list(dict.fromkeys(captions))
        if missing:
            cooked = self._cook(missing, insert=True)
            weight = norm = None
            if self.fixed_corpus:
                weight = cooked.tf * self._fixed_idf(cooked.order, cooked.ids)
                norm = np.sqrt(np.bincount(cooked.sent * self.n + cooked.order, weight ** 2,
                                           minlength=len(missing) * self.n)).reshape(-1, self.n)
            b = cooked.bounds
            for i, caption in enumerate(missing):
                s = slice(b[i], b[i + 1])
                cache[caption] = (cooked.order[s], cooked.ids[s], cooked.tf[s],
                                  int(cooked.lengths[i]),
                                  None if weight is None else weight[s],
                                  None if norm is None else norm[i])
        return [cache[c] for c in captions]

    # ----------------------------------------------------------------------------------- API
    def score(self, candidates: Sequence[str], references: Sequence[Sequence[str]]
              ) -> tuple[float, np.ndarray]:
        """CIDEr-D of each candidate against its own references.

        Args:
            candidates: B captions (raw text, or tokenised text when ``tokenize=False``; "" is fine).
            references: B lists of reference captions (at least one each); item i scores
                candidates[i] against references[i].

        Returns:
            (mean over the B items, float64 array [B] of per-item scores), on pycocoevalcap's scale
            (1.0 is reported as 100).
        """
        if len(candidates) != len(references):
            raise ValueError(f"CiderD.score: {len(candidates)} candidates but "
                             f"{len(references)} reference lists.")
        num, n = len(candidates), self.n
        if num == 0:
            return 0.0, np.zeros(0)
        ref_captions, ref_owner = [], []
        for item, refs in enumerate(references):
            if isinstance(refs, str) or len(refs) == 0:
                raise ValueError(f"CiderD.score: references[{item}] must be a non-empty list "
                                 "of captions.")
            ref_captions.extend(refs)
            ref_owner.extend([item] * len(refs))
        num_refs = len(ref_captions)
        ref_owner = np.asarray(ref_owner, dtype=np.int64)

        # References: cached rows, flattened with the reference (r_ref) and item (r_item) of each.
        rows = self._references(ref_captions)
        sizes = np.fromiter((r[1].shape[0] for r in rows), dtype=np.int64, count=num_refs)
        r_order = np.concatenate([r[0] for r in rows])
        r_ids = np.concatenate([r[1] for r in rows])
        r_len = np.fromiter((r[3] for r in rows), dtype=np.float64, count=num_refs)
        r_ref = np.repeat(np.arange(num_refs, dtype=np.int64), sizes)
        r_item = ref_owner[r_ref]

        # Candidates: cooked per call; n-grams no reference ever had get provisional ids.
        cand = self._cook(list(candidates), insert=False)
        c_item, c_order, c_ids = cand.sent, cand.order, cand.ids

        if self.fixed_corpus:
            c_weight = cand.tf * self._fixed_idf(c_order, c_ids)
            r_weight = np.concatenate([r[4] for r in rows])
            r_norm = np.stack([r[5] for r in rows])
        else:
            # One document per item: df(g) = number of items whose references contain g.
            gram_bits = _SHIFT + max(1, (n - 1).bit_length())  # (order, id) packed in gram_bits
            gram = (r_order << _SHIFT) | r_ids
            per_item = np.unique((r_item << gram_bits) | gram) & ((1 << gram_bits) - 1)
            grams, df = np.unique(per_item, return_counts=True)
            log_n = math.log(float(num))

            def idf_of(keys):
                if grams.shape[0] == 0:
                    return np.full(keys.shape, log_n)
                pos = np.minimum(np.searchsorted(grams, keys), grams.shape[0] - 1)
                found_df = np.where(grams[pos] == keys, df[pos], 0)
                return log_n - np.log(np.maximum(found_df, 1).astype(np.float64))

            c_weight = cand.tf * idf_of((c_order << _SHIFT) | c_ids)
            r_weight = np.concatenate([r[2] for r in rows]) * idf_of(gram)
            r_norm = np.sqrt(np.bincount(r_ref * n + r_order, r_weight ** 2,
                                         minlength=num_refs * n)).reshape(num_refs, n)
        c_norm = np.sqrt(np.bincount(c_item * n + c_order, c_weight ** 2,
                                     minlength=num * n)).reshape(num, n)

        # Clipped dot products: each reference row meets the same n-gram of its item's candidate.
        # The candidate rows are sorted by (item, order, id), so their packed keys are sorted.
        c_keys = ((c_item * n + c_order) << _SHIFT) | c_ids
        r_keys = ((r_item * n + r_order) << _SHIFT) | r_ids
        dot = np.zeros(num_refs * n)
        if c_keys.shape[0]:
            pos = np.minimum(np.searchsorted(c_keys, r_keys), c_keys.shape[0] - 1)
            hit = np.nonzero(c_keys[pos] == r_keys)[0]
            w_r = r_weight[hit]
            contribution = np.minimum(c_weight[pos[hit]], w_r) * w_r
            dot = np.bincount(r_ref[hit] * n + r_order[hit], contribution, minlength=num_refs * n)
        # float64 even when no n-gram matches (bincount of nothing with empty weights is int64).
        dot = dot.reshape(num_refs, n).astype(np.float64, copy=False)

        # Weights are >= 0, so a zero norm means a zero dot product: divide only where both norms
        # are non-zero, as pycocoevalcap does.
        denominator = c_norm[ref_owner] * r_norm
        sim = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
        delta = cand.lengths.astype(np.float64)[ref_owner] - r_len
        sim *= np.exp(-(delta ** 2) / (2.0 * self.sigma ** 2))[:, None]

        total = np.bincount(ref_owner, sim.mean(axis=1), minlength=num)
        scores = 10.0 * total / np.bincount(ref_owner, minlength=num)
        return float(scores.mean()), scores
