"""Tests for the torch-free reader of the released M2 ``vocab.pkl``.

Variants of the file are written opcode by opcode (tests/helpers/pickles.py) in the released layout
(protocol 3, class ``data.vocab.Vocab``), because the authors' ``data.vocab`` module is deliberately
not importable.
"""

from __future__ import annotations

import collections
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.m2_fixture import FIXTURE, requires_fixture
from tests.helpers.pickles import G, emit, vocab_pickle
from tfcaption.interop.m2.vocab import M2_SPECIALS, VocabularyError, load_m2_vocab

VOCAB = FIXTURE / "vocab.pkl"
needs_fixture = requires_fixture("vocab.pkl")

WORDS = [f"w{i:02d}" for i in range(26)]


def _write(tmp_path: Path, data: bytes, name: str = "vocab.pkl") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@needs_fixture
def test_released_fixture_reads_as_the_specials_then_the_words():
    itos = load_m2_vocab(VOCAB)
    assert len(itos) == 30
    assert tuple(itos[:4]) == M2_SPECIALS == ("<unk>", "<pad>", "<bos>", "<eos>")
    assert itos[4:] == WORDS


@needs_fixture
def test_writer_reproduces_the_fixture_layout(tmp_path):
    # Same opcode layout as the released file, so the variants below are realistic.
    itos = list(M2_SPECIALS) + WORDS
    assert load_m2_vocab(_write(tmp_path, vocab_pickle(itos))) == load_m2_vocab(VOCAB)


def test_plain_dict_stoi_or_no_stoi_loads_and_a_disagreeing_stoi_is_named(tmp_path):
    # Later torchtext-style vocabularies pickle stoi as a plain dict, or drop it.
    itos = list(M2_SPECIALS) + ["a", "dog"]
    no_stoi = _write(tmp_path, vocab_pickle(itos, stoi=None), "a.pkl")
    assert load_m2_vocab(no_stoi) == itos
    plain = _write(tmp_path, vocab_pickle(itos, plain_stoi=True), "b.pkl")
    assert load_m2_vocab(plain) == itos
    wrong = {**{w: i for i, w in enumerate(itos)}, "dog": 4}
    with pytest.raises(VocabularyError, match=r"'stoi' maps 'dog' to 4 but 'itos' has it at 5"):
        load_m2_vocab(_write(tmp_path, vocab_pickle(itos, stoi=wrong, plain_stoi=True), "c.pkl"))


@pytest.mark.parametrize("itos, pattern", [
    (["<pad>", "<unk>", "<bos>", "<eos>", "a"],
     r"expected the specials \['<unk>', '<pad>', '<bos>', '<eos>'\] at ids 0..3, "
     r"found \['<pad>', '<unk>', '<bos>', '<eos>'\]"),
    (["<unk>", "<pad>", "<bos>"], r"found \['<unk>', '<pad>', '<bos>'\]"),
    (["<unk>", "<pad>", "<bos>", "<eos>", "a", 7], r"'itos' entry 5 is 7 \(int\), expected str"),
    (["<unk>", "<pad>", "<bos>", "<eos>", "a", "b", "a"],
     r"word 'a' appears twice in 'itos' \(ids 4 and 6\)"),
])
def test_bad_itos_is_an_error_naming_the_file_and_the_problem(tmp_path, itos, pattern):
    path = _write(tmp_path, vocab_pickle(itos, stoi=None))
    with pytest.raises(VocabularyError, match=pattern) as info:
        load_m2_vocab(path)
    assert str(path) in str(info.value)


SPECIAL_IDS = {"<unk>": 0, "<pad>": 1, "<bos>": 2, "<eos>": 3}


@pytest.mark.parametrize("stoi, pattern", [
    ({**SPECIAL_IDS, "a": 5, "b": 4}, r"'stoi' maps 'a' to 5 but 'itos' has it at 4"),
    ({**SPECIAL_IDS, "a": 4, "b": 5, "c": 6}, r"'stoi' maps 'c' to 6 but 'itos' has it at no id"),
    ({**SPECIAL_IDS, "a": 4}, r"missing from stoi: \['b'\]"),
])
def test_stoi_must_agree_with_itos(tmp_path, stoi, pattern):
    itos = list(M2_SPECIALS) + ["a", "b"]
    with pytest.raises(VocabularyError, match=pattern):
        load_m2_vocab(_write(tmp_path, vocab_pickle(itos, stoi=stoi)))


