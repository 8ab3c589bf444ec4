"""Tests for tfcaption.data.pipeline: image decoding, training/evaluation datasets, corrupt images."""

import collections
import io
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcaption.data.pipeline import (
    SHUFFLE_BYTES,
    count_undecodable,
    decode_image,
    default_shuffle_buffer,
    eval_dataset,
    tokenize_captions,
    train_dataset,
)
from tfcaption.data.records import IMAGES, InputKind, write_shards
from tfcaption.data.tokenizer import Vocabulary

COLOURS = {"red": (220, 20, 30), "green": (10, 200, 40), "blue": (30, 40, 210),
           "yellow": (230, 220, 10), "purple": (120, 20, 140), "grey": (128, 128, 128)}


def _pil_bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _solid_png(rgb, size=8) -> bytes:
    return tf.io.encode_png(np.full((size, size, 3), rgb, dtype=np.uint8)).numpy()


def _float_rgb(rgb):
    return np.asarray(rgb, np.float32)


# ----------------------------------------------------------------------------- decode_image
def _decode(data: bytes, size: int) -> np.ndarray:
    out = decode_image(tf.constant(data), size)
    assert out.dtype == tf.float32 and out.shape == (size, size, 3)
    return out.numpy()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_decode_image_solid_colour_in_every_format(fmt):
    rgb = (200, 40, 10)
    image = Image.new("RGB", (30, 20), rgb)
    if fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    out = _decode(_pil_bytes(image, fmt), 16)
    atol = 4.0 if fmt == "JPEG" else 1e-3
    np.testing.assert_allclose(out, np.broadcast_to(_float_rgb(rgb), out.shape), atol=atol)


def test_decode_image_grayscale_rgba_and_16_bit():
    grey = _decode(_pil_bytes(Image.new("L", (9, 9), 128), "PNG"), 4)
    np.testing.assert_allclose(grey, np.full((4, 4, 3), 128.0), atol=1e-3)

    rgba = _decode(_pil_bytes(Image.new("RGBA", (8, 8), (10, 200, 30, 77)), "PNG"), 8)
    np.testing.assert_allclose(rgba, np.broadcast_to(_float_rgb((10, 200, 30)), rgba.shape), atol=1e-4)

    deep = np.broadcast_to(np.array([0, 30000, 65535], np.uint16), (12, 10, 3))
    png16 = tf.io.encode_png(tf.constant(deep)).numpy()
    out = _decode(png16, 6)
    np.testing.assert_allclose(out[3, 3], [0.0, 30000 / 65535 * 255, 255.0], atol=1e-3)
    assert out.min() >= 0.0 and out.max() <= 255.0


def test_decode_image_resize_is_antialiased_and_same_size_is_identity():
    pixels = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    data = tf.io.encode_png(pixels).numpy()
    small = _decode(data, 16)
    want = tf.image.resize(pixels.astype(np.float32) / 255.0, [16, 16], antialias=True).numpy() * 255.0
    np.testing.assert_allclose(small, want, atol=1e-3)
    np.testing.assert_allclose(_decode(data, 32), pixels.astype(np.float32), atol=1e-4)


def test_decode_image_rejects_garbage():
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(tf.constant(b"definitely not an image"), 8)


def test_decode_image_to_a_rectangular_size_gives_that_height_and_width():
    out = decode_image(tf.constant(_solid_png((1, 2, 3), 10)), (4, 6))
    assert out.shape == (4, 6, 3)


def test_tokenize_captions_wraps_in_bos_eos_truncates_flips_and_keeps_a_static_batch():
    vocab = Vocabulary.build(["the red one is left of the blue one on the right"])
    captions = tf.constant(["The red one, LEFT of the blue one", "right", "the red one is left of it all"])
    tokens = tokenize_captions(captions, vocab, 4, flip=tf.constant([True, False, False])).numpy()
    ids = {w: vocab.token_to_id(w) for w in vocab.tokens}
    bos, eos, pad, unk = 2, 3, 1, 0
    assert tokens.tolist() == [
        [bos, ids["the"], ids["red"], ids["one"], ids["right"], eos],  # flipped, cut to 4 words
        [bos, ids["right"], eos, pad, pad, pad],
        [bos, ids["the"], ids["red"], ids["one"], ids["is"], eos],
    ]
    assert tokenize_captions(tf.constant(["it all"]), vocab, 4).numpy().tolist() == [[bos, unk, unk, eos, pad, pad]]

    @tf.function(input_signature=[tf.TensorSpec([5], tf.string)])
    def static(c):
        out = tokenize_captions(c, vocab, 4)
        assert out.shape.as_list() == [5, 6]  # the static batch size survives
        return out

    static(tf.constant(["a"] * 5))


