"""A checkpoint's tokenizer as its files describe it: the vocabulary in id order, special tokens, lower-casing.

The vocabulary is ``vocab.txt`` (one token a line, the line number its id) or else ``tokenizer.json``'s
``model.vocab``, extended by the added tokens (``tokenizer.json``'s ``added_tokens``, ``tokenizer_config.json``'s
``added_tokens_decoder``), which may lie past it: BLIP adds ``[DEC]`` and ``[ENC]`` after BERT's vocabulary.
Special tokens come from ``tokenizer_config.json``, then ``special_tokens_map.json`` (which wins where both
name one, as transformers reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tfcaption.interop.hf.errors import HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.json_files import read_json_object

__all__ = ["TokenizerFiles", "read_tokenizer_files", "SPECIAL_ROLES"]

SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_EXTRA_ROLES = ("additional_special_tokens", "extra_special_tokens")  # v4's name, v5's name


@dataclass(frozen=True)
class TokenizerFiles:
    """What a checkpoint's tokenizer files say.

    Args:
        vocabulary: every token, its index its id (added tokens included).
        special_tokens: role (``bos_token``, ``sep_token``, ...) -> token, for the roles the files name.
        additional_special_tokens: further special tokens (BLIP's ``[ENC]``).
        do_lower_case: whether text is lower-cased before WordPiece (BERT's default, True, when no file says).
        strip_accents: None follows ``do_lower_case``, as in BERT.
        tokenize_chinese_chars: whether CJK characters are split apart.
        tokenizer_class: ``tokenizer_config.json``'s ``tokenizer_class`` (None when absent).
        files: the files read.
    """

    vocabulary: list
    special_tokens: dict
    additional_special_tokens: list = field(default_factory=list)
    do_lower_case: bool = True
    strip_accents: bool | None = None
    tokenize_chinese_chars: bool = True
    tokenizer_class: str | None = None
    files: list = field(default_factory=list)

    @property
    def special_ids(self) -> dict[str, int]:
        """Role -> id of the special tokens, e.g. ``{"bos_token": 37, "sep_token": 3, ...}``."""
        return {role: self.token_id(token) for role, token in self.special_tokens.items()}

    def token_id(self, token: str) -> int:
        """The id of `token`; KeyError when the vocabulary lacks it."""
        return self._ids()[token]

    def _ids(self) -> dict[str, int]:
        ids = self.__dict__.get("_ids_cache")
        if ids is None:
            ids = {}
            for i, token in enumerate(self.vocabulary):
                ids.setdefault(token, i)
            object.__setattr__(self, "_ids_cache", ids)
        return ids


def read_tokenizer_files(directory: str | Path) -> TokenizerFiles:
    """Reads the tokenizer files in `directory`.

    Raises:
        HubFilesNotFoundError: (one line) neither ``vocab.txt`` nor ``tokenizer.json`` is there.
        HubCheckpointError: (one line, naming the file) a malformed file, ids with a gap, or a special token the
            vocabulary lacks.
    """
    d = Path(directory)
    tokenizer_json = _json(d / "tokenizer.json")
    config = _json(d / "tokenizer_config.json") or {}
    special_map = _json(d / "special_tokens_map.json") or {}
    files = [name for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
             if (d / name).is_file()]

    if (d / "vocab.txt").is_file():
        # BERT's loader strips only the line end, so a token may hold other whitespace.
        base = [line.rstrip("\n").rstrip("\r") for line in (d / "vocab.txt").read_text(encoding="utf-8").splitlines()]
        base_file = d / "vocab.txt"
    elif tokenizer_json is not None:
        base = _model_vocab(tokenizer_json, d / "tokenizer.json")
        base_file = d / "tokenizer.json"
    else:
        raise HubFilesNotFoundError(f"{d}: no tokenizer (vocab.txt or tokenizer.json); put the repository's "
                                    "tokenizer files there")

    added = {}  # id -> token
    for entry in (tokenizer_json or {}).get("added_tokens") or []:
        added[_int(entry.get("id"), d / "tokenizer.json", "added_tokens id")] = entry.get("content")
    for key, entry in (config.get("added_tokens_decoder") or {}).items():
        added.setdefault(_int(key, d / "tokenizer_config.json", "added_tokens_decoder key"), entry.get("content"))
    vocabulary = _with_added(base, added, base_file)

    special, extra = {}, []
    for source, where in ((config, "tokenizer_config.json"), (special_map, "special_tokens_map.json")):
        for role in SPECIAL_ROLES:
            if source.get(role) is not None:
                special[role] = _content(source[role])
        for role in _EXTRA_ROLES:
            for token in source.get(role) or []:
                if _content(token) not in extra:
                    extra.append(_content(token))
    ids = {t: i for i, t in reversed(list(enumerate(vocabulary)))}
    for token in list(special.values()) + extra:
        if token not in ids:
            raise HubCheckpointError(f"{d}: special token {token!r} is not in the vocabulary ({base_file.name} and "
                                     "the added tokens)")

    lowercase = config.get("do_lower_case")
    if lowercase is None:
        lowercase = ((tokenizer_json or {}).get("normalizer") or {}).get("lowercase", True)
    return TokenizerFiles(
        vocabulary=vocabulary, special_tokens=special, additional_special_tokens=extra,
        do_lower_case=bool(lowercase), strip_accents=config.get("strip_accents"),
        tokenize_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        tokenizer_class=config.get("tokenizer_class"), files=files)


def _json(path: Path):
    """The JSON object in ``path``, or None where the checkpoint has no such file."""
    return read_json_object(path) if path.is_file() else None


def _int(value, path, what) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HubCheckpointError(f"{path}: {what} {value!r} is not an integer") from None


def _content(token) -> str:
    return token["content"] if isinstance(token, dict) else str(token)


def _model_vocab(tokenizer_json: dict, path: Path) -> list[str]:
    vocab = (tokenizer_json.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # WordPiece / BPE: token -> id
        return _with_added([], {_int(i, path, "model.vocab id"): t for t, i in vocab.items()}, path)
    if isinstance(vocab, list):  # Unigram: [token, score] in id order
        return [entry[0] if isinstance(entry, list) else str(entry) for entry in vocab]
    raise HubCheckpointError(f"{path}: no model.vocab")


def _with_added(base: list[str], added: dict[int, str], path: Path) -> list[str]:
    vocabulary = list(base)
    for token_id in sorted(added):
        if token_id < len(vocabulary):
            vocabulary[token_id] = added[token_id]  # an added token overrides the base entry, as in tokenizers
        elif token_id == len(vocabulary):
            vocabulary.append(added[token_id])
        else:
            raise HubCheckpointError(f"{path}: token ids jump from {len(vocabulary) - 1} to {token_id} "
                                     f"({added[token_id]!r}); the vocabulary must have every id")
    return vocabulary
