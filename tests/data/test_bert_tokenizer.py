"""Tests for tfcaption.data.bert_tokenizer: BLIP's BERT tokenizer against transformers' ids and decoded captions
in the parity fixtures (tests/fixtures/hf), Python == TensorFlow on hard strings, decode_tf in a SavedModel
loaded by a process with only TensorFlow."""

import doctest
import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.hf_fixture import BLIP_MODELS, expected, manifest, model_dir
from tfcaption.data import bert_tokenizer as bert_tokenizer_module
from tfcaption.data.bert_tokenizer import BertTokenizer
from tfcaption.data.tokenizer import SpecialIds


def fixture_tokenizer(name):
    """The checkpoint's tokenizer from its files: vocab.txt (blip_a) or tokenizer.json's model.vocab (blip_b,
    v5 layout), then tokenizer.json's added tokens past it ([DEC], [ENC]); tokenizer_config.json's options."""
    directory = model_dir(name)
    spec = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    if (directory / "vocab.txt").exists():
        tokens = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    else:
        vocab = spec["model"]["vocab"]
        tokens = sorted(vocab, key=vocab.get)
        assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    added = sorted((a for a in spec["added_tokens"] if a["id"] >= len(tokens)), key=lambda a: a["id"])
    assert [a["id"] for a in added] == list(range(len(tokens), len(tokens) + len(added)))
    tokens += [a["content"] for a in added]
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    return BertTokenizer(tokens, do_lower_case=config["do_lower_case"], strip_accents=config["strip_accents"],
                         bos_token=config["bos_token"], extra_special_tokens=config["extra_special_tokens"],
                         max_input_chars_per_word=spec["model"]["max_input_chars_per_word"],
                         decoder_cleanup=spec["decoder"]["cleanup"],
                         clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False))


@pytest.fixture(scope="module", params=BLIP_MODELS)
def blip(request):
    return request.param, fixture_tokenizer(request.param), manifest()["models"][request.param]


def test_from_directory_reads_the_published_and_v5_layouts_as_the_json_files_say(blip):
    name, tok, _ = blip
    assert BertTokenizer.from_directory(model_dir(name)) == tok


def test_from_directory_appends_the_named_special_tokens_a_vocab_txt_lacks(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(CLEANUP_TOKENS[:-2]) + "\n", encoding="utf-8")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": {"content": "[DEC]"}, "additional_special_tokens": ["[ENC]"]}), encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "bos_token": None}))
    tok = BertTokenizer.from_directory(tmp_path)
    assert tok.tokens == CLEANUP_TOKENS and tok.bos_id == 31 and tok.special_token_ids == [0, 1, 2, 3, 4, 31, 32]
    (tmp_path / "added_tokens.json").write_text(json.dumps({"[DEC]": 40}))
    with pytest.raises(ValueError, match="token ids are not 0..n-1"):
        BertTokenizer.from_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no tokenizer: put the checkpoint's vocab.txt or tokenizer.json"):
        BertTokenizer.from_directory(tmp_path / "missing")


def test_special_ids_are_the_fixtures_dec_sep_and_pad(blip):
    _, tok, spec = blip
    ids = spec["token_ids"]
    assert tok.size == spec["config"]["text_config"]["vocab_size"] == 39
    assert tok.special_ids == SpecialIds(pad_id=ids["pad"], bos_id=ids["dec"], eos_id=ids["sep"])
    assert (tok.unk_id, tok.cls_id, tok.sep_id) == (ids["unk"], ids["cls"], ids["sep"])
    assert tok.special_token_ids == sorted(ids.values())


def test_teacher_input_ids_equal_transformers_in_python_and_tf(blip):
    name, tok, spec = blip
    want = expected(name)["teacher_input_ids"]
    length = want.shape[1]
    assert [tok.encode_caption(c, length) for c in spec["captions"]] == want.tolist()
    assert tok.captions_tf(tf.constant(spec["captions"]), length).numpy().tolist() == want.tolist()
    mask = expected(name)["teacher_attention_mask"]
    assert (mask == (want != tok.pad_id)).all()


