"""Annotation readers: every entry is kept, dropped with a reason, or the whole file is refused by name."""

import json
import os

import pytest

from tests.helpers import layouts
from tfcaption.data.annotations import (
    AnnotationsError, clean_caption, read_caption_table, read_coco_captions, read_karpathy, split_name_for)


@pytest.mark.parametrize("value, expected", [
    ("  A dog\n runs\tfast. ", ("A dog runs fast.", None)),
    ("a\x00b c", ("a b c", None)),
    ("", (None, "empty_caption")),
    (" \t\n", (None, "empty_caption")),
    ("?!...", (None, "empty_caption")),
    (b"caf\xe9", (None, "invalid_utf8")),
    ("caf\udce9", (None, "invalid_utf8")),
    (None, (None, "malformed_caption")),
    (42, (None, "malformed_caption")),
    ("Ein Café — очень 好", ("Ein Café — очень 好", None)),
])
def test_clean_caption_collapses_whitespace_or_names_why_it_drops_the_caption(value, expected):
    assert clean_caption(value) == expected


@pytest.mark.parametrize("name, split", [
    ("captions_train2014", "train"), ("val2017", "val"), ("validation", "val"), ("test", "test"), ("restval", "restval"),
])
def test_split_name_is_read_from_the_file_name(name, split):
    assert split_name_for(name) == split


def _reasons(items):
    return sorted(r for item in items for r, _ in item.dropped_captions)


def test_coco_reader_keeps_order_and_names_each_problem(tmp_path):
    layouts.make_coco(str(tmp_path))
    seen = set()
    train = read_coco_captions(str(tmp_path / "annotations" / "captions_train2014.json"),
                               str(tmp_path / "train2014"), seen)
    ids = [item.image_id for item in train.items]
    assert ids[:10] == [str(i) for i in range(1, 11)] and ids[10:] == ["50", "1", "51"]
    first = train.items[0]
    assert first.captions == layouts.captions_for(1)
    assert _reasons([first]) == ["duplicate_caption", "duplicate_caption_id", "empty_caption", "empty_caption",
                                 "empty_caption", "invalid_utf8"]
    assert train.items[11].skip[0] == "duplicate_image_id"
    assert train.items[12].skip[0] == "path_outside_root" and train.items[12].path is None
    assert dict(train.orphan_captions) == {"unknown_image_id": 1}
    val = read_coco_captions(str(tmp_path / "annotations" / "captions_val2014.json"), str(tmp_path / "val2014"), seen)
    assert [i.skip and i.skip[0] for i in val.items] == [None, "duplicate_image_id"]  # id 2 is a train image


