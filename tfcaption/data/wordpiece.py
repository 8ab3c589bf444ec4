"""A subword (WordPiece) vocabulary with NFKC normalisation, for captions in any script.

:class:`WordPieceVocabulary` has the public interface of the word-level
:class:`~tfcaption.data.tokenizer.Vocabulary` (same special tokens and ids, ``build`` / ``save`` / ``load``,
``encode`` / ``decode``, ``ids_tf`` / ``decode_tf``), so training, evaluation and export can use either.
Use it for languages written without spaces (Japanese, Chinese, Thai) and for open-vocabulary datasets,
where a word vocabulary would be mostly ``<unk>``.

Text goes through four steps, implemented in Python and in TensorFlow, which must agree exactly:

1. **NFKC** (compatibility composition): full-width Latin and digits become ASCII (``"ＡＢＣ１"`` ->
   ``"ABC1"``), half-width katakana become full-width, ligatures and circled digits are expanded. Code
   points that Python's Unicode tables (14.0) leave unassigned become a space *before* NFKC, because
   the ICU inside tensorflow-text is a newer Unicode and would otherwise compose some of them into
   letters that Python drops (measured: 98 code points, U+1CCD6..1CCF9 and U+1E030..1E06D).
2. The word-level rule of :func:`~tfcaption.data.tokenizer.normalize_caption`: every character that
   is not a letter, mark or number becomes a space, lowercase, runs of spaces collapse, strip.
3. **Unspaced scripts.** Characters of scripts written without spaces between words -- CJK ideographs,
   hiragana, katakana (with the prolonged sound mark and iteration marks), bopomofo, Thai, Lao, Khmer,
   Myanmar -- are each a unit of their own, together with the combining marks that follow them. Spaces
   next to a unit carry no information in these scripts (and are inconsistent between annotators), so
   they are removed: ``"犬 が boxを"`` -> ``"犬がboxを"``.
4. **Pre-tokenisation**: the normalised text is split at spaces and around every unit, so
   ``"犬がboxを"`` gives the words ``犬 が box を``; WordPiece (greedy longest-match-first) then splits
   each word into pieces of the vocabulary, continuation pieces written ``##piece``.

Why one character per unit, including kana, where BERT's basic tokenizer only isolates CJK ideographs:
a caption written in kana alone (``"ねこがいすのうえでねている"``) would be one BERT "word", and a word
longer than 100 UTF-8 bytes (33 kana) is a single ``<unk>``; runs of kana between ideographs would
make the vocabulary learn whole inflections as separate words. One unit per character means every
caption is spelled with the learned character inventory (a few thousand characters cover Japanese
captions) and only truly unseen characters become ``<unk>``, at the price of one id per character:
captions of 10-40 characters, within a usual ``max_length``. Thai and Myanmar get the same treatment,
with the combining vowel and tone marks kept on their consonant. Korean is written with spaces and is
left to WordPiece like Latin text.

Detokenisation (:meth:`WordPieceVocabulary.decode`) is the inverse: continuation pieces are glued to
their word, words are joined by one space, then the spaces next to a unit are removed as in step 3 --
so a caption made of known pieces decodes to exactly :func:`normalize_wordpiece` of itself, without
spaces inserted into Japanese (``"<unk>"`` is shown for unknown words, glued to neighbouring units).

Reference:
    Schuster & Nakajima, "Japanese and Korean voice search", ICASSP 2012 (WordPiece);
    Wu et al., "Google's Neural Machine Translation System", arXiv:1609.08144 (the ``##`` scheme);
    Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
    NAACL 2019 (CJK character splitting, the vocabulary learner in tensorflow-text);
    Song et al., "Fast WordPiece Tokenization", EMNLP 2021 (``tensorflow_text.FastWordpieceTokenizer``).
"""

from __future__ import annotations

import collections
import functools
import re
import unicodedata
from typing import Iterable, Mapping, Optional, Sequence

import tensorflow as tf

from tfcaption.data.tokenizer import (
    SPECIALS,
    UNK,
    Vocabulary,
    _swap_left_right_rows,
    normalize_caption,
    normalize_caption_tf,
)
from tfcaption.data.unicode_classes import Ranges, classify_code_points, regex_class

