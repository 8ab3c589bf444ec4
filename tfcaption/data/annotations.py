"""Reading caption annotations (COCO JSON, Karpathy JSON, CSV / JSON Lines tables) into items, leniently.

A preparation run must never stop on one bad entry, and must never drop one silently. Every reader here
turns its file into :class:`Item` lists per split and, for each entry it cannot use, records *why*:

* a caption that is not text, not valid UTF-8, empty or only whitespace / punctuation, or a repeat of
  another caption of the same image, is dropped from its image (the image keeps its other captions);
* an image entry with a duplicate id, a path that leaves the image root, or no usable caption left
  becomes an item marked ``skip`` (so the preparation counts it beside the images that fail to load);
* an annotation that points at no image (``unknown_image_id``), a row or an image entry that cannot be
  parsed at all, is counted in the split's ``orphan_captions`` or ``orphan_images``.

Only a file that is unusable as a whole (not JSON, wrong layout, missing columns) raises
:class:`AnnotationsError`, with the file's name in the message.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
import unicodedata
from typing import Optional

import tensorflow as tf

from tfcaption.data.tokenizer import normalize_caption

__all__ = [
    "AnnotationsError", "Item", "SplitItems", "add_caption", "clean_caption", "finish_item", "read_coco_captions", "read_karpathy",
    "read_caption_table", "split_name_for",
]

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*$")
# Column names accepted in CSV / JSON Lines caption tables (first match wins).
IMAGE_COLUMNS = ("image", "image_path", "file_name", "filename", "file", "path")
CAPTION_COLUMNS = ("caption", "text", "sentence", "raw")


class AnnotationsError(ValueError):
    """An annotations file that cannot be used at all; the message names the file and what is wrong."""


@dataclasses.dataclass
class Item:
    """One image to prepare: where its bytes are and its cleaned captions.

    Attributes:
        image_id: unique id within the dataset (a COCO id, or the image's relative path).
        captions: cleaned reference captions.
        path: image file (local path or ``tf.io.gfile`` URL); None when ``data`` holds the bytes.
        data: encoded image bytes, for sources that deliver them (TFDS).
        dropped_captions: ``(reason, detail)`` for each caption of this image that was not kept.
        skip: ``(reason, detail)`` when the whole image is not usable (its captions are counted too).
    """

    image_id: str
    captions: list
    path: Optional[str] = None
    data: Optional[bytes] = None
    dropped_captions: list = dataclasses.field(default_factory=list)
    skip: Optional[tuple] = None

    @property
    def label(self) -> str:
        return self.path or self.image_id


@dataclasses.dataclass
class SplitItems:
    """A split's items in a fixed order, plus counts by reason of the entries that never became items."""

    items: list = dataclasses.field(default_factory=list)
    orphan_images: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    orphan_captions: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def split_name_for(name: str) -> str:
    """A split's name from a file stem or a table value: ``train2014`` -> ``train``, ``validation`` -> ``val``."""
    stem = name.strip().lower()
    stem = re.sub(r"^captions_", "", stem)
    stem = re.sub(r"(19|20)\d\d$", "", stem)
    return {"validation": "val", "valid": "val", "dev": "val", "testing": "test", "training": "train"}.get(stem, stem)


def clean_caption(value) -> tuple[Optional[str], Optional[str]]:
    """``(caption, None)`` with whitespace collapsed and control characters removed, or ``(None, reason)``.

    Reasons: ``malformed_caption`` (not text), ``invalid_utf8`` (bytes or a lone surrogate that are not
    UTF-8), ``empty_caption`` (nothing, or only whitespace / punctuation, after cleaning).
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid_utf8"
    if not isinstance(value, str):
        return None, "malformed_caption"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: undecodable bytes read with surrogateescape, or a bad \\u escape
        return None, "invalid_utf8"
    text = " ".join("".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value).split())
    if not normalize_caption(text):
        return None, "empty_caption"
    return text, None


def add_caption(captions: list, seen: set, dropped: list, value) -> None:
    text, reason = clean_caption(value)
    if reason is None:
        key = normalize_caption(text)
        if key in seen:
            reason = "duplicate_caption"
        else:
            seen.add(key)
            captions.append(text)
            return
    dropped.append((reason, _preview(value)))


def _preview(value, limit: int = 60) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "..."


def _read_text(path: str) -> str:
    """A text file's contents; bytes that are not UTF-8 survive as lone surrogates, so that only the
    entries containing them are dropped (``invalid_utf8``), not the whole file."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"annotations file not found: {path}")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _read_json(path: str):
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise AnnotationsError(f"{path} is not a JSON file ({error})") from None
    except RecursionError:
        raise AnnotationsError(f"{path} nests JSON too deeply to be an annotations file") from None


def _join_under(root: str, relative: str) -> Optional[str]:
    """``root/relative``, or None when ``relative`` is absolute or climbs out of ``root``."""
    relative = relative.replace("\\", "/")
    if not relative or relative.startswith("/") or re.match(r"^[A-Za-z]:", relative) or "://" in relative:
        return None
    normalised = posixpath.normpath(relative)
    if normalised == ".." or normalised.startswith("../"):
        return None
    return os.path.join(root, normalised)


def _image_item(image_id: str, root: str, relative: str, seen_ids: set) -> Item:
    item = Item(image_id=image_id, captions=[])
    if image_id in seen_ids:
        item.skip = ("duplicate_image_id", f"image id {image_id} appears twice")
        return item
    seen_ids.add(image_id)
    item.path = _join_under(root, relative)
    if item.path is None:
        item.skip = ("path_outside_root", f"{relative!r} is not a relative path under {root}")
    return item


def finish_item(item: Item) -> Item:
    if item.skip is None and not item.captions:
        item.skip = ("no_captions", "no usable caption")
    return item


# ---------------------------------------------------------------------------------------------- COCO


def read_coco_captions(annotations_path: str, images_dir: str, seen_ids: Optional[set] = None) -> SplitItems:
    """Items of one COCO captions file (``captions_train2014.json`` layout) with images in ``images_dir``.

    ``images[]`` gives ``id`` and ``file_name``; ``annotations[]`` gives ``image_id`` and ``caption``
    (and an ``id``, used to drop repeated annotations). Items keep the order of ``images[]``.
    ``seen_ids`` is shared between the files of one dataset, so an image listed in two splits is kept
    in the first only.
    """
    seen_ids = set() if seen_ids is None else seen_ids
    data = _read_json(annotations_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationsError(f"{annotations_path} has no 'images' list: not a COCO captions file")
    if not isinstance(data.get("annotations"), list):
        raise AnnotationsError(f"{annotations_path} has no 'annotations' list: a COCO image-info file without "
                               "captions (such as the test set's) cannot be used for training or evaluation")
    result = SplitItems()
    by_id = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not isinstance(entry.get("file_name"), str):
            result.orphan_images["malformed_image_entry"] += 1
            continue
        item = _image_item(str(entry["id"]), images_dir, entry["file_name"], seen_ids)
        result.items.append(item)
        # Skipped entries collect their captions too, so that those are counted as the image's.
        by_id.setdefault(item.image_id, (item, set()))
    annotation_ids = set()
    for entry in data["annotations"]:
        if not isinstance(entry, dict) or "image_id" not in entry:
            result.orphan_captions["malformed_annotation"] += 1
            continue
        target = by_id.get(str(entry["image_id"]))
        if target is None:
            result.orphan_captions["unknown_image_id"] += 1
            continue
        item, seen_captions = target
        if entry.get("id") is not None:
            annotation_id = str(entry["id"])  # str: a hostile file may use lists as ids
            if annotation_id in annotation_ids:
                item.dropped_captions.append(("duplicate_caption_id", f"annotation id {annotation_id}"))
                continue
            annotation_ids.add(annotation_id)
        add_caption(item.captions, seen_captions, item.dropped_captions, entry.get("caption"))
    for item in result.items:
        finish_item(item)
    return result


# ------------------------------------------------------------------------------------------ Karpathy


def read_karpathy(path: str, image_root: str, fold_restval: bool = True) -> dict[str, SplitItems]:
    """Items per split of a Karpathy split file (``dataset_coco.json``, ``dataset_flickr8k.json``, ...).

    Each ``images[]`` entry gives ``split`` (train / restval / val / test), ``sentences[].raw``,
    ``filename`` and, for COCO, ``filepath`` (``train2014`` / ``val2014``); the image is
    ``image_root/filepath/filename``. Ids are ``cocoid`` when present (they key COCO's own annotations
    and the released region features), else ``imgid``, else the file name. With ``fold_restval``
    (standard practice), ``restval`` images are trained on as part of ``train``.
    """
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationsError(f"{path} has no 'images' list: not a Karpathy split file (dataset_coco.json layout)")
    splits: dict[str, SplitItems] = {}
    seen_ids: set = set()
    for entry in data["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            splits.setdefault("train", SplitItems()).orphan_images["malformed_image_entry"] += 1
            continue
        split = str(entry.get("split", ""))
        if fold_restval and split == "restval":
            split = "train"
        if not _SPLIT_NAME.match(split):
            splits.setdefault("train", SplitItems()).orphan_images["invalid_split"] += 1
            continue
        raw_id = entry.get("cocoid", entry.get("imgid", entry["filename"]))
        relative = posixpath.join(str(entry.get("filepath") or ""), entry["filename"])
        item = _image_item(str(raw_id), image_root, relative, seen_ids)
        seen_captions: set = set()
        sentences = entry.get("sentences")
        for sentence in sentences if isinstance(sentences, list) else ():
            value = sentence.get("raw") if isinstance(sentence, dict) else sentence
            add_caption(item.captions, seen_captions, item.dropped_captions, value)
        splits.setdefault(split, SplitItems()).items.append(finish_item(item))
    return splits


# ----------------------------------------------------------------------------- CSV / JSON Lines tables


# Flickr8k / Flickr30k's own caption files: "<image file>#<n><TAB><caption>" per line.
_FLICKR_TOKEN_LINE = re.compile(r"^(?P<image>[^\t#]+)#\d+\t(?P<caption>.*)$")


def _table_rows(path: str):
    """``(line_number, row dict or None)`` for each row of a CSV (with a header), JSON Lines file, or
    Flickr token file (``Flickr8k.token.txt``, ``results_20130124.token``)."""
    text = _read_text(path)
    lines = text.splitlines()
    if lines and _FLICKR_TOKEN_LINE.match(lines[0]):
        for number, line in enumerate(lines, 1):
            match = _FLICKR_TOKEN_LINE.match(line)
            if line.strip():
                yield number, {"image": match["image"], "caption": match["caption"]} if match else None
        return
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            yield number, row if isinstance(row, dict) else None
        return
    # NUL bytes stop Python's csv reader; inside a caption they are control characters, removed anyway.
    reader = csv.DictReader(io.StringIO(text.replace("\x00", " "), newline=""))
    try:
        fields = [f.strip().lower() for f in reader.fieldnames or []]
    except csv.Error as error:
        raise AnnotationsError(f"{path}: not a readable CSV file ({error})") from None
    if not any(f in IMAGE_COLUMNS for f in fields) or not any(f in CAPTION_COLUMNS for f in fields):
        raise AnnotationsError(
            f"{path}: the header row must name an image column ({', '.join(IMAGE_COLUMNS)}) and a caption "
            f"column ({', '.join(CAPTION_COLUMNS)}); found {', '.join(reader.fieldnames or []) or 'no header'}")
    reader.fieldnames = fields
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:  # e.g. a field over the csv module's size limit: the file is not a table
        raise AnnotationsError(f"{path}: line {reader.line_num}: {error}") from None


def _column(row: dict, names) -> Optional[str]:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    return None


def _holdout_split(image_id: str, val_fraction: float, test_fraction: float) -> str:
    """A stable split for an image from its id alone: adding images never moves existing ones."""
    u = int.from_bytes(hashlib.sha256(image_id.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2.0**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def read_caption_table(path: str, image_root: str, val_fraction: float = 0.05,
                       test_fraction: float = 0.05) -> dict[str, SplitItems]:
    """Items per split of a captions table: one row per (image, caption), several rows per image allowed.

    CSV needs a header naming an image column (``image``, ``file_name``, ...) and a caption column
    (``caption``, ``text``, ...); JSON Lines needs the same keys in each object. Flickr's own token files
    (``1000268201_693b08cb0e.jpg#0<TAB>A child ...``) are read too. An optional ``split``
    column assigns splits (``restval`` counts as ``train``); without it each image goes to val / test with
    the given probabilities by a hash of its path, so the assignment is stable as images are added.
    Image paths are relative to ``image_root``; the relative path is the image id.
    """
    if not (val_fraction >= 0 and test_fraction >= 0 and val_fraction + test_fraction < 1):
        raise ValueError(f"val and test fractions must be >= 0 with a sum below 1, got {val_fraction}, {test_fraction}")
    splits: dict[str, SplitItems] = {}
    by_path: dict[str, tuple] = {}
    for line, row in _table_rows(path):
        relative = None if row is None else _column(row, IMAGE_COLUMNS)
        if not isinstance(relative, str) or not relative.strip():
            splits.setdefault("train", SplitItems()).orphan_captions["malformed_row"] += 1
            continue
        raw_path = relative.strip()
        relative = posixpath.normpath(raw_path.replace("\\", "/"))  # the image id: one per file
        try:
            relative.encode("utf-8")
        except UnicodeEncodeError:
            splits.setdefault("train", SplitItems()).orphan_captions["invalid_utf8"] += 1
            continue
        requested = str(row.get("split") or "").strip()
        split = split_name_for(requested) if requested else None
        if split == "restval":
            split = "train"
        if split is not None and not _SPLIT_NAME.match(split):
            splits.setdefault("train", SplitItems()).orphan_captions["invalid_split"] += 1
            continue
        if relative not in by_path:
            split = split or _holdout_split(relative, val_fraction, test_fraction)
            item = _image_item(relative, image_root, raw_path, set())
            by_path[relative] = (item, set(), split)
            splits.setdefault(split, SplitItems()).items.append(item)
        item, seen_captions, first_split = by_path[relative]
        if split is not None and split != first_split:
            item.dropped_captions.append(("split_conflict", f"line {line}: split {split!r}, image is in {first_split!r}"))
            continue
        add_caption(item.captions, seen_captions, item.dropped_captions, _column(row, CAPTION_COLUMNS))
    for split_items in splits.values():
        for item in split_items.items:
            finish_item(item)
    return splits
