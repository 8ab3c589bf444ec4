"""Choosing a tokenizer by name: ``"word"`` (the default, :class:`tfcaption.data.tokenizer.Vocabulary`) or
``"wordpiece"`` (:class:`tfcaption.data.wordpiece.WordPieceVocabulary`), as `data.tokenizer` names it.

Kept apart from both classes so that the word tokenizer never imports tensorflow-text, and neither class
module imports the other's users.
"""

from __future__ import annotations

from typing import Iterable, Optional

from tfcaption.data.tokenizer import Vocabulary

__all__ = ["VOCABULARY_KINDS", "build_vocabulary", "load_vocabulary", "vocabulary_class"]

VOCABULARY_KINDS = ("word", "wordpiece")


def vocabulary_class(kind: str):
    if kind == "word":
        return Vocabulary
    if kind == "wordpiece":
        # Imported here so that word-level users never import tensorflow-text.
        from tfcaption.data.wordpiece import WordPieceVocabulary

        return WordPieceVocabulary
    raise ValueError(f"unknown vocabulary kind {kind!r}; expected one of {', '.join(map(repr, VOCABULARY_KINDS))}")


def build_vocabulary(kind: str, captions: Iterable[str], min_count: int = 1,
                     max_size: Optional[int] = None) -> Vocabulary:
    """Build a vocabulary of the given ``kind`` from training captions.

    Args:
        kind: ``"word"`` (:class:`Vocabulary`) or ``"wordpiece"``
            (:class:`~tfcaption.data.wordpiece.WordPieceVocabulary`, needs tensorflow-text).
        captions: raw training captions.
        min_count: see the ``build`` method of the chosen class.
        max_size: see the ``build`` method of the chosen class (for ``"wordpiece"`` ``None`` means 8000).

    Raises:
        ValueError: for any other ``kind``.

    Example:
        >>> build_vocabulary("word", ["a red circle", "a square"]).tokens[4:]
        ['a', 'circle', 'red', 'square']
    """
    return vocabulary_class(kind).build(captions, min_count=min_count, max_size=max_size)


def load_vocabulary(path: str, kind: str = "word") -> Vocabulary:
    """Read a vocabulary file written by ``save`` as the given ``kind`` (``"word"`` or ``"wordpiece"``).

    The file does not record its kind (one token per line either way), so the caller says which.

    Raises:
        ValueError: for an unknown ``kind``.
        FileNotFoundError: when ``path`` does not exist.
    """
    return vocabulary_class(kind).load(path)