__all__ = [
    "DEFAULT_MAX_SIZE",
    "MAX_BYTES_PER_WORD",
    "SUFFIX",
    "greedy_piece_ids",
    "normalize_wordpiece",
    "normalize_wordpiece_tf",
    "pretokenize",
    "pretokenize_tf",
    "WordPieceVocabulary",
]

DEFAULT_MAX_SIZE = 8000
SUFFIX = "##"
# tensorflow-text's default: a longer word is a single <unk> (the Python encoder applies the same limit).
MAX_BYTES_PER_WORD = 100

# Blocks of scripts written without spaces between words (see the module docstring). Only their letters
# and numbers start a unit; the marks among them attach to the preceding unit.
_UNSPACED_BLOCKS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3031, 0x3035),  # vertical kana repeat marks
    (0x3038, 0x303C),  # 〸〹〺 〻 〼
    (0x3040, 0x30FF),  # Hiragana, Katakana (ー included)
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31BF),  # Bopomofo Extended
    (0x31F0, 0x31FF),  # Katakana Phonetic Extensions
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xA9E0, 0xA9FF),  # Myanmar Extended-B
    (0xAA60, 0xAA7F),  # Myanmar Extended-A
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs (NFKC maps most to unified ones)
    (0xFF66, 0xFF9F),  # half-width katakana (NFKC maps them to full-width)
    (0x1AFF0, 0x1B16F),  # Kana Extended-B, Kana Supplement, Kana Extended-A, Small Kana Extension
    (0x20000, 0x3FFFF),  # CJK Extensions B..H, Compatibility Supplement
)


@functools.lru_cache(maxsize=None)
def _classes() -> dict[str, Ranges]:
    """Code-point ranges per Python's unicodedata (the Unicode version the Python side uses; a walk
    over every code point, so cached): ``unassigned`` (Cn), ``marks`` (M*), ``unspaced`` (letters and numbers of the unspaced
    blocks)."""
    in_block = bytearray(0x110000)
    for a, b in _UNSPACED_BLOCKS:
        in_block[a:b + 1] = b"\x01" * (b - a + 1)

    def classify(cp: int, cat: str) -> Optional[str]:
        if cat == "Cn":
            return "unassigned"
        if cat[0] == "M":
            return "marks"
        if in_block[cp] and cat[0] in "LN":
            return "unspaced"
        return None

    return classify_code_points(classify, ("unassigned", "marks", "unspaced"))


@functools.lru_cache(maxsize=None)
def _patterns(engine: str) -> dict[str, str]:
    """The regexes shared by both implementations; ``engine`` picks Python or RE2 escapes.

    Only constructs on which Python ``re`` and RE2 agree (classes, greedy ``*``, ``\\1`` rewrites, no
    look-around, which RE2 lacks) are used, so the two sides cannot drift apart.
    """
    def cls(name):
        return regex_class(_classes()[name], engine)

    unit = f"([{cls('unspaced')}][{cls('marks')}]*)"
    return {
        "unassigned": f"[{cls('unassigned')}]+",
        # A space before a unit's first character, then a space after a unit (its marks included).
        "space_before_unit": f" ([{cls('unspaced')}])",
        "space_after_unit": f"{unit} ",
        "unit": unit,
    }


@functools.lru_cache(maxsize=None)
def _python_regexes() -> dict[str, "re.Pattern[str]"]:
    return {k: re.compile(v) for k, v in _patterns("python").items()}


def _join_units(text: str) -> str:
    """Remove the spaces next to units of unspaced scripts (step 3; also the last step of decoding)."""
    if " " not in text:
        return text
    rx = _python_regexes()
    return rx["space_after_unit"].sub(r"\1", rx["space_before_unit"].sub(r"\1", text))


def _join_units_tf(text: tf.Tensor) -> tf.Tensor:
    p = _patterns("re2")
    text = tf.strings.regex_replace(text, p["space_before_unit"], r"\1")
    return tf.strings.regex_replace(text, p["space_after_unit"], r"\1")


