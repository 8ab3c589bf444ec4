"""The shapes dataset: deterministic, within spec, true captions, held-out pairs, a safe cache."""

import hashlib
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfcaption.datasets.shapes import dataset as shapes
from tfcaption.data.records import load_manifest, read_records
from tfcaption.datasets.shapes.grammar import MAX_CAPTION_WORDS, normalize_text, parse_caption, relation_holds

SMALL = shapes.ShapesConfig(num_train=60, num_val=20, num_test=20, num_novel=60)


def _scene(example):
    return json.loads(example["scene"])


@pytest.fixture(scope="module")
def caption_examples():
    """600 images (3000 captions) from train and novel, for the caption checks."""
    config = shapes.ShapesConfig(num_train=500, num_novel=100)
    return list(shapes.generate_split(config, "train")) + list(shapes.generate_split(config, "novel"))


def test_same_seed_gives_identical_bytes_and_another_seed_does_not():
    first = list(shapes.generate_split(SMALL, "train"))
    again = list(shapes.generate_split(SMALL, "train"))
    other = list(shapes.generate_split(shapes.ShapesConfig(num_train=60, seed=1), "train"))
    assert first == again
    assert [e["image"] for e in first] != [e["image"] for e in other]
    assert [e["image_id"] for e in first[:2]] == ["shapes-train-000000", "shapes-train-000001"]


def test_an_image_depends_only_on_seed_split_and_index():
    bigger = shapes.ShapesConfig(num_train=200)
    assert shapes.generate_example(bigger, "train", 17) == list(shapes.generate_split(SMALL, "train"))[17]


def test_splits_are_disjoint_and_novel_pairs_are_held_out():
    novel_pairs = set(shapes.NOVEL_PAIRS)
    assert len(novel_pairs) == 6
    assert {c for c, _ in novel_pairs} == set(shapes.COLOURS) and {s for _, s in novel_pairs} == set(shapes.SHAPES)
    hashes = {}
    seen_novel = set()
    for split in shapes.SPLITS:
        examples = list(shapes.generate_split(SMALL, split))
        assert len(examples) == SMALL.num_images(split)
        hashes[split] = {hashlib.sha256(e["image"]).hexdigest() for e in examples}
        for example in examples:
            pairs = {(o["colour"], o["shape"]) for o in _scene(example)["objects"]}
            if split == "novel":
                assert pairs & novel_pairs, example["scene"]
                seen_novel |= pairs & novel_pairs
            else:
                assert not pairs & novel_pairs, example["scene"]
    assert seen_novel == novel_pairs  # 60 novel images cover all six held-out pairs.
    for a in shapes.SPLITS:
        for b in shapes.SPLITS:
            if a < b:
                assert not hashes[a] & hashes[b], (a, b)


@pytest.mark.parametrize("image_size", [96, 48])
def test_scenes_are_within_spec_and_objects_do_not_overlap(image_size):
    config = shapes.ShapesConfig(image_size=image_size, num_train=150, min_objects=2, max_objects=5)
    scale = image_size / 96
    counts, colours, shape_names, sizes = set(), set(), set(), set()
    for example in shapes.generate_split(config, "train"):
        scene = _scene(example)
        assert (scene["width"], scene["height"]) == (image_size, image_size)
        objects = scene["objects"]
        counts.add(len(objects))
        for obj in objects:
            colours.add(obj["colour"])
            shape_names.add(obj["shape"])
            sizes.add(obj["size"])
            nominal = {"small": 8.0, "large": 15.0}[obj["size"]] * scale
            assert abs(obj["radius"] - nominal) <= 0.081 * nominal
            assert obj["radius"] <= obj["x"] <= image_size - obj["radius"]
            assert obj["radius"] <= obj["y"] <= image_size - obj["radius"]
        for i, a in enumerate(objects):
            for b in objects[i + 1:]:
                gap = np.hypot(a["x"] - b["x"], a["y"] - b["y"]) - a["radius"] - b["radius"]
                assert gap >= 3.0 * scale - 0.02, (a, b)
    assert counts == {2, 3, 4, 5}
    assert colours == set(shapes.COLOURS) and shape_names == set(shapes.SHAPES) and sizes == {"small", "large"}