def test_prompt_ids_equal_the_processors_and_generates_prefix(blip):
    name, tok, spec = blip
    exp = expected(name)
    prompt = spec["prompt"]
    # The processor gives [CLS] pieces [SEP]; generate() continues [DEC] pieces.
    assert all([tok.cls_id] + tok.encode(prompt) + [tok.sep_id] == row for row in exp["prompt_input_ids"].tolist())
    ours = tok.encode_prompt(prompt)
    assert tok.prompts_tf(tf.constant([prompt] * 3)).to_list() == [ours] * 3
    for case in spec["generation"]["cases"]:
        if case.endswith("_prompt") or "_prompt_" in case:
            assert (exp[f"generate_{case}"][:, :len(ours)] == ours).all(), case


def test_decoded_generate_ids_equal_transformers_captions_in_python_and_tf(blip):
    name, tok, spec = blip
    exp = expected(name)
    captions = spec["generation"]["captions"]
    assert sorted(captions) == sorted(k[len("generate_"):] for k in exp
                                      if k.startswith("generate_") and not k.endswith("_sequences_scores"))
    for case, want in captions.items():
        ids = exp[f"generate_{case}"]
        assert [tok.decode(row) for row in ids.tolist()] == want, case
        assert [s.decode("utf-8") for s in tok.decode_tf(ids).numpy()] == want, case


# Ids from transformers 5.25's BertTokenizer on the fixtures' vocabulary (tokenizer(text).input_ids without
# [CLS] and [SEP]): accents stripped, punctuation split, unknown words, control and format characters removed,
# no final-sigma rule, a word over 100 characters.
TRANSFORMERS_IDS = {
    "A PICTURE OF Dogs!!": [5, 6, 7, 8, 34, 1, 1],
    "playing played plays": [31, 35, 31, 36, 31, 34],
    "price $5 + 3 = <8> ^_^ ~ | `x`": [1] * 17,
    "zero\u200bwidth\u200djoin\ufeff": [1],
    "dogs\u00a0and\tcats\nrun\u3000fast": [8, 34, 23, 9, 34, 30, 1],
    "a dog, the cats. two men": [5, 8, 33, 12, 9, 34, 32, 19, 1],
    "A\u0301 DOG\u0301S": [5, 8, 34],
    "犬 dog": [1, 8],
    "a" * 101: [1],
    "": [],
}


def test_encode_equals_transformers_on_harder_strings():
    tok = fixture_tokenizer("blip_a")
    assert {s: tok.encode(s) for s in TRANSFORMERS_IDS} == TRANSFORMERS_IDS
    got = tok.ids_tf(tf.constant(list(TRANSFORMERS_IDS))).to_list()
    assert dict(zip(TRANSFORMERS_IDS, got)) == TRANSFORMERS_IDS


# A vocabulary with the pieces the decoder's clean-up acts on (a token with a space in it, a bare "##",
# "n't", "'s", "'m"), and what transformers 5.25 decodes (skip_special_tokens=True) without and with
# clean_up_tokenization_spaces; then the ids it encodes a few strings to.
CLEANUP_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "'", "s", "n't", "'s", "?", "!", ".",
                  ",", "do not", "don", "t", "##s", "cafe", "ca", "##fe", "é", "σ", "ς", "οδος", "[unused0]", "##",
                  "' ", "'m", "##'s", "[DEC]", "[ENC]"]
CLEANUP_ROWS = [[31, 6, 7, 8, 3], [6, 9, 5, 10, 11, 12, 13], [18, 6, 14, 6, 15, 16, 17], [7, 5, 28, 6, 29, 30],
                [26, 27, 6, 27, 18], [13, 13, 5], [31, 0, 7, 8], [6, 22, 23, 24, 25], [19, 20, 21, 3, 0, 6]]
TRANSFORMERS_DECODED = ["dog ' s", "dogn't a's?!.", "##s dog, dog don't don t", "' a' dog'm's", "[unused0] dogs",
                        ".. a", "' s", "dog é σ ς οδος", "cafe cafe dog"]
TRANSFORMERS_DECODED_CLEAN = ["dog's"] + TRANSFORMERS_DECODED[1:]
TRANSFORMERS_CLEANUP_IDS = {"Café ÇA": [19, 20], "ΟΔΟΣ": [1], "dog's? don't!": [6, 7, 8, 11, 16, 7, 17, 12],
                            "Σ": [23], "ÉÉ é": [1, 1]}