def normalize_wordpiece(text: str) -> str:
    """NFKC, the word-level normalisation, and no spaces next to unspaced-script characters.

    This is what :meth:`WordPieceVocabulary.decode` gives back for a caption made of known pieces.

    Example:
        >>> normalize_wordpiece("ＡＢＣ１２３、犬 が　走る！ Dog's ball.")
        'abc123犬が走るdog s ball'
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if not text.isascii():
        # No need to blank unassigned code points first here (only the TF side must): Python's NFKC
        # leaves them unchanged, like a space they block composition, and step 2 turns them into spaces.
        text = unicodedata.normalize("NFKC", text)
    text = normalize_caption(text)
    return text if text.isascii() else _join_units(text)


def normalize_wordpiece_tf(text) -> tf.Tensor:
    """TensorFlow version of :func:`normalize_wordpiece` for a ``tf.string`` tensor of any shape.

    Uses ``tensorflow_text.normalize_utf8`` (NFKC) and core string ops.
    """
    import tensorflow_text as tf_text  # local: only the graph encoder needs tensorflow-text

    text = tf.convert_to_tensor(text, dtype=tf.string)
    text = tf.strings.regex_replace(text, _patterns("re2")["unassigned"], " ")
    text = tf_text.normalize_utf8(text, "NFKC")
    return _join_units_tf(normalize_caption_tf(text))


def pretokenize(text: str) -> list[str]:
    """The words WordPiece splits further: :func:`normalize_wordpiece`, then split at spaces and around
    every unspaced-script character (with its combining marks).

    Example:
        >>> pretokenize("犬が公園を走っている  ＢＩＧ dog")
        ['犬', 'が', '公', '園', 'を', '走', 'っ', 'て', 'い', 'る', 'big', 'dog']
    """
    text = normalize_wordpiece(text)
    if text.isascii():
        return text.split()
    return _python_regexes()["unit"].sub(r" \1 ", text).split()


def pretokenize_tf(text) -> tf.RaggedTensor:
    """TensorFlow version of :func:`pretokenize`: ``tf.string [B]`` -> ragged ``tf.string [B, None]``."""
    text = normalize_wordpiece_tf(text)
    return tf.strings.split(tf.strings.regex_replace(text, _patterns("re2")["unit"], r" \1 "))


def greedy_piece_ids(word: str, ids: Mapping[str, int], unk_id: int) -> list[int]:
    """WordPiece's greedy longest-match-first (MaxMatch) split of ``word`` into the pieces of ``ids`` (piece ->
    id; continuation pieces written ``##piece``); ``[unk_id]`` when a part of it matches no piece."""
    out, start, n = [], 0, len(word)
    while start < n:
        end = n
        while end > start:
            piece = word[start:end] if start == 0 else SUFFIX + word[start:end]
            if piece in ids:
                out.append(ids[piece])
                break
            end -= 1
        if end == start:
            return [unk_id]
        start = end
    return out


