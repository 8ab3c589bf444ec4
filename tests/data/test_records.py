"""Tests for tfcaption.data.records: shard writing/reading, errors, manifest."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfcaption.data import records
from tfcaption.data.records import (
    WrittenShards,
    list_splits,
    load_manifest,
    read_records,
    write_manifest,
    write_shards,
)


def _png(value: int, size: int = 4) -> bytes:
    image = np.full((size, size, 3), value, dtype=np.uint8)
    return tf.io.encode_png(image).numpy()


def _examples(n: int):
    return [
        {
            "image_id": f"img{i}",
            "image": _png(10 * i),
            "captions": [f"Caption {i}.{k} café" for k in range(i % 3 + 1)],
            "scene": json.dumps({"objects": [{"shape": "circle", "x": float(i)}]}) if i % 2 else "",
        }
        for i in range(n)
    ]


def test_round_trip_preserves_every_field_and_the_write_order(tmp_path):
    examples = _examples(7)
    out = write_shards(iter(examples), str(tmp_path), "train", num_shards=3)

    assert isinstance(out, WrittenShards) and isinstance(out, list)
    assert [os.path.basename(p) for p in out] == [
        "train-00000-of-00003.tfrecord", "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]
    assert out.images == 7
    assert out.captions == sum(len(e["captions"]) for e in examples) == 13
    # Round-robin: shard sizes differ by at most one record.
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in out]
    assert sizes == [3, 2, 2]

    ds = read_records(str(tmp_path), "train")
    assert ds.element_spec["captions"].shape.as_list() == [None]
    got = list(ds.as_numpy_iterator())
    assert len(got) == 7
    for want, have in zip(examples, got):  # read order == write order
        assert have["image_id"].decode() == want["image_id"]
        assert have["image"] == want["image"]
        assert [c.decode("utf-8") for c in have["captions"]] == want["captions"]
        assert have["scene"].decode() == want["scene"]
    # No temporary files are left behind.
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in out)


def test_shuffle_files_is_seeded_and_keeps_every_record(tmp_path):
    write_shards(_examples(12), str(tmp_path), "train", num_shards=4)
    ids = lambda ds: [r["image_id"].decode() for r in ds.as_numpy_iterator()]  # noqa: E731
    a = ids(read_records(str(tmp_path), "train", shuffle_files=True, seed=3))
    b = ids(read_records(str(tmp_path), "train", shuffle_files=True, seed=3))
    assert a == b
    assert sorted(a) == sorted(f"img{i}" for i in range(12))


def test_rewriting_a_split_with_another_shard_count_removes_the_stale_shards(tmp_path):
    write_shards(_examples(5), str(tmp_path), "val", num_shards=4)
    write_shards(_examples(3), str(tmp_path), "val", num_shards=2)
    assert sorted(os.listdir(tmp_path)) == ["val-00000-of-00002.tfrecord", "val-00001-of-00002.tfrecord"]
    assert sum(1 for _ in read_records(str(tmp_path), "val")) == 3


def test_failed_write_leaves_no_files(tmp_path):
    def broken():
        yield _examples(1)[0]
        raise RuntimeError("source failed")

    with pytest.raises(RuntimeError):
        write_shards(broken(), str(tmp_path), "train", num_shards=2)
    assert os.listdir(tmp_path) == []


def test_invalid_examples_are_rejected(tmp_path):
    bad = dict(_examples(1)[0], captions="one string, not a list")
    with pytest.raises(TypeError, match="list of strings"):
        write_shards([bad], str(tmp_path), "train", 1)
    with pytest.raises(KeyError, match="image"):
        write_shards([{"image_id": "x", "captions": []}], str(tmp_path), "train", 1)
    with pytest.raises(ValueError):
        write_shards([], str(tmp_path), "train", 0)


def test_missing_split_error_names_directory_split_and_existing_splits(tmp_path):
    write_shards(_examples(2), str(tmp_path), "train", 1)
    write_shards(_examples(2), str(tmp_path), "val-small", 1)
    assert list_splits(str(tmp_path)) == ["train", "val-small"]
    with pytest.raises(FileNotFoundError) as info:
        read_records(str(tmp_path), "test")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "'test" in message
    assert "train, val-small" in message


def test_a_missing_directory_or_shard_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_records(str(tmp_path / "nowhere"), "train")
    out = write_shards(_examples(4), str(tmp_path), "train", 2)
    os.remove(out[1])
    with pytest.raises(FileNotFoundError, match="incomplete: 1 of 2"):
        read_records(str(tmp_path), "train")


def test_manifest_round_trip_and_missing_error(tmp_path):
    manifest = {"name": "shapes", "splits": {"train": {"images": 7, "captions": 14, "shards": 3}},
                "skipped": {"undecodable": 1}, "note": "ünïcode"}
    path = write_manifest(str(tmp_path / "d"), manifest)
    assert path.endswith("manifest.json")
    assert load_manifest(str(tmp_path / "d")) == manifest
    assert os.listdir(tmp_path / "d") == ["manifest.json"]  # written atomically, temp file renamed
    manifest["splits"]["train"]["images"] = 8
    write_manifest(str(tmp_path / "d"), manifest)  # overwrite
    assert load_manifest(str(tmp_path / "d"))["splits"]["train"]["images"] == 8

    with pytest.raises(FileNotFoundError, match="no manifest.json in") as info:
        load_manifest(str(tmp_path / "empty"))
    assert "\n" not in str(info.value)


def test_shard_names_are_split_index_of_count_zero_padded():
    assert records.shard_name("train", 3, 16) == "train-00003-of-00016.tfrecord"
