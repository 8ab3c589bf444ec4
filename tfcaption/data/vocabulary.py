"""Choosing a tokenizer by name: ``"word"`` (the default, :class:`tfcaption.data.tokenizer.Vocabulary`),
``"wordpiece"`` (:class:`tfcaption.data.wordpiece.WordPieceVocabulary`) or ``"bert"`` (a BLIP checkpoint's
:class:`tfcaption.data.bert_tokenizer.BertTokenizer`), as `data.tokenizer` names it.

A ``"bert"`` vocabulary file (vocab.txt: every token in id order, the added ones included) has its settings
(lower-casing, special tokens) beside it in ``tokenizer_config.json`` (`BERT_SETTINGS_FILE`), so a run
directory reloads its tokenizer without the Hub files.

Kept apart from both classes so that the word tokenizer never imports tensorflow-text, and neither class
module imports the other's users.
"""

from __future__ import annotations

from typing import Iterable, Optional

from tfcaption.data.tokenizer import Vocabulary

__all__ = ["VOCABULARY_KINDS", "build_vocabulary", "load_vocabulary", "save_vocabulary", "vocabulary_class"]

VOCABULARY_KINDS = ("word", "wordpiece", "bert")
BERT_SETTINGS_FILE = "tokenizer_config.json"


def vocabulary_class(kind: str):
    if kind == "word":
        return Vocabulary
    if kind == "wordpiece":
        # Imported here so that word-level users never import tensorflow-text.
        from tfcaption.data.wordpiece import WordPieceVocabulary

        return WordPieceVocabulary
    if kind == "bert":
        from tfcaption.data.bert_tokenizer import BertTokenizer

        return BertTokenizer
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
    if kind == "bert":
        raise ValueError("data.tokenizer 'bert' is a checkpoint's tokenizer (tfcaption-import): it is not built "
                         "from captions; fine-tune from the imported run (--init-from).")
    return vocabulary_class(kind).build(captions, min_count=min_count, max_size=max_size)


def load_vocabulary(path: str, kind: str = "word") -> Vocabulary:
    """Read a vocabulary file written by ``save`` as the given ``kind`` (``"word"`` or ``"wordpiece"``).

    The file does not record its kind (one token per line either way), so the caller says which.

    Raises:
        ValueError: for an unknown ``kind``.
        FileNotFoundError: when ``path`` does not exist.
    """
    if kind == "bert":
        return _load_bert(path)
    return vocabulary_class(kind).load(path)


def _load_bert(path: str):
    import json
    import os

    from tfcaption.data.bert_tokenizer import BertTokenizer

    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    with open(path, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    settings_path = os.path.join(os.path.dirname(path), BERT_SETTINGS_FILE)
    settings = {}
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as f:
            settings = json.load(f)
    return BertTokenizer(tokens, **settings)


def save_vocabulary(vocab, path: str) -> str:
    """Writes ``vocab`` to ``path`` (one token per line, in id order); a ``BertTokenizer``'s settings go to
    ``tokenizer_config.json`` beside it. Returns ``path``."""
    import json
    import os

    from tfcaption.data.bert_tokenizer import BertTokenizer

    if not isinstance(vocab, BertTokenizer):
        return vocab.save(path)
    settings = vocab.get_config()
    tokens = settings.pop("tokens")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(token + "\n" for token in tokens))
    with open(os.path.join(os.path.dirname(path) or ".", BERT_SETTINGS_FILE), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2, sort_keys=True)
    return path