@needs_fixture
def test_fixture_with_swapped_specials_or_an_edited_stoi_is_refused(tmp_path):
    data = VOCAB.read_bytes()
    swapped = data.replace(b"<pad>", b"<tmp>").replace(b"<bos>", b"<pad>").replace(b"<tmp>", b"<bos>")
    with pytest.raises(VocabularyError, match=r"found \['<unk>', '<bos>', '<pad>', '<eos>'\]"):
        load_m2_vocab(_write(tmp_path, swapped, "swapped.pkl"))
    # In the released layout stoi reuses memoised words: 'w00' is memo 6, id 4 (BINGET 6, BININT1 4).
    assert data.count(b"h\x06K\x04") == 1
    edited = data.replace(b"h\x06K\x04", b"h\x06K\x09")
    with pytest.raises(VocabularyError, match=r"'stoi' maps 'w00' to 9 but 'itos' has it at 4"):
        load_m2_vocab(_write(tmp_path, edited, "edited.pkl"))


def test_a_pickle_that_is_not_a_vocab_object_is_refused(tmp_path):
    path = _write(tmp_path, pickle.dumps([1, 2, 3], protocol=3))
    with pytest.raises(VocabularyError, match="expected a data.vocab.Vocab object, found list"):
        load_m2_vocab(path)
    path = _write(tmp_path, pickle.dumps({"stoi": {}}, protocol=3), "noitos.pkl")
    with pytest.raises(VocabularyError, match="has no 'itos'"):
        load_m2_vocab(path)


@pytest.mark.parametrize("module", ["os", "posix", "builtins"])
def test_unsafe_globals_refused_and_not_run(tmp_path, module):
    marker = tmp_path / "pwned"
    name = "eval" if module == "builtins" else "system"
    arg = f"__import__('os').system('touch {marker}')" if module == "builtins" else f"touch {marker}"
    out = bytearray(b"\x80\x03")
    emit(G(module, name), out)
    out += b"("
    emit(arg, out)
    out += b"tR."
    path = _write(tmp_path, bytes(out))
    with pytest.raises(VocabularyError, match=rf"unsafe pickle global '{module}\.{name}'") as info:
        load_m2_vocab(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_stdlib_pickled_os_system_refused(tmp_path):
    path = _write(tmp_path, pickle.dumps(os.system, protocol=3))
    with pytest.raises(VocabularyError, match=r"unsafe pickle global '(posix|nt)\.system'"):
        load_m2_vocab(path)


def test_class_named_in_the_file_cannot_be_swapped(tmp_path):
    # A lookalike module path is not the allow-listed one.
    path = _write(tmp_path, vocab_pickle(list(M2_SPECIALS), cls=("data.vocab2", "Vocab")))
    with pytest.raises(VocabularyError, match=r"unsafe pickle global 'data\.vocab2\.Vocab'"):
        load_m2_vocab(path)


def test_build_cannot_tamper_with_counter(tmp_path):
    # BUILD with (None, slotstate) would setattr on collections.Counter for the whole process.
    out = bytearray(b"\x80\x03")
    emit(G("collections", "Counter"), out)
    out += b"N"
    emit({"most_common": "oops"}, out)
    out += b"\x86b."
    with pytest.raises(VocabularyError, match="set state on collections.Counter"):
        load_m2_vocab(_write(tmp_path, bytes(out)))
    assert callable(collections.Counter.most_common)
    assert collections.Counter("aab").most_common(1) == [("a", 2)]


@needs_fixture
@pytest.mark.parametrize("cut", [0, 1, 2, 20, 30, 200, 400, 520, 600, 731, 733])
def test_truncated_fixture_is_an_error_naming_the_file(tmp_path, cut):
    path = _write(tmp_path, VOCAB.read_bytes()[:cut])
    with pytest.raises(VocabularyError) as info:
        load_m2_vocab(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_an_error_naming_the_file(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = rng.bytes(int(rng.integers(1, 4000)))
    if seed % 2:  # looks like a pickle for the first two bytes
        data = b"\x80\x03" + data
    path = _write(tmp_path, data)
    with pytest.raises(VocabularyError) as info:
        load_m2_vocab(path)
    assert str(path) in str(info.value)
