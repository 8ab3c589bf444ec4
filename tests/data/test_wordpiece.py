"""Tests for tfcaption.data.wordpiece: the WordPiece vocabulary (Python == TF), NFKC, unspaced scripts,
dispatch by kind in tfcaption.data.tokenizer, and decode_tf inside a SavedModel loaded without tensorflow-text."""

import collections
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

from tfcaption.data import tokenizer as tokenizer_module
from tfcaption.data import wordpiece as wordpiece_module
from tfcaption.data.pipeline import tokenize_captions, train_dataset
from tfcaption.data.records import write_shards
from tfcaption.data.tokenizer import SPECIALS, Vocabulary
from tfcaption.data.vocabulary import build_vocabulary, load_vocabulary
from tfcaption.data.wordpiece import (
    WordPieceVocabulary,
    normalize_wordpiece,
    normalize_wordpiece_tf,
    pretokenize,
    pretokenize_tf,
)

JAPANESE = [
    "赤い丸と青い四角",
    "犬が公園を走っている",
    "白い猫がソファの上で寝ている",
    "二匹の犬がボールで遊んでいる",
    "男の人が自転車に乗っている",
    "女の子が赤い傘をさしている",
    "テーブルの上にりんごが三つある",
    "青い空に白い雲が浮かんでいる",
    "子供たちが砂浜で遊んでいる",
    "黒い車が道路を走っている",
    "緑の三角が赤い丸の左にある",
    "黄色い花が咲いている",
    "電車が駅に止まっている",
    "ピザが皿の上にのっている",
    "猫が窓の外を見ている",
    "大きな木の下に犬がいる",
    "男性がパソコンで仕事をしている",
    "キッチンでコーヒーを入れている女性",
    "サッカーをしている少年たち",
    "雪の山をスキーで滑る人",
    "川で魚を釣っているおじいさん",
    "バスが交差点を曲がっている",
    "ねこがいすのうえでねている",
    "ケーキとコーヒーがテーブルにある",
    "青い四角の右に赤い丸がある",
    "飛行機が空を飛んでいる",
    "馬が草原を走っている",
    "部屋の中にベッドと机がある",
    "海の近くで写真を撮る人々",
    "ｶﾀｶﾅのテレビが棚の上にある",  # half-width katakana: NFKC makes them full-width
    "信号が赤になっている",
    "雨の日に傘をさして歩く人",
    "２匹の猫が１つの箱に入っている",  # full-width digits
    "犬が、公園で。走っている！",  # Japanese punctuation
    "ＡＢＣと書かれた看板",  # full-width Latin
    "スマートフォンを見ている若者",
    "赤い丸　と　青い四角",  # ideographic spaces around a particle
    "々や〆も文字として扱う時々",
    "ゲームをしている子ども",
    "パンダが笹を食べている",
]
CHINESE = [
    "一只猫坐在沙发上。",
    "红色的圆，蓝色的方块",
    "两个人在公园里散步",
    "桌子上有一杯咖啡",
    "一辆公共汽车停在路边",
]
ENGLISH = [
    "A red circle, left of a blue square!",
    "Two dogs are playing with a ball.",
    "ＡＢＣ is written on the sign",
    "The ﬁsh swims (quickly) to the right.",
    "A man riding a bicycle down the street",
    "Ｈｅｌｌｏ　Ｗｏｒｌｄ！ Café naïve ①",
]
OTHER = ["แมวนอนอยู่บนโซฟา", "고양이가 소파 위에서 자고 있다"]  # Thai (no spaces), Korean (spaces)
CAPTIONS = JAPANESE + CHINESE + ENGLISH + OTHER


@pytest.fixture(scope="module")
def vocab():
    return WordPieceVocabulary.build(CAPTIONS)


def _strings(tensor):
    return [s.decode("utf-8") for s in tensor.numpy().tolist()]


