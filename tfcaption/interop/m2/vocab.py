"""Read the Meshed-Memory Transformer's released ``vocab.pkl`` without the authors' code.

Why this module exists: the released checkpoint's output layer is indexed by the word ids of this
vocabulary, so reproducing the reference model needs its exact ``itos`` list. The file is a pickle
(protocol 3) of an object of class ``data.vocab.Vocab`` - a module from the authors' repository - with
``freqs`` (``collections.Counter``), ``itos`` (list), ``stoi`` (``collections.defaultdict`` whose default
factory is ``data.vocab._default_unk_index``) and ``vectors`` (None). Unpickling it normally would import
(and could run) code named by the file; instead a restricted unpickler maps exactly those names to
local stand-ins and refuses everything else, so a hostile ``vocab.pkl`` cannot execute anything.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from typing import Any

from tfcaption.interop.restricted_pickle import AllowListUnpickler, Guarded, MalformedPickle, load_or_raise

__all__ = ["M2_SPECIALS", "VocabularyError", "load_m2_vocab"]

# The released code builds its vocabulary with these specials first, in this order (ids 0..3).
M2_SPECIALS = ("<unk>", "<pad>", "<bos>", "<eos>")


class VocabularyError(ValueError):
    """A vocabulary file that cannot be read safely or is inconsistent; the message names the file."""


class _Vocab:
    """Stand-in for ``data.vocab.Vocab``: keeps whatever attributes the pickle restores."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise MalformedPickle(f"Vocab state must be a dict, found {type(state).__name__}")
        self.__dict__.update(state)


def _default_unk_index() -> int:
    """Stand-in for ``data.vocab._default_unk_index``: unknown words map to ``<unk>`` (id 0)."""
    return 0


_ALLOWED = {
    ("data.vocab", "Vocab"): _Vocab,
    ("data.vocab", "_default_unk_index"): Guarded(_default_unk_index, "data.vocab._default_unk_index"),
    ("collections", "Counter"): Guarded(collections.Counter, "collections.Counter"),
    ("collections", "defaultdict"): collections.defaultdict,  # a C type: immutable
    ("collections", "OrderedDict"): collections.OrderedDict,  # a C type: immutable
}


def _read(path: str) -> Any:
    with open(path, "rb") as stream:  # a missing file raises FileNotFoundError, as open() does
        return load_or_raise(
            AllowListUnpickler(stream, _ALLOWED), VocabularyError, path, "vocabulary pickle",
            "; a vocabulary may only hold data.vocab.Vocab, collections containers, strings and numbers "
            "(refused without importing it)")


def load_m2_vocab(path: str | os.PathLike) -> list[str]:
    """Return the released vocabulary's ``itos`` (id -> word), validated.

    Checks: the file holds a ``data.vocab.Vocab`` (or a plain dict) with an ``itos`` list of distinct
    strings; ids 0..3 are ``<unk>``, ``<pad>``, ``<bos>``, ``<eos>``; ``stoi``, when present, maps
    exactly the same words to the same ids. Raises :class:`VocabularyError` otherwise.
    """
    path = os.fspath(path)
    obj = _read(path)
    if isinstance(obj, _Vocab):
        state = vars(obj)
    elif isinstance(obj, dict):
        state = obj
    else:
        raise VocabularyError(
            f"{path}: expected a data.vocab.Vocab object, found {type(obj).__name__}")
    if "itos" not in state:
        raise VocabularyError(f"{path}: the vocabulary has no 'itos' (attributes: {sorted(map(str, state))})")
    itos = state["itos"]
    if not isinstance(itos, list):
        raise VocabularyError(f"{path}: 'itos' is a {type(itos).__name__}, expected a list of str")
    bad = [(i, w) for i, w in enumerate(itos) if not isinstance(w, str)]
    if bad:
        i, w = bad[0]
        raise VocabularyError(f"{path}: 'itos' entry {i} is {w!r} ({type(w).__name__}), expected str "
                              f"({len(bad)} non-string entries)")
    head = tuple(itos[: len(M2_SPECIALS)])
    if head != M2_SPECIALS:
        raise VocabularyError(
            f"{path}: expected the specials {list(M2_SPECIALS)} at ids 0..{len(M2_SPECIALS) - 1}, "
            f"found {list(head)}")
    seen: dict[str, int] = {}
    for i, word in enumerate(itos):
        if word in seen:
            raise VocabularyError(f"{path}: word {word!r} appears twice in 'itos' (ids {seen[word]} and {i})")
        seen[word] = i
    stoi = state.get("stoi")
    if stoi is not None:
        if not isinstance(stoi, Mapping):
            raise VocabularyError(f"{path}: 'stoi' is a {type(stoi).__name__}, expected a mapping")
        # Compare without indexing: indexing a defaultdict would call its factory for missing words.
        for word, index in stoi.items():
            if seen.get(word) != index:
                raise VocabularyError(
                    f"{path}: 'stoi' maps {word!r} to {index!r} but 'itos' has it at "
                    f"{seen.get(word, 'no id')}")
        if len(stoi) != len(itos):
            missing = [w for w in itos if w not in stoi]
            raise VocabularyError(
                f"{path}: 'stoi' has {len(stoi)} words, 'itos' {len(itos)}; missing from stoi: {missing[:5]}")
    return list(itos)