def test_coco_reader_refuses_files_that_are_not_caption_files(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(AnnotationsError, match="x.json is not a JSON file"):
        read_coco_captions(str(bad), str(tmp_path))
    bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}]}))
    with pytest.raises(AnnotationsError, match="no 'annotations' list"):
        read_coco_captions(str(bad), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_coco_captions(str(tmp_path / "nothere.json"), str(tmp_path))


def test_karpathy_folds_restval_into_train_unless_asked_not_to(tmp_path):
    path, _ = layouts.make_karpathy(str(tmp_path))
    folded = read_karpathy(path, str(tmp_path))
    assert {k: len(v.items) for k, v in folded.items()} == {"train": 6, "val": 2, "test": 2}
    assert folded["train"].items[0].path == os.path.join(str(tmp_path), "val2014", "rgb.jpg")
    assert folded["train"].items[0].image_id == "1000"  # cocoid, the id COCO's own files use
    kept = read_karpathy(path, str(tmp_path), fold_restval=False)
    assert {k: len(v.items) for k, v in kept.items()} == {"train": 4, "restval": 2, "val": 2, "test": 2}
    assert folded["test"].items[1].skip[0] == "duplicate_image_id"


def test_flickr_style_karpathy_files_have_no_filepath(tmp_path):
    path, _ = layouts.make_karpathy(str(tmp_path), with_filepath=False)
    items = read_karpathy(path, str(tmp_path))["val"].items
    assert items[0].path == os.path.join(str(tmp_path), "palette.png")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_caption_table_rows_group_by_image(tmp_path, fmt):
    path, _ = layouts.make_folder(str(tmp_path), fmt)
    splits = read_caption_table(path, str(tmp_path))
    train = splits["train"]
    first = train.items[0]
    assert first.image_id == "images/rgb.jpg" and first.captions == layouts.captions_for(0)
    assert _reasons([first]) == ["empty_caption", "invalid_utf8", "split_conflict"]
    assert dict(train.orphan_captions) == {"malformed_row": 1}
    assert [i.image_id for i in splits["test"].items] == ["images/photo.webp"]


def test_caption_table_without_split_column_holds_out_a_stable_share(tmp_path):
    rows = ["file_name,text"] + [f"img{i}.jpg,caption {i}" for i in range(400)]
    path = tmp_path / "captions.csv"
    path.write_text("\n".join(rows))
    splits = read_caption_table(str(path), str(tmp_path), val_fraction=0.1, test_fraction=0.1)
    sizes = {k: len(v.items) for k, v in splits.items()}
    assert sum(sizes.values()) == 400 and 20 <= sizes["val"] <= 60 and 20 <= sizes["test"] <= 60
    path.write_text("\n".join(rows + ["img999.jpg,a new image"]))
    again = read_caption_table(str(path), str(tmp_path), val_fraction=0.1, test_fraction=0.1)
    for split in ("val", "test"):  # adding an image moves no existing one
        old = [i.image_id for i in splits[split].items]
        assert [i.image_id for i in again[split].items if i.image_id != "img999.jpg"] == old


def test_caption_table_needs_a_header_naming_image_and_caption(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("a.jpg,a caption\n")
    with pytest.raises(AnnotationsError, match="header row must name an image column"):
        read_caption_table(str(path), str(tmp_path))


def test_paths_that_leave_the_image_root_are_refused(tmp_path):
    path = tmp_path / "captions.jsonl"
    lines = [{"image": p, "caption": "x y"} for p in ("../secret.jpg", "/etc/passwd", "a/../../b.jpg", "C:\\x.jpg",
                                                       "gs://bucket/x.jpg", "ok/./fine.jpg")]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    items = [i for s in read_caption_table(str(path), str(tmp_path), 0, 0).values() for i in s.items]
    assert [i.skip and i.skip[0] for i in items] == ["path_outside_root"] * 5 + [None]
    assert items[-1].path == os.path.join(str(tmp_path), "ok", "fine.jpg")


def test_flickr_token_files_are_caption_tables(tmp_path):
    path = tmp_path / "Flickr8k.token.txt"
    path.write_text("1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
                    "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
                    "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog are fighting\n"
                    "garbage line without a tab\n")
    splits = read_caption_table(str(path), str(tmp_path), 0, 0)
    items = splits["train"].items
    assert [i.image_id for i in items] == ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
    assert items[0].captions == ["A child in a pink dress .", "A girl going into a wooden building ."]
    assert dict(splits["train"].orphan_captions) == {"malformed_row": 1}


def test_hostile_tables_and_json_fail_with_the_file_named(tmp_path):
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"image,caption\na.jpg,a cap\x00tion\nb.jpg,fine\n")
    items = read_caption_table(str(nul), str(tmp_path), 0, 0)["train"].items
    assert [i.captions for i in items] == [["a cap tion"], ["fine"]]
    huge = tmp_path / "huge.csv"
    huge.write_text("image,caption\na.jpg,\"" + "x" * 200_000 + "\"\n")
    with pytest.raises(AnnotationsError, match="huge.csv: line"):
        read_caption_table(str(huge), str(tmp_path))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationsError, match="deep.json nests JSON too deeply"):
        read_karpathy(str(deep), str(tmp_path))


def test_entries_that_become_no_item_are_counted_as_images_or_captions(tmp_path):
    path = tmp_path / "captions_val2014.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2}, "not an object"],
        "annotations": [{"id": [1], "image_id": 1, "caption": "a cat"}, {"id": [1], "image_id": 1, "caption": "a dog"},
                        {"caption": "no image id"}]}))
    result = read_coco_captions(str(path), str(tmp_path))
    assert dict(result.orphan_images) == {"malformed_image_entry": 2}
    assert dict(result.orphan_captions) == {"malformed_annotation": 1}
    assert result.items[0].captions == ["a cat"]  # list ids compared as text: the repeat is dropped
    assert result.items[0].dropped_captions == [("duplicate_caption_id", "annotation id [1]")]