# ----------------------------------------------------------------------------- datasets
def _basic_examples():
    """6 solid-colour images; each caption names its image's colour as the second word."""
    examples = []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        captions = [f"a {name} square number {k}" for k in range(i % 3 + 1)]
        if i == 2:
            captions.append(f"a {name} square that is much too long for the limit")
        examples.append({"image_id": f"id{i}", "image": _solid_png(rgb), "captions": captions,
                         "scene": json.dumps({"i": i})})
    return examples


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("basic"))
    examples = _basic_examples()
    write_shards(examples, data_dir, "train", num_shards=3)
    captions = [c for e in examples for c in e["captions"]]
    return data_dir, examples, captions, Vocabulary.build(captions)


def _expected_tokens(vocab, caption, max_length):
    ids = vocab.encode(caption)[:max_length]
    row = [vocab.bos_id] + ids + [vocab.eos_id]
    return row + [vocab.pad_id] * (max_length + 2 - len(row))


def _collect(ds):
    images, tokens = [], []
    for batch in ds.as_numpy_iterator():
        images.append(batch["images"])
        tokens.append(batch["tokens"])
    return np.concatenate(images), np.concatenate(tokens)


def test_train_dataset_has_static_shapes_images_in_range_and_drops_the_remainder(basic):
    data_dir, _, _, vocab = basic
    ds = train_dataset(data_dir, "train", vocab, batch_size=4, max_length=5, image_size=8)
    spec = ds.element_spec
    assert spec["images"].shape.as_list() == [4, 8, 8, 3] and spec["images"].dtype == tf.float32
    assert spec["tokens"].shape.as_list() == [4, 7] and spec["tokens"].dtype == tf.int32
    images, tokens = _collect(ds)
    assert images.shape == (12, 8, 8, 3)  # 13 captions, drop_remainder drops the last one
    assert images.min() >= 0 and images.max() <= 255


@pytest.mark.parametrize("decode_once", [False, True])
def test_train_dataset_one_element_per_caption_with_layout_and_pairing(basic, decode_once):
    data_dir, examples, captions, vocab = basic
    max_length = 6  # the 5-word captions fit; the 11-word one is cut
    ds = train_dataset(data_dir, "train", vocab, batch_size=3, max_length=max_length, image_size=8,
                       drop_remainder=False, decode_once=decode_once)
    images, tokens = _collect(ds)
    assert len(tokens) == len(captions) == 13
    want = collections.Counter(tuple(_expected_tokens(vocab, c, max_length)) for c in captions)
    assert collections.Counter(map(tuple, tokens.tolist())) == want

    # Layout: <bos> first, exactly one <eos>, nothing but <pad> after it; the long caption is cut.
    assert (tokens[:, 0] == vocab.bos_id).all()
    assert ((tokens == vocab.eos_id).sum(axis=1) == 1).all()
    eos_at = (tokens == vocab.eos_id).argmax(axis=1)
    for row, e in zip(tokens, eos_at):
        assert (row[e + 1:] == vocab.pad_id).all() and (row[1:e] != vocab.pad_id).all()
    assert (eos_at == max_length + 1).sum() == 1  # "a blue square that is much ..." cut to 6 words
    assert (eos_at == 6).sum() == 12

    # Every caption is paired with its own image: the colour word selects the pixel value.
    for image, row in zip(images, tokens):
        colour = vocab.tokens[row[2]]
        np.testing.assert_allclose(image, np.broadcast_to(_float_rgb(COLOURS[colour]), image.shape), atol=1e-4)