# ----------------------------------------------------------------------------- normalisation
def test_normalize_wordpiece_applies_nfkc_lowercase_and_drops_spaces_next_to_cjk_and_kana():
    assert normalize_wordpiece("ＡＢＣ") == "abc"
    assert normalize_wordpiece("Ｈｅｌｌｏ　Ｗｏｒｌｄ！") == "hello world"
    assert normalize_wordpiece("ｶﾀｶﾅ") == "カタカナ"
    assert normalize_wordpiece("The ﬁsh ①") == "the fish 1"
    assert normalize_wordpiece("２匹の猫") == "2匹の猫"
    assert normalize_wordpiece("犬が、公園で。走っている！") == "犬が公園で走っている"
    assert normalize_wordpiece("赤い丸　と　青い四角") == "赤い丸と青い四角"
    assert normalize_wordpiece("红色的圆，蓝色的方块") == "红色的圆蓝色的方块"
    assert normalize_wordpiece("a 犬 b") == "a犬b"
    assert normalize_wordpiece("고양이가 소파 위에서") == "고양이가 소파 위에서"  # Korean keeps its spaces
    assert normalize_wordpiece(b"A Dog's ball") == "a dog s ball"
    assert normalize_wordpiece("!!! 。") == ""


def test_pretokenize_splits_every_cjk_kana_and_thai_character_and_keeps_marks_on_their_letter():
    assert pretokenize("犬が公園を走っている") == ["犬", "が", "公", "園", "を", "走", "っ", "て", "い", "る"]
    assert pretokenize("ＡＢＣと書かれた看板") == ["abc", "と", "書", "か", "れ", "た", "看", "板"]
    assert pretokenize("コーヒー cup") == ["コ", "ー", "ヒ", "ー", "cup"]
    # Thai: the tone mark U+0E48 and vowel sign U+0E39 stay with their consonant.
    assert pretokenize("ที่บน") == ["ที่", "บ", "น"]
    assert pretokenize("고양이가 소파") == ["고양이가", "소파"]
    assert pretokenize("a red circle, left") == ["a", "red", "circle", "left"]


TRICKY = CAPTIONS + [
    "", "   ", "!!!", "a\x00b\x1fc\u2028d", "e\u0301clair ǅemal K", "İstanbul ΟΔΟΣ",
    "か\u3099 か\u309b", "ﾊﾟﾝ ｶﾞ", "㍿ ㎏ ℃ ½", "emoji 🐶 and ©", "\U0001ccd6\U0001e030 unassigned",
    "日本語 English 混在 text", "ท่ a ท่ ่",
]


def test_python_and_tf_wordpiece_normalisation_and_pretokenisation_agree_on_tricky_strings():
    assert _strings(normalize_wordpiece_tf(tf.constant(TRICKY))) == [normalize_wordpiece(t) for t in TRICKY]
    got = [[w.decode("utf-8") for w in row] for row in pretokenize_tf(tf.constant(TRICKY)).to_list()]
    assert got == [pretokenize(t) for t in TRICKY]


def test_python_and_tf_wordpiece_normalisation_agree_on_every_code_point_of_planes_0_to_3_and_14():
    """Each code point between an ideograph and a Latin letter; the only differences allowed are the
    ~40 letters whose lowercase TF's ICU lacks (see tfcaption.data.tokenizer), as for words.

    Planes 4-13 (never assigned in any Unicode version) and 15-16 (private use) are left out to keep
    the test fast; planes 0-3 and 14 hold every character the two Unicode versions could disagree on.
    """
    cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xF0000)) if not 0xD800 <= c <= 0xDFFF]
    texts = [f"犬{chr(c)}B" for c in cps]
    out = normalize_wordpiece_tf(tf.constant([t.encode("utf-8") for t in texts])).numpy()
    diff = [cp for cp, t, o in zip(cps, texts, out) if normalize_wordpiece(t) != o.decode("utf-8")]
    allowed = {0x2C2F, 0xA7C0, 0xA7D0, 0xA7D6, 0xA7D8} | set(range(0x10570, 0x105C0))
    assert set(diff) <= allowed, [hex(c) for c in diff if c not in allowed][:20]


