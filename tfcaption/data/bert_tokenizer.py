"""BLIP's BERT WordPiece tokenizer: text to ids in the graph (tensorflow-text), ids to text as transformers does.

:class:`BertTokenizer` reproduces what a BLIP checkpoint's tokenizer does in Hugging Face transformers (v5:
``BertTokenizer``, backed by the ``tokenizers`` library): its own tokenizer kind, apart from
:class:`~tfcaption.data.wordpiece.WordPieceVocabulary` (``data.tokenizer=wordpiece``), because BERT keeps
punctuation as tokens, has its own special tokens and ids, and decodes with its own spacing rules.

Encoding (added tokens, ``BertNormalizer``, ``BertPreTokenizer``, ``WordPiece`` in ``tokenizers``), in
Python and in TensorFlow, which agree exactly:

0. special tokens written in the text (``"[SEP]"``, exactly, in any place) are matched first and kept whole;
   the text between them goes through the next steps;
1. NUL, U+FFFD and every control, format and private-use character (Unicode categories Cc, Cf, Co; not
   unassigned code points) except tab, newline and carriage return are removed; the remaining whitespace
   characters (Unicode's White_Space property) become a space;
2. CJK ideographs get a space on each side (``tokenize_chinese_chars``);
3. when accents are stripped (``strip_accents``, by default when lower-casing, as BERT does): NFD, then
   every non-spacing mark (Mn) is removed;
4. lower-casing (``do_lower_case``) character by character: ``"Σ"`` is always ``"σ"`` (the Rust
   normaliser has no final-sigma rule, where Python's ``str.lower`` and ICU have one);
5. split at spaces and around every punctuation character (ASCII punctuation, which includes ``$+<=>^`|~``,
   and Unicode categories P*);
6. WordPiece, greedy longest match first with ``##`` continuation pieces: a word longer than
   ``max_input_chars_per_word`` characters, or with a part no piece matches, is one ``[UNK]``.

Character classes come from Python's ``unicodedata`` and are handed to RE2 as explicit ranges, so both sides
use the same tables.

BLIP's conventions: a caption is ``[DEC]`` (the bos token, in place of ``[CLS]``), its pieces and ``[SEP]``,
padded with ``[PAD]``; ``generate()`` takes a prompt as ``[DEC]`` and its pieces, without the final
``[SEP]``, and stops at ``[SEP]``.

Decoding is ``tokenizer.decode(ids, skip_special_tokens=True)``: every special token (``[PAD]``, ``[UNK]``,
``[CLS]``, ``[SEP]``, ``[MASK]``, ``[DEC]`` and the extra ones such as ``[ENC]``) and every id outside the
vocabulary is skipped wherever it is (decoding does not stop at ``[SEP]``); then ``tokenizers``' WordPiece
decoder: a ``##`` piece is glued to the text before it, any other token after the first gets a space in
front, and each token so written goes through the decoder's clean-up (``" ."`` -> ``"."``, ``" ?"``,
``" !"``, ``" ,"``, ``" ' "`` -> ``"'"``, ``" n't"``, ``" 'm"``, ``" do not"`` -> ``" don't"``, ``" 's"``,
``" 've"``, ``" 're"``). It is applied per token, not to the joined text, so ``"a ' s"`` stays as it is.
transformers v5 adds its own clean-up of the whole string only where ``tokenizer_config.json`` sets
``clean_up_tokenization_spaces`` (its default is off; BLIP's published files do not set it).
:meth:`BertTokenizer.decode_tf` is the same in core TensorFlow ops only, for SavedModels that TF Serving
loads without tensorflow-text.

Reference:
    Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
    NAACL 2019; Li et al., "BLIP: Bootstrapping Language-Image Pre-training", ICML 2022;
    Song et al., "Fast WordPiece Tokenization", EMNLP 2021 (``tensorflow_text.FastWordpieceTokenizer``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from typing import Iterable, Optional, Sequence

import tensorflow as tf

from tfcaption.data.tokenizer import TokenTable, _swap_left_right_rows
from tfcaption.data.unicode_classes import Ranges, classify_code_points, regex_class, to_ranges
from tfcaption.data.wordpiece import SUFFIX, greedy_piece_ids

__all__ = ["BertTokenizer"]


# Unicode's White_Space property (PropList.txt, unchanged since Unicode 6.3); what Rust's char::is_whitespace is.
_WHITE_SPACE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029,
                0x202F, 0x205F, 0x3000)
# The "Chinese characters" of BERT's normaliser (CJK Unified Ideographs and extensions, compatibility ideographs).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
# tokenizers' WordPiece decoder clean-up (applied to each written token), then transformers' string clean-up.
_DECODER_CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                    (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))
_STRING_CLEANUP = tuple(pair for pair in _DECODER_CLEANUP if pair[0] != " do not")


def _classify(cp: int, cat: str) -> Optional[str]:
    """BERT's normaliser classes of a code point of Unicode category ``cat``."""
    if cp == 0 or cp == 0xFFFD or (cat in ("Cc", "Cf", "Co") and cp not in (0x09, 0x0A, 0x0D)):
        return "drop"
    if cat == "Mn":
        return "marks"
    if cat[0] == "P" or (cp < 128 and chr(cp) in r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""):
        return "punct"
    return None