@pytest.mark.parametrize("decode_once", [False, True])
def test_train_dataset_is_deterministic_given_the_seed(basic, decode_once):
    data_dir, _, _, vocab = basic
    make = lambda seed: train_dataset(data_dir, "train", vocab, 2, 6, 8, seed=seed,  # noqa: E731
                                      augment_flip=True, drop_remainder=False, decode_once=decode_once)
    a1, a2, b = _collect(make(7)), _collect(make(7)), _collect(make(8))
    np.testing.assert_array_equal(a1[1], a2[1])
    np.testing.assert_array_equal(a1[0], a2[0])
    assert not np.array_equal(a1[1], b[1])
    # Another pass over the same dataset is reshuffled, with the same multiset of examples.
    ds = make(7)
    first, second = _collect(ds)[1], _collect(ds)[1]
    assert not np.array_equal(first, second)
    assert sorted(map(tuple, first.tolist())) == sorted(map(tuple, second.tolist()))


def test_train_dataset_repeat_runs_past_one_epoch(basic):
    data_dir, _, _, vocab = basic
    ds = train_dataset(data_dir, "train", vocab, 5, 6, 8, repeat=True)
    batches = list(ds.take(7).as_numpy_iterator())  # 35 pairs > 13 captions
    assert len(batches) == 7 and all(b["tokens"].shape == (5, 8) for b in batches)


def test_flip_mirrors_the_image_and_swaps_left_and_right(tmp_path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:, :3] = COLOURS["red"]
    pixels[:, 3:] = COLOURS["blue"]  # asymmetric: 3 red columns, 5 blue
    caption = "Red on the LEFT, blue on the right; leftmost stays."
    flipped_caption = "red on the right blue on the left leftmost stays"
    write_shards([{"image_id": "0", "image": tf.io.encode_png(pixels).numpy(), "captions": [caption] * 40}],
                 str(tmp_path), "train", 1)
    vocab = Vocabulary.build([caption])
    original = pixels.astype(np.float32)
    images, tokens = _collect(train_dataset(str(tmp_path), "train", vocab, 8, 12, 8, seed=3,
                                            augment_flip=True))
    n_flipped = 0
    for image, row in zip(images, tokens):
        if np.allclose(image, original[:, ::-1], atol=1e-4):
            n_flipped += 1
            assert vocab.decode(row) == flipped_caption
        else:
            np.testing.assert_allclose(image, original, atol=1e-4)
            assert vocab.decode(row) == "red on the left blue on the right leftmost stays"
    assert 5 <= n_flipped <= 35  # p = 0.5 each over 40 pairs
    # The flips are a function of the seed: the same seed flips the same pairs.
    again = _collect(train_dataset(str(tmp_path), "train", vocab, 8, 12, 8, seed=3, augment_flip=True))
    np.testing.assert_array_equal(again[0], images)
    np.testing.assert_array_equal(again[1], tokens)
    other = _collect(train_dataset(str(tmp_path), "train", vocab, 8, 12, 8, seed=4, augment_flip=True))
    assert not np.array_equal(other[1], tokens)
    # Without augmentation nothing is flipped.
    images, _ = _collect(train_dataset(str(tmp_path), "train", vocab, 8, 12, 8, seed=3))
    np.testing.assert_allclose(images, np.broadcast_to(original, images.shape), atol=1e-4)