@pytest.mark.parametrize("image_size", [96, 40])
def test_png_decodes_to_the_configured_size(image_size):
    example = shapes.generate_example(shapes.ShapesConfig(image_size=image_size), "val", 3)
    pixels = tf.io.decode_png(example["image"])
    assert pixels.shape == (image_size, image_size, 3) and pixels.dtype == tf.uint8


def test_rendered_shapes_have_their_colour_and_area():
    """Each shape covers the area its geometry says, in its colour, at its place."""
    radius = 15.0
    areas = {  # In units of radius**2, for the unit shapes of shapes.py.
        "circle": np.pi, "square": (2 * 0.7071) ** 2, "triangle": 3 * np.sqrt(3) / 4, "diamond": 2 * 0.62,
        "star": 5 * 0.45 * np.sin(np.pi / 5), "hexagon": 3 * np.sqrt(3) / 2,
    }
    for colour, shape in zip(shapes.COLOURS, shapes.SHAPES):
        scene = {"width": 64, "height": 64, "objects": [
            {"shape": shape, "colour": colour, "size": "large", "x": 32.0, "y": 32.0, "radius": radius}]}
        pixels = shapes.render_scene(scene, np.random.default_rng(0)).astype(float)
        # Same seed, no object: the same background gradient (its noise differs).
        background = shapes.render_scene(dict(scene, objects=[]), np.random.default_rng(0)).astype(float)
        painted = pixels[31:34, 31:34].mean(axis=(0, 1))
        assert np.linalg.norm(painted - shapes._RGB[colour]) < 30, (shape, painted)
        assert np.linalg.norm(pixels[:6] - shapes._RGB[colour], axis=-1).min() > 60  # Unlike the background.
        # Coverage of each pixel: where it lies between the background and the painted colour.
        towards = painted - background
        coverage = ((pixels - background) * towards).sum(-1) / (towards * towards).sum(-1)
        assert coverage.sum() == pytest.approx(areas[shape] * radius ** 2, rel=0.04), shape


def _check_caption(caption, objects):
    """Asserts that a caption names exactly the scene's objects and only true relations."""
    assert len(caption.split()) <= MAX_CAPTION_WORDS, caption
    parsed = parse_caption(caption)
    assert parsed.ok, caption
    claimed = []
    for mention in parsed.objects:
        named = [i for i, o in enumerate(objects) if o["colour"] == mention.colour and o["shape"] == mention.shape
                 and mention.size in (None, o["size"])]
        assert len(named) == mention.count, (caption, objects)
        claimed.append(named)
    assert sorted(i for named in claimed for i in named) == list(range(len(objects))), caption
    for subject, relation, target in parsed.relations:
        for s in claimed[subject]:
            for t in claimed[target]:
                a, b = objects[s], objects[t]
                # Clear: centres at least half the two radii apart along the axis (the generator asks 0.6).
                assert relation_holds(a, b, relation, 0.5 * (a["radius"] + b["radius"])), (caption, a, b)


def test_every_caption_is_true_to_its_scene(caption_examples):
    captions = 0
    for example in caption_examples:
        objects = _scene(example)["objects"]
        assert len(example["captions"]) == 5
        for caption in example["captions"]:
            _check_caption(caption, objects)
            captions += 1
    assert captions == 3000


def test_captions_have_paraphrase_variety(caption_examples):
    captions = [normalize_text(c) for e in caption_examples for c in e["captions"]]
    text = "\n".join(captions)
    for phrase in ("there is", "there are", "an image with", "a picture of", "which is", "that is",
                   "to the left of", "right of", "above", "below", "under", "two", "three", "an orange"):
        assert phrase in text, phrase
    assert "a orange" not in text and "an red" not in text
    words = {w for c in captions for w in c.split()}
    assert words <= set(shapes.SHAPES) | {s + "s" for s in shapes.SHAPES} | set(shapes.COLOURS) | {
        "small", "large", "a", "an", "two", "three", "four", "there", "is", "are", "and", "with", "which",
        "that", "image", "picture", "of", "to", "the", "left", "right", "above", "below", "under"}
    without_size = sum(not {"small", "large"} & set(c.split()) for c in captions)
    assert 0.2 < without_size / len(captions) < 0.5
    distinct = [len(set(e["captions"])) for e in caption_examples]
    assert np.mean(distinct) > 4.5