@pytest.mark.parametrize("clean", [False, True])
def test_decode_equals_transformers_with_and_without_clean_up_spaces(clean):
    tok = BertTokenizer(CLEANUP_TOKENS, clean_up_tokenization_spaces=clean)
    want = TRANSFORMERS_DECODED_CLEAN if clean else TRANSFORMERS_DECODED
    assert [tok.decode(r) for r in CLEANUP_ROWS] == want
    width = max(map(len, CLEANUP_ROWS))
    padded = [r + [tok.pad_id] * (width - len(r)) for r in CLEANUP_ROWS]
    assert [s.decode("utf-8") for s in tok.decode_tf(tf.constant(padded, tf.int64)).numpy()] == want
    assert {s: tok.encode(s) for s in TRANSFORMERS_CLEANUP_IDS} == TRANSFORMERS_CLEANUP_IDS
    assert tok.ids_tf(list(TRANSFORMERS_CLEANUP_IDS)).to_list() == list(TRANSFORMERS_CLEANUP_IDS.values())


HARD_STRINGS = [
    "", "   ", "A PICTURE OF Dogs!!", "Éclair à la crème, naïve café", "ΟΔΟΣ Σ ς", "İstanbul ŞİŞLİ",
    "dogs\u00a0and\tcats\nrun\u3000fast", "zero\u200bwidth\u200djoin\ufeff", "ctrl\u0000\u0001\u007f\u0085x\ufffd",
    "犬が走る dog 㐀𠀀", "a[SEP]b [DEC]x\u0000[MASK]", "don't won't I'm", "price $5 + 3 = <8> ^_^ ~ | `x` £ €",
    "«quoted» — “curly” ‘single’ …",
    "Straße ﬁsh ＡＢＣ", "e\u0301 a\u0308 n\u0303", "playing played plays dogs", "xyz unknownword dogx",
    "a" * 100, "é" * 101, "ǅ Ǆ ǆ", "a\u0300\u0316", "한국어 텍스트", "\u2028line\u2029para\u000bvt\u000cff",
    "the dog's ball, the cats' toys", "emoji 🐶🐱 dog", "0.5 1,000 3rd", "\ud7ff\U0001F600 \u0378 \ue000",
]


@pytest.mark.parametrize("options", [{}, {"do_lower_case": False}, {"strip_accents": False},
                                     {"tokenize_chinese_chars": False, "max_input_chars_per_word": 6}])
def test_python_and_tf_give_the_same_words_and_ids_on_hard_strings(options):
    words = sorted({w for s in HARD_STRINGS for w in BertTokenizer(CLEANUP_TOKENS, **options).pretokenize(s)})
    # Whole words and their pieces, so WordPiece both matches and fails.
    pieces = sorted({w for w in words if len(w) > 1} | {w[:2] for w in words} | {"##" + w[2:] for w in words
                                                                                  if len(w) > 2})
    tok = BertTokenizer(CLEANUP_TOKENS + [p for p in pieces if p not in CLEANUP_TOKENS], **options)
    tf_words = tok.pretokenize_tf(tf.constant(HARD_STRINGS)).to_list()
    assert [[w.decode("utf-8") for w in row] for row in tf_words] == [tok.pretokenize(s) for s in HARD_STRINGS]
    ids = [tok.encode(s) for s in HARD_STRINGS]
    assert tok.ids_tf(tf.constant(HARD_STRINGS)).to_list() == ids
    assert sum(i == tok.unk_id for row in ids for i in row) > 0 and len({i for row in ids for i in row}) > 20
    width = max(map(len, ids)) + 2
    rows = [[tok.bos_id] + r + [tok.eos_id] + [tok.pad_id] * (width - 2 - len(r)) for r in ids]
    assert [s.decode("utf-8") for s in tok.decode_tf(tf.constant(rows)).numpy()] == [tok.decode(r) for r in rows]


def test_python_and_tf_decode_agree_on_random_ids():
    rng = random.Random(0)
    for clean in (False, True):
        tok = BertTokenizer(CLEANUP_TOKENS, clean_up_tokenization_spaces=clean)
        rows = [[rng.randrange(-3, tok.size + 3) for _ in range(12)] for _ in range(200)]
        want = [tok.decode(r) for r in rows]
        assert [s.decode("utf-8") for s in tok.decode_tf(tf.constant(rows, tf.int32)).numpy()] == want
    assert tok.decode_tf(tf.zeros([2, 0], tf.int32)).numpy().tolist() == [b"", b""]