# ----------------------------------------------------------------------------- build
def test_build_is_deterministic_and_independent_of_caption_order(vocab):
    assert WordPieceVocabulary.build(CAPTIONS) == vocab
    shuffled = list(CAPTIONS)
    random.Random(3).shuffle(shuffled)
    assert WordPieceVocabulary.build(shuffled).tokens == vocab.tokens


def test_build_keeps_specials_at_ids_0_to_3_and_learns_every_character_as_a_token(vocab):
    assert tuple(vocab.tokens[:4]) == SPECIALS == ("<unk>", "<pad>", "<bos>", "<eos>")
    assert (vocab.unk_id, vocab.pad_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.size == len(vocab) == len(vocab.tokens)
    units = {w for c in CAPTIONS for w in pretokenize(c) if not w.isascii() and len(w) == 1}
    assert units <= set(vocab.tokens)
    assert {"犬", "が", "ー", "猫", "红", "abc"} <= set(vocab.tokens)
    # "##" forms of characters that always start a unit could never be produced: not kept.
    assert "##犬" not in vocab and "##が" not in vocab
    assert any(t.startswith("##") for t in vocab.tokens)  # Latin words do get continuation pieces
    assert all(t not in SPECIALS for t in vocab.tokens[4:])


def test_build_max_size_caps_the_vocabulary_and_min_count_ignores_rare_words():
    small = WordPieceVocabulary.build(ENGLISH * 3, max_size=80)
    assert len(small) <= 80 and tuple(small.tokens[:4]) == SPECIALS
    full = WordPieceVocabulary.build(ENGLISH * 3)
    assert len(full) > len(small)
    # Whatever is dropped, every known character is still a token, so captions never lose characters.
    assert small.decode(small.encode(ENGLISH[0])) == normalize_wordpiece(ENGLISH[0])
    rare = WordPieceVocabulary.build(ENGLISH * 3 + ["zebra 鬱"], min_count=2)
    assert "z" not in rare and "鬱" not in rare and rare.encode("zebra 鬱") == [rare.unk_id] * 2
    assert rare.tokens == WordPieceVocabulary.build(ENGLISH * 3, min_count=2).tokens
    kept = WordPieceVocabulary.build(ENGLISH * 3 + ["zebra 鬱"], min_count=1)
    assert kept.decode(kept.encode("zebra 鬱")) == "zebra鬱"
    assert WordPieceVocabulary.build([]).tokens == list(SPECIALS)
    with pytest.raises(ValueError, match="max_size"):
        WordPieceVocabulary.build(ENGLISH, max_size=3)


# ----------------------------------------------------------------------------- Python encode / decode
def test_encode_decode_round_trip_equals_normalised_text_without_spaces_in_japanese(vocab):
    for caption in CAPTIONS:
        ids = vocab.encode(caption, add_bos_eos=True)
        assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
        assert vocab.unk_id not in ids
        assert vocab.decode(ids) == normalize_wordpiece(caption), caption
    for caption in JAPANESE + CHINESE + OTHER[:1]:
        assert " " not in vocab.decode(vocab.encode(caption))
    assert vocab.decode(vocab.encode("犬が公園を走っている")) == "犬が公園を走っている"
    assert vocab.decode(vocab.encode("ＡＢＣと書かれた看板")) == "abcと書かれた看板"
    assert vocab.decode(vocab.encode("Two dogs are playing with a ball.")) == "two dogs are playing with a ball"


def test_encode_splits_words_into_suffix_pieces_and_unknown_words_become_one_unk(vocab):
    pieces = [vocab.id_to_token(i) for i in vocab.encode("dogs")]
    assert "".join(p[2:] if p.startswith("##") else p for p in pieces) == "dogs"
    assert all(p.startswith("##") for p in pieces[1:])
    assert vocab.encode("qqqzzz") == [vocab.unk_id]  # "z" never seen: the whole word is <unk>
    assert vocab.encode("犬" + "鬱" + "が") == [vocab.token_to_id("犬"), vocab.unk_id, vocab.token_to_id("が")]
    assert vocab.encode("a" * 101) == [vocab.unk_id]  # longer than MAX_BYTES_PER_WORD
    assert vocab.decode(vocab.encode("犬鬱が dogs zzz")) == "犬<unk>がdogs <unk>"


def test_decode_rules_stop_at_eos_skip_pad_bos_glue_suffixes_and_show_out_of_range_as_unk(vocab):
    ids = {t: vocab.token_to_id(t) for t in ["犬", "が", "abc"]}
    suffix = next(t for t in vocab.tokens if t.startswith("##"))
    assert vocab.decode([2, ids["犬"], 1, ids["が"], 3, ids["abc"]]) == "犬が"
    assert vocab.decode([1, 1, 2]) == ""
    assert vocab.decode([ids["abc"], vocab.token_to_id(suffix), ids["abc"]]) == "abc" + suffix[2:] + " abc"
    assert vocab.decode([vocab.token_to_id(suffix), ids["abc"]]) == suffix[2:] + " abc"  # leading suffix
    assert vocab.decode([ids["abc"], vocab.size, -1, ids["犬"]]) == "abc <unk> <unk>犬"


# ----------------------------------------------------------------------------- TensorFlow
EXTRA = ["", "  ", "!!!", "犬鬱が dogs zzz", "a" * 101, "Left right LEFT, leftover", "日本語 English 混在 text"]


def test_ids_tf_equals_encode_for_every_caption_eagerly_and_in_a_tf_function(vocab):
    texts = CAPTIONS + EXTRA
    ragged = vocab.ids_tf(tf.constant(texts))
    assert isinstance(ragged, tf.RaggedTensor) and ragged.dtype == tf.int32 and ragged.shape.rank == 2
    want = [vocab.encode(t) for t in texts]
    assert ragged.to_list() == want
    assert vocab.encode_tf(tf.constant(texts)).to_list() == want

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def graph_ids(strings):
        return vocab.ids_tf(strings)

    assert graph_ids(tf.constant(texts)).to_list() == want


def test_ids_tf_equals_encode_on_random_words_of_seen_and_unseen_characters(vocab):
    rng = random.Random(0)
    alphabet = "abcdefghilmnoprstuvwyé" + "xz" + "犬がー红ที่"
    texts = [" ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
                      for _ in range(rng.randint(0, 6))) for _ in range(400)]
    got = vocab.ids_tf(tf.constant(texts)).to_list()
    assert got == [vocab.encode(t) for t in texts]
    flat = [i for row in got for i in row]
    assert vocab.unk_id in flat and len(set(flat)) > 50