def test_config_round_trips_has_a_seed_dependent_fingerprint_and_rejects_bad_values():
    config = shapes.ShapesConfig(num_train=7, seed=3)
    assert shapes.ShapesConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["num_shards"] == 4
    assert config.fingerprint() == shapes.ShapesConfig(num_train=7, seed=3).fingerprint()
    assert len(config.fingerprint()) == 10
    assert config.fingerprint() != shapes.ShapesConfig(num_train=7, seed=4).fingerprint()
    with pytest.raises(ValueError, match="colour_count"):
        shapes.ShapesConfig.from_dict({"colour_count": 3})
    with pytest.raises(ValueError, match="min_objects"):
        shapes.ShapesConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match=r"data.options.max_objects must be an integer >= 1 and <= 5, got 6\."):
        shapes.ShapesConfig(max_objects=6)  # Six large objects cannot be placed apart.
    with pytest.raises(ValueError, match="split"):
        list(shapes.generate_split(config, "training"))


TINY = shapes.ShapesConfig(image_size=32, num_train=12, num_val=4, num_test=4, num_novel=6, num_shards=2)


def test_build_writes_shards_and_manifest_and_reuses_them(tmp_path, capsys):
    data_dir = shapes.build_shapes_dataset(str(tmp_path), TINY)
    assert os.path.basename(data_dir) == f"shapes-{TINY.fingerprint()}"
    assert "novel: 6 images" in capsys.readouterr().out
    manifest = load_manifest(data_dir)
    assert manifest["name"] == "shapes" and manifest["config"] == TINY.to_dict()
    assert [tuple(p) for p in manifest["novel_pairs"]] == list(shapes.NOVEL_PAIRS)
    assert manifest["splits"]["train"] == {"images": 12, "captions": 60, "shards": 2}
    assert manifest["splits"]["val"] == {"images": 4, "captions": 20, "shards": 2}
    for split in shapes.SPLITS:
        stored = {r["image_id"].decode(): r for r in read_records(data_dir, split).as_numpy_iterator()}
        for example in shapes.generate_split(TINY, split):
            record = stored.pop(example["image_id"])
            assert record["image"] == example["image"] and record["scene"].decode() == example["scene"]
            assert [c.decode() for c in record["captions"]] == example["captions"]
        assert not stored
    manifest_time = os.path.getmtime(os.path.join(data_dir, "manifest.json"))
    assert shapes.build_shapes_dataset(str(tmp_path), TINY, verbose=False) == data_dir
    assert os.path.getmtime(os.path.join(data_dir, "manifest.json")) == manifest_time
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(data_dir)]


def test_interrupted_build_leaves_no_dataset(tmp_path, monkeypatch):
    generate = shapes.generate_example

    def failing(config, split, index):
        if split == "test":
            raise KeyboardInterrupt
        return generate(config, split, index)

    monkeypatch.setattr(shapes, "generate_example", failing)
    with pytest.raises(KeyboardInterrupt):
        shapes.build_shapes_dataset(str(tmp_path), TINY, verbose=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(shapes, "generate_example", generate)
    data_dir = shapes.build_shapes_dataset(str(tmp_path), TINY, verbose=False)
    assert load_manifest(data_dir)["splits"]["test"]["images"] == 4


def test_worker_processes_write_the_same_examples(tmp_path):
    config = shapes.ShapesConfig(image_size=32, num_train=140, num_val=1, num_test=1, num_novel=1, num_shards=1)
    data_dir = shapes.build_shapes_dataset(str(tmp_path), config, verbose=False, workers=2)
    stored = [(r["image_id"], r["image"]) for r in read_records(data_dir, "train").as_numpy_iterator()]
    expected = [(e["image_id"].encode(), e["image"]) for e in shapes.generate_split(config, "train")]
    assert stored == expected


def test_images_look_different_from_each_other():
    """Backgrounds differ per image, so no two images share pixels outside their objects."""
    corners = [np.asarray(Image.open(io.BytesIO(e["image"])))[:4, :4].astype(int)
               for e in shapes.generate_split(SMALL, "val")]
    for a, b in zip(corners, corners[1:]):
        assert np.abs(a - b).mean() > 1.0
