"""Caption normalisation and the word vocabulary, in Python and as TensorFlow graph ops.

Captions are turned into words by one rule, implemented twice -- in Python (building the vocabulary,
reference captions for metrics) and in TensorFlow (inside tf.data and exported SavedModels) -- and the
two must agree character for character, or the ids a model was trained on would differ from the ids
it is evaluated or served with. The rule:

1. every character that is not a letter, a combining mark or a number (Unicode general categories
   L*, M*, N*) becomes a space -- so punctuation, symbols, underscores and every kind of whitespace;
2. lowercase (full Unicode case mapping: Python ``str.lower`` / ICU in ``tf.strings.lower``);
3. runs of spaces collapse to one; leading and trailing spaces are removed.

The set of kept characters is computed once from Python's ``unicodedata`` and handed to RE2 as an explicit
character class, so both sides use the *same* Unicode tables (RE2's own ``\\p{L}`` tables are a newer
Unicode version than Python 3.11's). Combining marks are kept so decomposed accents ("e" + U+0301) and
scripts written with marks (Devanagari, Thai) do not split words apart. Step 1 runs before step 2 in
both implementations because ICU drops NUL characters while lowercasing.
Known residual difference: ICU's case tables (TF 2.21) lack ~40 lowercase mappings that Unicode 14 added
(Vithkuqi, a few Latin Extended-D / Glagolitic letters); no caption corpus we target contains them.

The vocabulary keeps the Meshed-Memory Transformer's special tokens and ids (``<unk>``=0, ``<pad>``=1,
``<bos>``=2, ``<eos>``=3), then words by descending count, ties broken alphabetically, so a vocabulary
built twice from the same captions is identical.

A subword alternative with the same interface, for languages written without spaces and open
vocabularies, is :class:`tfcaption.data.wordpiece.WordPieceVocabulary`; ``tfcaption.data.vocabulary``
picks either by name (``"word"``, the default, or ``"wordpiece"``).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
import unicodedata
from typing import Iterable, Optional, Sequence

import tensorflow as tf

__all__ = [
    "SPECIALS",
    "UNK",
    "PAD",
    "BOS",
    "EOS",
    "normalize_caption",
    "normalize_caption_tf",
    "SpecialIds",
    "TokenTable",
    "Vocabulary",
    "swap_left_right",
]

UNK, PAD, BOS, EOS = "<unk>", "<pad>", "<bos>", "<eos>"
SPECIALS = (UNK, PAD, BOS, EOS)


@functools.lru_cache(maxsize=None)
def _kept_ranges() -> tuple[tuple[int, int], ...]:
    """Code-point ranges of Unicode categories L*, M*, N* per Python's unicodedata (a walk over every code point, so cached)."""
    category = unicodedata.category
    ranges, start = [], None
    for cp in range(0x110000):
        keep = category(chr(cp))[0] in "LMN"
        if keep and start is None:
            start = cp
        elif not keep and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return tuple(ranges)


@functools.lru_cache(maxsize=None)
def _python_pattern() -> "re.Pattern[str]":
    cls = "".join(
        f"\\U{a:08X}" if a == b else f"\\U{a:08X}-\\U{b:08X}" for a, b in _kept_ranges())
    return re.compile(f"[^{cls}]+")


@functools.lru_cache(maxsize=None)
def _re2_pattern() -> str:
    """The same character class for RE2 (``\\x{...}`` escapes)."""
    cls = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in _kept_ranges())
    return f"[^{cls}]+"


_ASCII_DROP = re.compile(r"[^A-Za-z0-9]+")