def test_eval_dataset_keeps_write_order_pads_captions_and_keeps_the_remainder(basic):
    data_dir, examples, _, _ = basic
    ds = eval_dataset(data_dir, "train", batch_size=4, image_size=8)
    spec = ds.element_spec
    assert spec["images"].shape.as_list() == [None, 8, 8, 3]
    assert spec["captions"].shape.as_list() == [None, None] and spec["captions"].dtype == tf.string
    batches = list(ds.as_numpy_iterator())
    assert [len(b["image_id"]) for b in batches] == [4, 2]  # remainder kept
    ids = [i.decode() for b in batches for i in b["image_id"]]
    assert ids == [e["image_id"] for e in examples]  # no shuffling: write order
    first = batches[0]
    assert first["captions"].shape == (4, 4)  # padded to the most captions in the batch (image 2 has 4)
    assert first["captions"][0].tolist() == [b"a red square number 0", b"", b"", b""]
    assert batches[1]["captions"].shape == (2, 3)
    assert [json.loads(s)["i"] for s in first["scene"]] == [0, 1, 2, 3]
    np.testing.assert_allclose(first["images"][1], np.broadcast_to(_float_rgb(COLOURS["green"]), (8, 8, 3)),
                               atol=1e-4)


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("corrupt"))
    good_png = _solid_png(COLOURS["green"], 16)
    examples = []
    for i, name in enumerate(["red", "green", "blue", "yellow"]):
        examples.append({"image_id": f"good{i}", "image": _solid_png(COLOURS[name]),
                         "captions": [f"a {name} thing", f"the {name} one"]})
    examples.insert(2, {"image_id": "truncated", "image": good_png[: len(good_png) // 2],
                        "captions": ["a broken png", "still broken"]})
    examples.append({"image_id": "blob", "image": b"\x00\x01 this is not an image",
                     "captions": ["garbage"]})
    write_shards(examples, data_dir, "train", num_shards=2)
    captions = [c for e in examples for c in e["captions"]]
    return data_dir, Vocabulary.build(captions)


def test_count_undecodable_finds_the_corrupt_images(corrupt):
    data_dir, _ = corrupt
    assert count_undecodable(data_dir, "train") == (2, ["truncated", "blob"])


@pytest.mark.parametrize("decode_once", [False, True])
def test_train_dataset_skips_corrupt_images(corrupt, decode_once):
    data_dir, vocab = corrupt
    images, tokens = _collect(train_dataset(data_dir, "train", vocab, 3, 6, 8, drop_remainder=False,
                                            decode_once=decode_once))
    words = sorted(vocab.decode(row) for row in tokens)
    assert len(words) == 8
    assert words == sorted(f"{a} {c} {b}" for c in ["red", "green", "blue", "yellow"]
                           for a, b in [("a", "thing"), ("the", "one")])


def test_eval_dataset_skips_corrupt_images(corrupt):
    data_dir, _ = corrupt
    ids = [i.decode() for b in eval_dataset(data_dir, "train", 4, 8).as_numpy_iterator()
           for i in b["image_id"]]
    assert ids == ["good0", "good1", "good2", "good3"]


def test_a_corrupt_shard_is_not_silently_ignored(tmp_path):
    write_shards([{"image_id": str(i), "image": _solid_png((i, i, i)), "captions": ["a b"]}
                  for i in range(20)], str(tmp_path), "train", 1)
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # a corrupted shard (CRC mismatch): reading must fail loudly
    with open(path, "wb") as f:
        f.write(bytes(data))
    vocab = Vocabulary.build(["a b"])
    with pytest.raises(tf.errors.DataLossError):
        _collect(train_dataset(str(tmp_path), "train", vocab, 2, 4, 8, drop_remainder=False))
    with pytest.raises(tf.errors.DataLossError):
        _collect(train_dataset(str(tmp_path), "train", vocab, 2, 4, 8, decode_once=True))
    with pytest.raises(tf.errors.DataLossError):
        list(eval_dataset(str(tmp_path), "train", 2, 8))


def test_default_shuffle_buffer_holds_10000_images_or_512_mb_of_region_features():
    assert default_shuffle_buffer(IMAGES) == 10000
    m2 = InputKind("features", 2048, 50)  # 400 KB per image
    assert default_shuffle_buffer(m2) == SHUFFLE_BYTES // (4 * 2048 * 50) == 1310
    assert default_shuffle_buffer(InputKind("features", 8, 4)) == 10000  # small rows: the image cap
    assert default_shuffle_buffer(InputKind("features", 2048, 1000)) == 256  # huge rows: still some shuffling


def test_bicubic_resample_gives_pils_bicubic_pixels_in_training_and_evaluation_batches(tmp_path):
    # BLIP's image processor resizes with PIL's bicubic on uint8: an imported run's batches must match it.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)
    write_shards([{"image_id": "0", "image": tf.io.encode_png(pixels).numpy(), "captions": ["a red square"]}],
                 str(tmp_path), "train", 1)
    expected = np.asarray(Image.fromarray(pixels).resize((12, 12), Image.BICUBIC), np.float32)
    vocab = Vocabulary.build(["a red square"])
    train = next(train_dataset(str(tmp_path), "train", vocab, batch_size=1, max_length=4, image_size=12,
                               resample="bicubic").as_numpy_iterator())
    evaluated = next(eval_dataset(str(tmp_path), "train", batch_size=1, image_size=12,
                                  resample="bicubic").as_numpy_iterator())
    np.testing.assert_array_equal(train["images"][0], expected)
    np.testing.assert_array_equal(evaluated["images"][0], expected)
    bilinear = next(eval_dataset(str(tmp_path), "train", batch_size=1, image_size=12).as_numpy_iterator())
    assert np.abs(bilinear["images"][0] - expected).max() > 1  # the default resize is another one