def test_decode_skips_special_tokens_anywhere_and_ids_outside_the_vocabulary():
    tok = fixture_tokenizer("blip_a")
    assert tok.decode([37, 5, 1, 8, 3, 9, 0, 38, 4, 2, 39, -1, 34]) == "a dog cats"


def test_decode_tf_in_a_saved_model_loaded_by_a_process_with_only_tensorflow(tmp_path):
    tok = fixture_tokenizer("blip_a")

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def __call__(self, ids):
            return tok.decode_tf(ids)

    ids = expected("blip_a")["generate_beam3_prompt"]
    model_dir_, out_file = str(tmp_path / "decoder"), str(tmp_path / "out.json")
    tf.saved_model.save(Decoder(), model_dir_)
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        model_dir, ids, out_file = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        decoded = tf.saved_model.load(model_dir)(tf.constant(ids, tf.int32))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow_text", "tfcaption"))
        with open(out_file, "w", encoding="utf-8") as f:
            json.dump({"decoded": [s.decode("utf-8") for s in decoded.numpy()], "loaded": loaded}, f)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script, model_dir_, json.dumps(ids.tolist()), out_file],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out_file, encoding="utf-8") as f:
        result = json.load(f)
    assert result["loaded"] == []
    assert result["decoded"] == manifest()["models"]["blip_a"]["generation"]["captions"]["beam3_prompt"]


def test_captions_tf_runs_inside_tf_data_and_cuts_long_captions_before_sep():
    tok = fixture_tokenizer("blip_a")
    ds = tf.data.Dataset.from_tensor_slices(["a dog sitting on the red table.", ""]).batch(2)
    rows = next(iter(ds.map(lambda c: tok.captions_tf(c, 5)))).numpy().tolist()
    assert rows == [[37, 5, 8, 10, 3], [37, 3, 0, 0, 0]] == [tok.encode_caption(c, 5) for c in
                                                            ["a dog sitting on the red table.", ""]]


def test_config_round_trip():
    tok = BertTokenizer(CLEANUP_TOKENS, strip_accents=False, clean_up_tokenization_spaces=True)
    again = BertTokenizer.from_config(json.loads(json.dumps(tok.get_config())))
    assert again == tok
    assert again.encode("Café") == tok.encode("Café") != BertTokenizer(CLEANUP_TOKENS).encode("Café")


def test_a_missing_special_token_or_a_duplicate_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"no '\[DEC\]' \(bos_token\)") as info:
        BertTokenizer(CLEANUP_TOKENS[:-2])
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="duplicate BERT vocabulary tokens: \\['a'\\]"):
        BertTokenizer(CLEANUP_TOKENS + ["a"])
    with pytest.raises(ValueError, match="token id 99 is outside"):
        BertTokenizer(CLEANUP_TOKENS).id_to_token(99)
    with pytest.raises(ValueError, match="length must be at least 2"):
        BertTokenizer(CLEANUP_TOKENS).encode_caption("a", 1)


def test_docstring_examples():
    failures, _ = doctest.testmod(bert_tokenizer_module, extraglobs={"tf": tf, "np": np})
    assert failures == 0


def test_special_tokens_written_in_the_text_are_matched_whole_as_transformers_does():
    tok = fixture_tokenizer("blip_a")
    # transformers 5.25: tokenizer("a[SEP]b [DEC]").input_ids == [2, 5, 3, 1, 37, 3]
    texts = ["a[SEP]b [DEC]", "[DEC][DEC]dog", "[sep] [SEP", "[ENC]", "ctrl\x00[SE\x00P]x", "a [SEP]\u0301b"]
    want = [[5, 3, 1, 37], [37, 37, 8], [1, 1, 1, 1, 1], [38], [1, 1, 1, 1, 1], [5, 3, 1]]
    assert [tok.encode(t) for t in texts] == want
    assert tok.ids_tf(tf.constant(texts)).to_list() == want


def test_flip_swaps_left_and_right_in_the_flipped_rows_only():
    tok = BertTokenizer(CLEANUP_TOKENS + ["left", "right"])
    left, right = tok.token_to_id("left"), tok.token_to_id("right")
    ids = tok.ids_tf(tf.constant(["Left of a dog, RIGHT", "left"]), flip=tf.constant([True, False])).to_list()
    assert ids == [[right, tok.unk_id, 5, 6, 14, left], [left]]