class WordPieceVocabulary(Vocabulary):
    """Subword (WordPiece) <-> id mapping with the M2 special tokens at ids 0..3.

    Ids 0..3 are ``<unk>``, ``<pad>``, ``<bos>``, ``<eos>`` as in the word-level
    :class:`~tfcaption.data.tokenizer.Vocabulary`, then the learned pieces; a piece that continues a
    word is written ``##piece``. Text is normalised and split as described in the module docstring.
    ``lookup_layer`` / ``words_to_ids_tf`` (inherited) map whole *pieces* to ids; use :meth:`ids_tf`
    for text. Only :meth:`build` and the graph encoder (:meth:`ids_tf`) need tensorflow-text; Python
    ``encode``/``decode`` and :meth:`decode_tf` work with TensorFlow alone.

    Args:
        tokens: every token, in id order, starting with ``SPECIALS``; unique, non-empty, no whitespace.

    Example:
        >>> vocab = WordPieceVocabulary.build(["赤い丸と青い四角", "Ａ red circle.", "a red square"])
        >>> vocab.tokens[:4]
        ['<unk>', '<pad>', '<bos>', '<eos>']
        >>> [vocab.id_to_token(i) for i in vocab.encode("青い丸, RED squares")]
        ['青', 'い', '丸', 'red', 'square', '##s']
        >>> vocab.decode(vocab.encode("青い丸 と 赤い四角！", add_bos_eos=True))
        '青い丸と赤い四角'
    """

    def __init__(self, tokens: Sequence[str]):
        super().__init__(tokens)
        self._fast = None
        self._tables = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1,
              max_size: Optional[int] = None) -> "WordPieceVocabulary":
        """Learn a WordPiece vocabulary from ``captions`` with tensorflow-text's learner.

        Captions are pre-tokenised with :func:`pretokenize`; the word counts (sorted, so the result does
        not depend on caption order or hash seeds) go to
        ``tensorflow_text.tools.wordpiece_vocab.wordpiece_tokenizer_learner_lib.learn``, which keeps
        every character of the alphabet (as a word start and as ``##`` continuation) and the pieces
        whose count passes a frequency threshold chosen by binary search so the vocabulary approaches
        ``max_size``. ``##`` forms of unspaced-script characters are removed afterwards: such a
        character always starts a unit, so they could never be produced.

        Args:
            captions: training captions (raw text).
            min_count: words (as split by :func:`pretokenize`) seen fewer times are not learned from,
                as in ``Vocabulary.build``; so every token, single characters included, occurs at least
                ``min_count`` times in ``captions``, and a character seen only in rarer words encodes
                as ``<unk>``.
            max_size: target size including the 4 specials (default ``DEFAULT_MAX_SIZE`` = 8000). The
                alphabet is capped at the ``(max_size - 4) // 2`` most frequent characters (words
                containing others are not learned from and encode as ``<unk>``); if the learner
                overshoots, the least frequent multi-character pieces are dropped, so the result
                has at most ``max_size`` tokens.
        """
        from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

        max_size = DEFAULT_MAX_SIZE if max_size is None else int(max_size)
        if max_size < len(SPECIALS) + 2:
            raise ValueError(f"max_size must be at least {len(SPECIALS) + 2}, got {max_size}")
        counts = collections.Counter()
        for caption in captions:
            counts.update(pretokenize(caption))
        for special in SPECIALS:  # cannot come out of normalisation, but never learn them as words
            counts.pop(special, None)
        # Filtering words (rather than passing min_count as the learner's lower threshold, which its
        # binary search may undershoot by one) bounds every piece's count: a piece occurs at least as
        # often as any word containing it.
        counts = {w: n for w, n in counts.items() if n >= min_count}
        if not counts:
            return cls(list(SPECIALS))
        tokens = learner.learn(
            sorted(counts.items()), vocab_size=max_size, reserved_tokens=list(SPECIALS),
            lower_thresh=1, max_unique_chars=(max_size - len(SPECIALS)) // 2,
            include_joiner_token=True, joiner=SUFFIX)
        starts_unit = re.compile(f"[{regex_class(_classes()['unspaced'], 'python')}]")
        tokens = [t for t in tokens if not (t.startswith(SUFFIX) and starts_unit.match(t, len(SUFFIX)))]
        if len(tokens) > max_size:
            def is_alphabet(t):
                return t in SPECIALS or len(t) == 1 or (t.startswith(SUFFIX) and len(t) == len(SUFFIX) + 1)

            excess = len(tokens) - max_size
            keep = [True] * len(tokens)
            for i in range(len(tokens) - 1, -1, -1):  # the learner lists pieces by descending count
                if excess == 0:
                    break
                if not is_alphabet(tokens[i]):
                    keep[i] = False
                    excess -= 1
            tokens = [t for t, k in zip(tokens, keep) if k]
        return cls(tokens)

    # ------------------------------------------------------------------ basic properties
    def __repr__(self) -> str:
        return f"WordPieceVocabulary(size={self.size})"

    # ------------------------------------------------------------------ Python encode / decode
    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first (MaxMatch), as tensorflow-text: a word that is too long or has
        a part no piece matches is a single ``<unk>``."""
        if len(word.encode("utf-8")) > MAX_BYTES_PER_WORD:
            return [self.unk_id]
        return greedy_piece_ids(word, self._ids, self.unk_id)

    def encode(self, text: str, add_bos_eos: bool = False) -> list[int]:
        """Ids of the pieces of ``text`` (see the module docstring); no ``<bos>``/``<eos>`` unless
        ``add_bos_eos``. The same ids as :meth:`ids_tf`."""
        ids = [i for word in pretokenize(text) for i in self._word_ids(word)]
        if add_bos_eos:
            ids = [self.bos_id] + ids + [self.eos_id]
        return ids

    def _piece_texts(self) -> list[str]:
        """What each token contributes to decoded text: a continuation piece without its ``##``, any
        other token after a space (``<unk>`` included); the leading space is dropped at the end."""
        return [t[len(SUFFIX):] if t.startswith(SUFFIX) else " " + t for t in self._tokens]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: stops at the first ``<eos>``, skips ``<pad>`` and ``<bos>``, glues ``##``
        pieces to their word, one space between words except next to unspaced-script characters.
        Ids outside the vocabulary decode as ``<unk>``."""
        if self._tables is None:
            self._tables = self._piece_texts()
        texts = self._tables
        text = "".join(texts[i] if 0 <= i < len(texts) else " " + UNK for i in self.caption_ids(ids))
        return _join_units(text[1:] if text.startswith(" ") else text)

    # ------------------------------------------------------------------ TensorFlow
    def _tokenizer(self):
        """The ``FastWordpieceTokenizer`` for this vocabulary, built once, outside any traced graph.

        It holds its model as a uint8 constant (no lookup-table resource), which tf.data captures.
        """
        if self._fast is None:
            import tensorflow_text as tf_text

            with tf.init_scope():
                self._fast = tf_text.FastWordpieceTokenizer(
                    vocab=self._tokens, suffix_indicator=SUFFIX, max_bytes_per_word=MAX_BYTES_PER_WORD,
                    token_out_type=tf.int32, unknown_token=UNK, no_pretokenization=True)
        return self._fast

    def ids_tf(self, captions, flip=None) -> tf.RaggedTensor:
        """Graph version of :meth:`encode`: ``tf.string [B]`` -> ragged ``tf.int32 [B, None]``, no
        ``<bos>``/``<eos>``. Where ``flip[b]`` is true the whole words "left" and "right" are swapped
        before they are split into pieces (the caption of a mirrored image). Usable inside tf.data
        (tensorflow-text ops)."""
        words = pretokenize_tf(tf.convert_to_tensor(captions, tf.string))
        if flip is not None:
            words = _swap_left_right_rows(words, flip)
        return self._tokenizer().tokenize(words).merge_dims(1, 2)

    def encode_tf(self, strings) -> tf.RaggedTensor:
        """Same as ``ids_tf(strings)`` (the word-level vocabulary's name for it)."""
        return self.ids_tf(strings)

    def decode_tf(self, ids) -> tf.Tensor:
        """Graph version of :meth:`decode` for an id matrix ``[B, T]`` (int32 or int64) -> ``tf.string[B]``.

        Core TF ops only (``tf.gather`` on a constant table, masking, ``reduce_join``, RE2
        ``regex_replace``), so it can live inside an exported SavedModel loaded without tensorflow-text.
        """
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int64)
        size = tf.constant(self.size, tf.int64)
        ids = tf.where((ids < 0) | (ids >= size), tf.constant(self.unk_id, tf.int64), ids)
        seen_eos = tf.cumsum(tf.cast(tf.equal(ids, self.eos_id), tf.int32), axis=-1) > 0
        keep = ~seen_eos & tf.not_equal(ids, self.pad_id) & tf.not_equal(ids, self.bos_id)
        parts = tf.gather(tf.constant(self._piece_texts(), dtype=tf.string), ids)
        joined = tf.strings.reduce_join(tf.where(keep, parts, tf.zeros_like(parts)), axis=-1)
        return _join_units_tf(tf.strings.regex_replace(joined, "^ ", ""))