@functools.lru_cache(maxsize=None)
def _classes() -> dict[str, Ranges]:
    """Code-point ranges per Python's unicodedata (a walk over every code point, so cached)."""
    classes = classify_code_points(_classify, ("drop", "marks", "punct"))
    space = (cp for cp in _WHITE_SPACE if not any(a <= cp <= b for a, b in classes["drop"]))
    return {**classes, "space": to_ranges(space), "cjk": _CJK}


@functools.lru_cache(maxsize=None)
def _patterns(engine: str) -> dict[str, str]:
    """The regexes both implementations use; ``engine`` picks Python (``\\U``) or RE2 (``\\x{}``) escapes."""
    def cls(name):
        return regex_class(_classes()[name], engine)

    return {"drop": f"[{cls('drop')}]+", "space": f"[{cls('space')}]", "cjk": f"([{cls('cjk')}])",
            "marks": f"[{cls('marks')}]+", "punct": f"([{cls('punct')}])"}


@functools.lru_cache(maxsize=None)
def _python_regexes() -> dict[str, "re.Pattern[str]"]:
    return {k: re.compile(v) for k, v in _patterns("python").items()}


def _cleanup(text: str, rules) -> str:
    for old, new in rules:
        text = text.replace(old, new)
    return text


def _cleanup_tf(text: tf.Tensor, rules) -> tf.Tensor:
    # Literal patterns replaced left to right without overlaps, as str.replace does.
    for old, new in rules:
        text = tf.strings.regex_replace(text, re.escape(old), new)
    return text