def test_ids_tf_equals_encode_inside_a_tf_data_map(vocab):
    texts = CAPTIONS + EXTRA
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(7).map(
        lambda b: vocab.ids_tf(b), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    got = [row for batch in ds for row in batch.to_list()]
    assert got == [vocab.encode(t) for t in texts]


def test_ids_tf_flip_swaps_whole_words_left_and_right_for_wordpiece(vocab):
    texts = ["A circle left of a square, on the right", "left leftover", "犬が左 left"]
    flipped = vocab.ids_tf(tf.constant(texts), flip=tf.constant([True, True, False])).to_list()
    assert flipped == [vocab.encode("a circle right of a square on the left"),
                       vocab.encode("right leftover"),
                       vocab.encode("犬が左 left")]
    assert flipped[0] != vocab.encode(texts[0])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_decode_tf_equals_decode_on_random_ids_with_eos_pad_bos_and_out_of_range(vocab, dtype):
    rng = np.random.RandomState(0)
    ids = rng.randint(-3, vocab.size + 3, size=(300, 12)).astype(dtype)
    ids[rng.rand(300, 12) < 0.1] = vocab.eos_id
    ids[rng.rand(300, 12) < 0.1] = vocab.pad_id
    ids[rng.rand(300, 12) < 0.05] = vocab.bos_id
    got = _strings(vocab.decode_tf(tf.constant(ids)))
    assert got == [vocab.decode(row) for row in ids]
    assert any(g == "" for g in got) and any(" " in g for g in got) and any("<unk>" in g for g in got)


def test_decode_tf_equals_decode_on_encoded_captions(vocab):
    texts = CAPTIONS + EXTRA
    rows = [vocab.encode(t, add_bos_eos=True) for t in texts]
    width = max(map(len, rows)) + 2
    ids = np.array([r + [vocab.pad_id] * (width - len(r)) for r in rows], np.int32)
    got = _strings(vocab.decode_tf(tf.constant(ids)))
    assert got == [vocab.decode(r) for r in rows]
    assert got[: len(CAPTIONS)] == [normalize_wordpiece(t) for t in CAPTIONS]


def test_tokenize_captions_with_wordpiece_gives_bos_ids_eos_then_pad_rows(vocab):
    captions = tf.constant(["犬が公園を走っている", "赤い丸", "", "Two dogs, LEFT"])
    tokens = tokenize_captions(captions, vocab, 6, flip=tf.constant([False, False, False, True])).numpy()
    assert tokens.shape == (4, 8) and tokens.dtype == np.int32
    assert (tokens[:, 0] == vocab.bos_id).all()
    for row, text in zip(tokens.tolist(), ["犬が公園を走っている", "赤い丸", "", "two dogs right"]):
        ids = vocab.encode(text)[:6]
        assert row == [vocab.bos_id] + ids + [vocab.eos_id] + [vocab.pad_id] * (6 - len(ids))
    assert tokens[0, -1] == vocab.eos_id  # cut to 6 pieces, still ends with <eos>
    assert tokens[2].tolist() == [2, 3, 1, 1, 1, 1, 1, 1]


def test_train_dataset_with_wordpiece_vocabulary_yields_the_encoded_japanese_captions(vocab, tmp_path):
    png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
    examples = [{"image_id": f"id{i}", "image": png, "captions": JAPANESE[2 * i: 2 * i + 2]} for i in range(4)]
    write_shards(examples, str(tmp_path), "train", num_shards=2)
    ds = train_dataset(str(tmp_path), "train", vocab, batch_size=3, max_length=20, image_size=8,
                       drop_remainder=False, augment_flip=True)
    tokens = np.concatenate([b["tokens"] for b in ds.as_numpy_iterator()])
    assert tokens.shape == (8, 22)
    assert collections.Counter(vocab.decode(row) for row in tokens) == collections.Counter(
        vocab.decode(vocab.encode(c)[:20]) for c in JAPANESE[:8])


def test_decode_tf_in_a_saved_model_loaded_by_a_process_with_only_tensorflow(vocab, tmp_path):
    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def __call__(self, ids):
            return vocab.decode_tf(ids)

    rows = [vocab.encode(c, add_bos_eos=True) for c in JAPANESE[:10] + CHINESE[:2] + ENGLISH[:2]]
    rows.append([vocab.token_to_id("犬"), vocab.size + 5, vocab.token_to_id("が"), vocab.eos_id])
    width = max(map(len, rows)) + 1
    ids = [r + [vocab.pad_id] * (width - len(r)) for r in rows]
    model_dir, ids_file, out_file = (str(tmp_path / n) for n in ("decoder", "ids.json", "out.json"))
    tf.saved_model.save(Decoder(), model_dir)
    with open(ids_file, "w") as f:
        json.dump(ids, f)
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf
        model_dir, ids_file, out_file = sys.argv[1:]
        decoded = tf.saved_model.load(model_dir)(tf.constant(json.load(open(ids_file)), tf.int32))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow_text", "tfcaption"))
        with open(out_file, "w", encoding="utf-8") as f:
            json.dump({"decoded": [s.decode("utf-8") for s in decoded.numpy()], "loaded": loaded}, f)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", script, model_dir, ids_file, out_file], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out_file, encoding="utf-8") as f:
        result = json.load(f)
    assert result["loaded"] == []
    assert result["decoded"] == [vocab.decode(r) for r in ids]
    assert result["decoded"][1] == "犬が公園を走っている" and result["decoded"][-1] == "犬<unk>が"


# ----------------------------------------------------------------------------- IO and dispatch
def test_save_and_load_round_trip_keeps_suffix_pieces(vocab, tmp_path):
    path = vocab.save(str(tmp_path / "sub" / "vocab.txt"))
    lines = open(path, encoding="utf-8").read().splitlines()
    assert lines == vocab.tokens and lines[:4] == list(SPECIALS)
    assert any(line.startswith("##") for line in lines)
    loaded = WordPieceVocabulary.load(path)
    assert isinstance(loaded, WordPieceVocabulary) and loaded == vocab
    assert loaded.encode(JAPANESE[1]) == vocab.encode(JAPANESE[1])
    with pytest.raises(FileNotFoundError, match="not found"):
        WordPieceVocabulary.load(str(tmp_path / "missing.txt"))


def test_build_vocabulary_and_load_vocabulary_dispatch_on_kind(vocab, tmp_path):
    word = build_vocabulary("word", ENGLISH)
    assert type(word) is Vocabulary and word == Vocabulary.build(ENGLISH)
    piece = build_vocabulary("wordpiece", CAPTIONS)
    assert type(piece) is WordPieceVocabulary and piece == vocab
    assert build_vocabulary("word", ENGLISH, min_count=2, max_size=6) == Vocabulary.build(ENGLISH, 2, 6)
    path = vocab.save(str(tmp_path / "vocab.txt"))
    assert type(load_vocabulary(path)) is Vocabulary  # "word" is the default
    assert load_vocabulary(path, kind="wordpiece") == vocab
    # The same tokens as the other kind are not the same vocabulary: they encode text differently.
    assert load_vocabulary(path) != vocab and vocab != load_vocabulary(path)


@pytest.mark.parametrize("kind", ["bpe", "Word", ""])
def test_unknown_vocabulary_kind_raises_value_error_naming_it(kind, tmp_path):
    with pytest.raises(ValueError, match=f"unknown vocabulary kind '{kind}'.*'word'.*'wordpiece'"):
        build_vocabulary(kind, ENGLISH)
    with pytest.raises(ValueError, match=f"unknown vocabulary kind '{kind}'"):
        load_vocabulary(str(tmp_path / "vocab.txt"), kind=kind)


def test_word_vocabulary_module_does_not_import_tensorflow_text():
    code = ("import sys; import tfcaption.data.vocabulary as v; v.build_vocabulary('word', ['a b']); "
            "assert not [m for m in sys.modules if m.startswith('tensorflow_text')], 'tensorflow_text imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]


def test_word_vocabulary_ids_tf_equals_encode_and_swaps_left_right_where_flipped():
    word = Vocabulary.build(ENGLISH)
    texts = ENGLISH + ["left right, LEFT", ""]
    assert word.ids_tf(tf.constant(texts)).to_list() == [word.encode(t) for t in texts]
    flip = tf.constant([False] * len(ENGLISH) + [True, True])
    got = word.ids_tf(tf.constant(texts), flip=flip).to_list()
    assert got[-2] == word.encode("right left right") and got[:-2] == [word.encode(t) for t in ENGLISH]


def test_module_docstring_examples_run_as_doctests():
    for module in (wordpiece_module, tokenizer_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