def normalize_caption(text: str) -> str:
    """Normalise a caption: non-(letter|mark|number) -> space, lowercase, collapse and strip spaces.

    Example:
        >>> normalize_caption("  A Dog's  ball, (RED)!\\n")
        'a dog s ball red'
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if text.isascii():  # fast path: the same rule restricted to ASCII
        return " ".join(_ASCII_DROP.sub(" ", text).lower().split())
    return " ".join(_python_pattern().sub(" ", text).lower().split())


def normalize_caption_tf(text: tf.Tensor) -> tf.Tensor:
    """TensorFlow version of :func:`normalize_caption` for a ``tf.string`` tensor of any shape.

    Core TF ops only (RE2 regex, ICU lowercase), so it runs inside tf.data and SavedModels.
    """
    text = tf.convert_to_tensor(text, dtype=tf.string)
    text = tf.strings.regex_replace(text, _re2_pattern(), " ")
    text = tf.strings.lower(text, encoding="utf-8")
    return tf.strings.strip(text)


def swap_left_right(words):
    """Swap the whole words "left" and "right" (the caption of a mirrored image); any shape."""
    return tf.where(tf.equal(words, "left"), "right", tf.where(tf.equal(words, "right"), "left", words))


def _swap_left_right_rows(words: tf.RaggedTensor, flip) -> tf.RaggedTensor:
    """:func:`swap_left_right` in the rows ``b`` of ``words [B, None]`` where ``flip[b]``."""
    row_flip = tf.gather(tf.convert_to_tensor(flip, tf.bool), words.value_rowids())
    flat = words.flat_values
    return words.with_flat_values(tf.where(row_flip, swap_left_right(flat), flat))


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """The token ids decoding and training take from a tokenizer, never from the model.

    `pad_id` fills token rows after the end (teacher forcing masks it, the loss skips it), `bos_id` is the
    first decoder input, and `eos_id` ends a caption. Each tokenizer has its own: the word and WordPiece
    vocabularies use M2's (1, 2, 3); other tokenizers differ. `SpecialIds.of` reads them from a vocabulary,
    a `CaptionerPreprocessor` or another `SpecialIds`.

    Example:
        >>> SpecialIds.of(Vocabulary.build(["a circle"]))
        SpecialIds(pad_id=1, bos_id=2, eos_id=3)
    """

    pad_id: int
    bos_id: int
    eos_id: int

    @classmethod
    def of(cls, source) -> "SpecialIds":
        """The ids of `source`: a `SpecialIds`, or anything with `pad_id`, `bos_id` and `eos_id` (a
        `Vocabulary`, `WordPieceVocabulary` or `CaptionerPreprocessor`)."""
        if isinstance(source, cls):
            return source
        try:
            return cls(int(source.pad_id), int(source.bos_id), int(source.eos_id))
        except AttributeError:
            raise TypeError("special ids come from a tokenizer: pass a Vocabulary, a CaptionerPreprocessor or a "
                            f"SpecialIds, got {type(source).__name__}.") from None


class TokenTable:
    """Tokens in id order and the id of each: what every tokenizer kind (`Vocabulary`, `WordPieceVocabulary`,
    `BertTokenizer`) shares. Subclasses call `_set_tokens` once their tokens are checked and define `unk_id`."""

    def _set_tokens(self, tokens: Sequence[str], what: str = "vocabulary") -> None:
        """Keeps ``tokens`` (in id order); a ValueError naming the first five duplicates (``what``: the
        kind of vocabulary, for the message)."""
        if len(set(tokens)) != len(tokens):
            dup = [t for t, n in collections.Counter(tokens).items() if n > 1]
            raise ValueError(f"duplicate {what} tokens: {dup[:5]!r}")
        self._tokens = list(tokens)
        self._ids = {t: i for i, t in enumerate(self._tokens)}

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    @property
    def size(self) -> int:
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def special_ids(self) -> SpecialIds:
        """`SpecialIds` (pad, bos, eos) of this tokenizer: what decoding and training read."""
        return SpecialIds.of(self)

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; the unknown token's id for a token outside the table."""
        return self._ids.get(token, self.unk_id)