class BertTokenizer(TokenTable):
    """BLIP's BERT WordPiece tokenizer: encodes in the graph (tensorflow-text), decodes as transformers does.

    The module docstring states the rules. The interface follows :class:`~tfcaption.data.tokenizer.Vocabulary`
    (``tokens``, ``size``, ``pad_id`` / ``bos_id`` / ``eos_id``, ``encode`` / ``decode``, ``ids_tf`` /
    ``decode_tf``), so ``tfcaption.data.pipeline.tokenize_captions`` makes BLIP's teacher-forcing rows with
    it; the ids are BLIP's: ``bos_id`` is ``[DEC]``, ``eos_id`` is ``[SEP]``, ``pad_id`` is ``[PAD]``.
    Encoding in the graph needs tensorflow-text; everything else needs TensorFlow only.

    Args:
        tokens: every token in id order: vocab.txt's lines (or tokenizer.json's ``model.vocab`` by id), then
            the added tokens (BLIP adds ``[DEC]`` and ``[ENC]``). Unique and non-empty.
        do_lower_case: lower-case the text (tokenizer_config.json's ``do_lower_case``).
        strip_accents: remove accents (NFD, then non-spacing marks); None: when ``do_lower_case``.
        tokenize_chinese_chars: make every CJK ideograph a word of its own.
        pad_token: fills rows after ``[SEP]``.
        unk_token: a word WordPiece cannot spell.
        cls_token: the sequence start of BERT; BLIP's text decoder replaces it with ``bos_token``.
        sep_token: ends a caption (generation stops at it: ``eos_id``).
        mask_token: BERT's mask (only skipped when decoding).
        bos_token: the first decoder input (``[DEC]`` for BLIP).
        extra_special_tokens: other special tokens, skipped when decoding (``[ENC]`` for BLIP).
        max_input_chars_per_word: a longer word is one ``[UNK]`` (tokenizer.json's
            ``model.max_input_chars_per_word``).
        decoder_cleanup: the WordPiece decoder's per-token clean-up (tokenizer.json's ``decoder.cleanup``).
        clean_up_tokenization_spaces: transformers' clean-up of the decoded string (tokenizer_config.json's
            ``clean_up_tokenization_spaces``; off when it is absent).

    Example:
        >>> tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "run", "##s", ".", "[DEC]", "[ENC]"]
        >>> tok = BertTokenizer(tokens)
        >>> tok.encode("A dog runs.", add_bos_eos=True), tok.encode_prompt("a dog")
        ([10, 5, 6, 7, 8, 9, 3], [10, 5, 6])
        >>> tok.decode([10, 5, 6, 7, 8, 9, 3, 0, 0]), tok.special_ids
        ('a dog runs.', SpecialIds(pad_id=0, bos_id=10, eos_id=3))
        >>> tok.decode_tf(tf.constant([[10, 6, 1, 8, 3]])).numpy().tolist()
        [b'dogs']

    Reference:
        Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
        NAACL 2019.
    """

    def __init__(self, tokens: Sequence[str], do_lower_case: bool = True, strip_accents: Optional[bool] = None,
                 tokenize_chinese_chars: bool = True, pad_token: str = "[PAD]", unk_token: str = "[UNK]",
                 cls_token: str = "[CLS]", sep_token: str = "[SEP]", mask_token: str = "[MASK]",
                 bos_token: str = "[DEC]", extra_special_tokens: Sequence[str] = ("[ENC]",),
                 max_input_chars_per_word: int = 100, decoder_cleanup: bool = True,
                 clean_up_tokenization_spaces: bool = False):
        tokens = [str(t) for t in tokens]
        if any(not t for t in tokens):
            raise ValueError(f"BERT vocabulary tokens must be non-empty; token {tokens.index('')} is empty.")
        self._set_tokens(tokens, "BERT vocabulary")
        self.do_lower_case = bool(do_lower_case)
        self.strip_accents = None if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.pad_token, self.unk_token, self.cls_token = pad_token, unk_token, cls_token
        self.sep_token, self.mask_token, self.bos_token = sep_token, mask_token, bos_token
        self.extra_special_tokens = tuple(extra_special_tokens)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self.decoder_cleanup = bool(decoder_cleanup)
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        named = {"pad_token": pad_token, "unk_token": unk_token, "cls_token": cls_token, "sep_token": sep_token,
                 "mask_token": mask_token, "bos_token": bos_token,
                 **{f"extra_special_tokens[{i}]": t for i, t in enumerate(self.extra_special_tokens)}}
        for name, token in named.items():
            if token not in self._ids:
                raise ValueError(f"the BERT vocabulary has no {token!r} ({name}); pass the vocabulary with its "
                                 "added tokens (BLIP adds [DEC] and [ENC] after vocab.txt).")
        self._special = frozenset(self._ids[t] for t in named.values())
        self._fast = None

    @classmethod
    def from_directory(cls, directory) -> "BertTokenizer":
        """The tokenizer of a checkpoint directory in the Hugging Face Hub's layout, as transformers v5 builds it.

        The vocabulary is tokenizer.json's ``model.vocab`` (v5 writes no vocab.txt) or vocab.txt, then the
        added tokens past it (tokenizer.json's ``added_tokens``, tokenizer_config.json's
        ``added_tokens_decoder``, added_tokens.json) in id order, then any named special token still missing
        (``bos_token`` ``[DEC]`` and the extra ones, as BLIP adds them). The options come from
        tokenizer_config.json (v5 rebuilds BERT's normaliser and decoder from it), the special tokens from it
        or special_tokens_map.json.

        Raises:
            FileNotFoundError: naming the directory, when it has neither vocab.txt nor tokenizer.json.
            ValueError: naming the directory, when the ids are not 0..n-1.
        """
        directory = os.fspath(directory)

        def read(name):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                return {}
            with open(path, encoding="utf-8") as f:
                return json.load(f)

        config, spec = read("tokenizer_config.json"), read("tokenizer.json")
        specials_map = read("special_tokens_map.json")
        vocab_txt = os.path.join(directory, "vocab.txt")
        if spec.get("model", {}).get("vocab"):
            vocab = spec["model"]["vocab"]
            tokens = sorted(vocab, key=vocab.get)
            ids = [vocab[t] for t in tokens]
        elif os.path.isfile(vocab_txt):
            with open(vocab_txt, encoding="utf-8") as f:
                tokens = [line.rstrip("\n") for line in f]
            ids = range(len(tokens))
        else:
            raise FileNotFoundError(f"{directory} has no tokenizer: put the checkpoint's vocab.txt or tokenizer.json "
                                    "there (with tokenizer_config.json).")
        added = {int(a["id"]): a["content"] for a in spec.get("added_tokens", [])}
        added.update({int(i): a["content"] for i, a in config.get("added_tokens_decoder", {}).items()})
        added.update({int(i): t for t, i in read("added_tokens.json").items()})
        after = sorted(i for i in added if i >= len(tokens))
        if after != list(range(len(tokens), len(tokens) + len(after))) or list(ids) != list(range(len(tokens))):
            raise ValueError(f"{directory}: the token ids are not 0..n-1 (vocabulary {len(tokens)}, added {after}).")
        tokens += [added[i] for i in after]

        def option(key, default=None):
            value = config.get(key)
            value = specials_map.get(key, default) if value is None else value
            return value["content"] if isinstance(value, dict) else value

        extra = option("extra_special_tokens") or option("additional_special_tokens") or []
        extra = [t["content"] if isinstance(t, dict) else t for t in extra]
        names = {key: option(key, default) for key, default in (
            ("pad_token", "[PAD]"), ("unk_token", "[UNK]"), ("cls_token", "[CLS]"), ("sep_token", "[SEP]"),
            ("mask_token", "[MASK]"), ("bos_token", "[DEC]"))}
        tokens += [t for t in dict.fromkeys([names["bos_token"], *extra]) if t not in tokens]
        return cls(tokens, do_lower_case=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                   tokenize_chinese_chars=config.get("tokenize_chinese_chars", True), extra_special_tokens=extra,
                   clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False), **names)

    # ------------------------------------------------------------------ ids and tokens
    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.get_config() == other.get_config()

    def __repr__(self) -> str:
        return f"BertTokenizer(size={self.size}, do_lower_case={self.do_lower_case})"

    pad_id = property(lambda self: self._ids[self.pad_token], doc="[PAD]: fills token rows after [SEP].")
    unk_id = property(lambda self: self._ids[self.unk_token], doc="[UNK]: a word WordPiece cannot spell.")
    cls_id = property(lambda self: self._ids[self.cls_token], doc="[CLS]: BERT's start, replaced by [DEC].")
    sep_id = property(lambda self: self._ids[self.sep_token], doc="[SEP]: ends a caption.")
    bos_id = property(lambda self: self._ids[self.bos_token], doc="[DEC]: the first decoder input.")
    eos_id = property(lambda self: self._ids[self.sep_token], doc="[SEP]: generation stops at it.")

    @property
    def special_token_ids(self) -> list[int]:
        """The ids `decode` skips (every special token), sorted."""
        return sorted(self._special)

    def id_to_token(self, index: int) -> str:
        """The token of ``index``; an error naming it outside the vocabulary."""
        index = int(index)
        if not 0 <= index < self.size:
            raise ValueError(f"token id {index} is outside the BERT vocabulary of {self.size} tokens")
        return self._tokens[index]

    def _strips_accents(self) -> bool:
        return self.do_lower_case if self.strip_accents is None else self.strip_accents

    # ------------------------------------------------------------------ Python encode
    def normalize(self, text: str) -> str:
        """Steps 1-4 of the module docstring (clean-up, CJK spacing, accents, lower case)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        rx = _python_regexes()
        text = rx["space"].sub(" ", rx["drop"].sub("", text))
        if self.tokenize_chinese_chars:
            text = rx["cjk"].sub(r" \1 ", text)
        if self._strips_accents():
            text = rx["marks"].sub("", unicodedata.normalize("NFD", text))
        if self.do_lower_case:
            text = text.replace("\u03a3", "\u03c3").lower()  # no final-sigma rule (see the module docstring)
        return text

    def pretokenize(self, text: str) -> list[str]:
        """The words WordPiece splits: special tokens written in the text are words of their own (matched
        before normalising, as transformers matches added tokens); the rest goes through :meth:`normalize`,
        then is split at spaces and around punctuation; a word longer than ``max_input_chars_per_word``
        characters is already ``[UNK]``.

        Example:
            >>> BertTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]).pretokenize(
            ...     "Ça n'est PAS\\u00a0l'été, 犬![SEP]")
            ['ca', 'n', "'", 'est', 'pas', 'l', "'", 'ete', ',', '犬', '!', '[SEP]']
        """
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        words = []
        for n, part in enumerate(re.split(f"({self._specials_pattern()})", text)):
            words += [part] if n % 2 else self._words(part)
        return words

    def _specials_pattern(self) -> str:
        # Longest first, so that an alternation that takes the first match takes the longest one.
        specials = sorted({self._tokens[i] for i in self._special}, key=lambda t: (-len(t), t))
        return "|".join(re.escape(t) for t in specials)

    def _words(self, text: str) -> list[str]:
        words = _python_regexes()["punct"].sub(r" \1 ", self.normalize(text)).split()
        return [self.unk_token if len(w) > self.max_input_chars_per_word else w for w in words]

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest match first, as transformers' WordPiece: a word too long, or with a part no piece
        matches, is one ``[UNK]``."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_id]
        return greedy_piece_ids(word, self._ids, self.unk_id)

    def encode(self, text: str, add_bos_eos: bool = False) -> list[int]:
        """The piece ids of ``text``; with ``add_bos_eos``, BLIP's caption form ``[DEC] pieces [SEP]``."""
        ids = [i for word in self.pretokenize(text) for i in self._word_ids(word)]
        return [self.bos_id] + ids + [self.eos_id] if add_bos_eos else ids

    def encode_caption(self, text: str, length: int) -> list[int]:
        """A teacher-forcing row as BLIP trains on it: ``[DEC] pieces [SEP]`` padded with ``[PAD]`` to
        ``length`` (pieces past ``length - 2`` are cut; the row still ends with ``[SEP]``)."""
        if length < 2:
            raise ValueError(f"length must be at least 2 ([DEC] and [SEP]), got {length}")
        ids = self.encode(text)[: length - 2]
        return [self.bos_id] + ids + [self.eos_id] + [self.pad_id] * (length - 2 - len(ids))

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt as ``generate()`` continues it: ``[DEC]`` and the pieces, without the final ``[SEP]``."""
        return [self.bos_id] + self.encode(text)

    # ------------------------------------------------------------------ TensorFlow encode
    def _tokenizer(self):
        """The ``FastWordpieceTokenizer`` of this vocabulary, built once outside any traced graph (its model
        is a uint8 constant, no lookup-table resource, so tf.data captures it)."""
        if self._fast is None:
            import tensorflow_text as tf_text

            with tf.init_scope():
                # 4 bytes per character at most: the character limit is applied before (pretokenize_tf).
                self._fast = tf_text.FastWordpieceTokenizer(
                    vocab=self._tokens, suffix_indicator=SUFFIX, max_bytes_per_word=4 * self.max_input_chars_per_word,
                    token_out_type=tf.int32, unknown_token=self.unk_token, no_pretokenization=True)
        return self._fast

    def normalize_tf(self, text) -> tf.Tensor:
        """Graph version of :meth:`normalize` for a ``tf.string`` tensor of any shape (tensorflow-text's NFD)."""
        p = _patterns("re2")
        text = tf.convert_to_tensor(text, tf.string)
        text = tf.strings.regex_replace(tf.strings.regex_replace(text, p["drop"], ""), p["space"], " ")
        if self.tokenize_chinese_chars:
            text = tf.strings.regex_replace(text, p["cjk"], r" \1 ")
        if self._strips_accents():
            import tensorflow_text as tf_text

            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), p["marks"], "")
        if self.do_lower_case:
            text = tf.strings.lower(tf.strings.regex_replace(text, "\u03a3", "\u03c3"), encoding="utf-8")
        return text

    def pretokenize_tf(self, text) -> tf.RaggedTensor:
        """Graph version of :meth:`pretokenize`: ``tf.string [B]`` -> ragged ``tf.string [B, None]``."""
        import tensorflow_text as tf_text

        pattern = self._specials_pattern()
        # regex_split ends a string at NUL: U+0001 stands for it (both are removed by normalize_tf).
        text = tf.strings.regex_replace(tf.convert_to_tensor(text, tf.string), r"\x00", "\x01")
        parts = tf_text.regex_split(text, pattern, pattern)  # (B, P)
        flat = parts.flat_values  # (N,)
        specials = tf.constant(sorted({self._tokens[i] for i in self._special}))
        is_special = tf.reduce_any(tf.equal(flat[:, None], specials[None, :]), axis=1)  # (N,)
        words = self._words_tf(flat)  # (N, W)
        words = tf.ragged.boolean_mask(words, words.with_flat_values(tf.gather(~is_special, words.value_rowids())))
        # A special part is one word; every other part gives its words: each row takes from one of the two.
        special_words = tf.RaggedTensor.from_row_lengths(tf.boolean_mask(flat, is_special),
                                                         tf.cast(is_special, tf.int64))
        return parts.with_flat_values(tf.concat([words, special_words], axis=1)).merge_dims(1, 2)

    def _words_tf(self, text: tf.Tensor) -> tf.RaggedTensor:
        text = tf.strings.regex_replace(self.normalize_tf(text), _patterns("re2")["punct"], r" \1 ")
        words = tf.strings.split(text)  # only " " is left of the whitespace
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > self.max_input_chars_per_word
        return words.with_flat_values(tf.where(too_long, self.unk_token, words.flat_values))

    def ids_tf(self, captions, flip=None) -> tf.RaggedTensor:
        """Graph version of :meth:`encode`: ``tf.string [B]`` -> ragged ``int32 [B, None]`` piece ids, no
        ``[DEC]`` / ``[SEP]``. Where ``flip[b]`` is true the words "left" and "right" are swapped first (the
        caption of a mirrored image). Usable inside tf.data (tensorflow-text ops)."""
        words = self.pretokenize_tf(tf.convert_to_tensor(captions, tf.string))
        if flip is not None:
            words = _swap_left_right_rows(words, flip)
        return self._tokenizer().tokenize(words).merge_dims(1, 2)

    def encode_tf(self, strings) -> tf.RaggedTensor:
        """Same as ``ids_tf(strings)``."""
        return self.ids_tf(strings)

    def captions_tf(self, captions, length: int) -> tf.Tensor:
        """Graph version of :meth:`encode_caption`: ``tf.string [B]`` -> ``int32 [B, length]``."""
        from tfcaption.data.pipeline import tokenize_captions  # local: the pipeline imports more

        if length < 2:
            raise ValueError(f"length must be at least 2 ([DEC] and [SEP]), got {length}")
        return tokenize_captions(captions, self, length - 2)

    def prompts_tf(self, prompts) -> tf.RaggedTensor:
        """Graph version of :meth:`encode_prompt`: ``tf.string [B]`` -> ragged ``int32 [B, None]``."""
        ids = self.ids_tf(prompts)
        bos = tf.fill([ids.nrows(), 1], tf.constant(self.bos_id, tf.int32))
        return tf.concat([bos, ids], axis=1)

    # ------------------------------------------------------------------ decode
    def decode(self, ids: Iterable[int]) -> str:
        """transformers' ``decode(ids, skip_special_tokens=True)``: special tokens and ids outside the
        vocabulary skipped anywhere, ``##`` pieces glued, the WordPiece decoder's clean-up per token."""
        tokens = [self._tokens[i] for i in map(int, ids) if 0 <= i < self.size and i not in self._special]
        parts = []
        for n, token in enumerate(tokens):
            if n:
                token = token[len(SUFFIX):] if token.startswith(SUFFIX) else " " + token
            parts.append(_cleanup(token, _DECODER_CLEANUP) if self.decoder_cleanup else token)
        text = "".join(parts)
        return _cleanup(text, _STRING_CLEANUP) if self.clean_up_tokenization_spaces else text

    def _written(self, first: bool) -> list[str]:
        """What each token writes as the first kept token, or after one (the decoder's rule per token)."""
        out = []
        for token in self._tokens:
            if not first:
                token = token[len(SUFFIX):] if token.startswith(SUFFIX) else " " + token
            out.append(_cleanup(token, _DECODER_CLEANUP) if self.decoder_cleanup else token)
        return out

    def decode_tf(self, ids) -> tf.Tensor:
        """Graph version of :meth:`decode` for an id matrix ``[B, T]`` (int32 or int64) -> ``tf.string [B]``.

        Core TF ops only (``tf.gather`` on constant tables, ``tf.strings.reduce_join``,
        ``tf.strings.regex_replace``), so an exported SavedModel runs in TF Serving without tensorflow-text.
        """
        ids = tf.cast(tf.convert_to_tensor(ids), tf.int64)
        inside = (ids >= 0) & (ids < self.size)
        ids = tf.where(inside, ids, tf.zeros_like(ids))
        special = tf.constant([i in self._special for i in range(self.size)], tf.bool)
        keep = inside & ~tf.gather(special, ids)  # (B, T)
        first = keep & tf.equal(tf.cumsum(tf.cast(keep, tf.int32), axis=-1), 1)
        written = tf.where(first, tf.gather(tf.constant(self._written(True), tf.string), ids),
                           tf.gather(tf.constant(self._written(False), tf.string), ids))
        text = tf.strings.reduce_join(tf.where(keep, written, tf.zeros_like(written)), axis=-1)  # (B,)
        return _cleanup_tf(text, _STRING_CLEANUP) if self.clean_up_tokenization_spaces else text

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        return {"tokens": self.tokens, "do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars, "pad_token": self.pad_token,
                "unk_token": self.unk_token, "cls_token": self.cls_token, "sep_token": self.sep_token,
                "mask_token": self.mask_token, "bos_token": self.bos_token,
                "extra_special_tokens": list(self.extra_special_tokens),
                "max_input_chars_per_word": self.max_input_chars_per_word, "decoder_cleanup": self.decoder_cleanup,
                "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}

    @classmethod
    def from_config(cls, config: dict) -> "BertTokenizer":
        return cls(**config)