class Vocabulary(TokenTable):
    """Word <-> id mapping with the M2 special tokens at ids 0..3.

    Args:
        tokens: every token, in id order, starting with ``SPECIALS`` (``<unk>``, ``<pad>``, ``<bos>``,
            ``<eos>``); tokens must be unique, non-empty and free of whitespace (one per line in vocab.txt).

    Example:
        >>> vocab = Vocabulary.build(["A red circle.", "a blue square"], min_count=1)
        >>> vocab.tokens[:6]
        ['<unk>', '<pad>', '<bos>', '<eos>', 'a', 'blue']
        >>> vocab.decode(vocab.encode("A red square!", add_bos_eos=True))
        'a red square'
    """

    unk_id, pad_id, bos_id, eos_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]):
        tokens = [str(t) for t in tokens]
        if tuple(tokens[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {tuple(tokens[:4])}")
        bad = [t for t in tokens if not t or any(ch.isspace() for ch in t)]
        if bad:
            raise ValueError(f"vocabulary tokens must be non-empty without whitespace; bad: {bad[:5]!r}")
        self._set_tokens(tokens)
        self._lookup = None

    # ------------------------------------------------------------------ construction / IO
    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1,
              max_size: Optional[int] = None) -> "Vocabulary":
        """Vocabulary of the normalised words of ``captions`` occurring at least ``min_count`` times.

        Words are ordered by descending count, then alphabetically. ``max_size`` (optional) caps the
        total size including the 4 specials.
        """
        counts = collections.Counter()
        for caption in captions:
            counts.update(normalize_caption(caption).split())
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def save(self, path: str) -> str:
        """Write the tokens to ``path`` (usually ``.../vocab.txt``), one per line; line number = id."""
        path = str(path)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            tf.io.gfile.makedirs(parent)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write("\n".join(self._tokens) + "\n")
        return path

    @classmethod
    def load(cls, path: str) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        path = str(path)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"vocabulary file {path!r} not found")
        with tf.io.gfile.GFile(path, "r") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        return cls(lines)

    # ------------------------------------------------------------------ basic properties
    def __contains__(self, token: str) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        # The exact type: a WordPieceVocabulary with the same tokens encodes text differently.
        return type(other) is type(self) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocabulary(size={self.size})"

    def id_to_token(self, index: int) -> str:
        index = int(index)
        return self._tokens[index] if 0 <= index < len(self._tokens) else UNK

    # ------------------------------------------------------------------ Python encode / decode
    def encode(self, text: str, add_bos_eos: bool = False) -> list[int]:
        """Ids of the normalised words of ``text``; unknown words -> ``<unk>``.

        No ``<bos>``/``<eos>`` unless ``add_bos_eos`` (the same as :meth:`encode_tf`).
        """
        ids = [self._ids.get(w, self.unk_id) for w in normalize_caption(text).split()]
        if add_bos_eos:
            ids = [self.bos_id] + ids + [self.eos_id]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Words of ``ids`` joined by spaces: stops at the first ``<eos>``, skips ``<pad>`` and ``<bos>``;
        ``<unk>`` (and any id outside the vocabulary) is shown as ``"<unk>"``."""
        return " ".join(self.id_to_token(i) for i in self.caption_ids(ids))

    def caption_ids(self, ids: Iterable[int]) -> Iterable[int]:
        """The ids of ``ids`` that are text: up to the first ``<eos>``, without ``<pad>`` and ``<bos>``."""
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                yield i

    # ------------------------------------------------------------------ TensorFlow
    def lookup_layer(self):
        """A ``keras.layers.StringLookup`` whose ids equal this vocabulary's ids.

        StringLookup puts its single OOV token at index 0 and the given vocabulary after it, so passing
        every token except ``<unk>`` (in id order) with ``oov_token="<unk>"`` makes index i = token i.
        The layer is created once (outside any graph being traced) and reused.
        """
        if self._lookup is None:
            import keras  # local: keeps `import tfcaption.data.tokenizer` light for Python-only users

            with tf.init_scope():
                self._lookup = keras.layers.StringLookup(
                    vocabulary=self._tokens[1:], num_oov_indices=1, oov_token=UNK, mask_token=None)
        return self._lookup

    def ids_tf(self, captions, flip=None) -> tf.RaggedTensor:
        """Graph version of :meth:`encode`: ``tf.string [B]`` -> ragged ``tf.int32 [B, None]``, without
        ``<bos>``/``<eos>``.

        Normalises like :func:`normalize_caption_tf`, splits at spaces, and where ``flip[b]`` is true
        swaps the whole words "left" and "right" before they are looked up (the caption of a mirrored
        image). Vectorised over the batch; usable inside tf.data.

        Args:
            captions: raw captions, ``tf.string [B]``.
            flip: optional ``tf.bool [B]``.

        Example:
            >>> vocab = Vocabulary.build(["a circle left of a square", "a square"])
            >>> vocab.ids_tf(tf.constant(["A circle, left!", "a square left"]), flip=[False, True]).to_list()
            [[4, 6, 7], [4, 5, 0]]
        """
        words = tf.strings.split(normalize_caption_tf(tf.convert_to_tensor(captions, dtype=tf.string)))
        if flip is not None:
            words = _swap_left_right_rows(words, flip)
        return self.words_to_ids_tf(words)

    def encode_tf(self, strings) -> tf.RaggedTensor:
        """Normalise and map ``strings`` (``tf.string[B]``) to ids in the graph: ``tf.int32`` ragged
        ``[B, None]``, without ``<bos>``/``<eos>`` (``ids_tf`` without the flip)."""
        return self.ids_tf(strings)

    def words_to_ids_tf(self, words: tf.Tensor) -> tf.Tensor:
        """Ids (``tf.int32``) of already-normalised words, any shape (dense or ragged)."""
        return tf.cast(self.lookup_layer()(words), tf.int32)

    def decode_tf(self, ids) -> tf.Tensor:
        """Graph version of :meth:`decode` for an id matrix ``[B, T]`` (int32 or int64) -> ``tf.string[B]``.

        Core TF ops only (``tf.gather`` on a constant token table, masking, ``tf.strings.reduce_join``),
        so it can live inside an exported SavedModel without tensorflow-text or lookup-table resources.
        Ids outside the vocabulary decode as ``<unk>`` like :meth:`decode`.
        """
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int64)
        size = tf.constant(self.size, tf.int64)
        ids = tf.where((ids < 0) | (ids >= size), tf.constant(self.unk_id, tf.int64), ids)
        # Everything from the first <eos> on is dropped: cumulative count of <eos> seen so far > 0.
        seen_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), axis=-1) > 0
        keep = ~seen_eos & tf.not_equal(ids, self.pad_id) & tf.not_equal(ids, self.bos_id)
        words = tf.gather(tf.constant(self._tokens, dtype=tf.string), ids)
        # Tokens have no whitespace, so joining the kept words with " " and dropping the empty
        # (masked) slots gives exactly the Python decode.
        words = tf.where(keep, words + " ", tf.zeros_like(words))
        joined = tf.strings.reduce_join(words, axis=-1)
        return tf.strings.regex_replace(joined, " $", "")
