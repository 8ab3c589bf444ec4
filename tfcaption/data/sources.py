"""Dataset specs: what `--data SPEC` names, and turning it into a prepared records directory.

Specs (every command takes them; paths may be local or any ``tf.io.gfile`` URL such as ``gs://``):

    shapes                                  the built-in synthetic dataset (built once, cached)
    records:DIR   or   DIR                  a directory prepared by tfcaption-prepare (manifest.json + shards)
    coco:ROOT                               COCO's download layout: ROOT/annotations/captions_<split><year>.json
                                            with images in ROOT/<split><year>/ (train2014 -> split "train")
    coco:FILE.json[?images=DIR&split=NAME]  one COCO captions file; images default to the sibling folder
                                            named after the file (annotations/../val2014/)
    karpathy:FILE.json[?images=ROOT&restval=train|keep]
                                            a Karpathy split file (dataset_coco.json, dataset_flickr8k.json,
                                            dataset_flickr30k.json); image = ROOT/filepath/filename, ROOT
                                            defaulting to the file's folder; restval is trained on by default
    tfds:NAME[?data_dir=DIR&download=0&splits=a,b&restval=keep]
                                            a TensorFlow Datasets dataset, e.g. tfds:coco_captions
    folder:DIR[?captions=FILE&val=0.05&test=0.05]
                                            images under DIR plus a captions table (DIR/captions.csv,
                                            .jsonl or .txt by default): image path, caption[, split]
    features:FILE.hdf5[?captions=FILE[,FILE...]&max_regions=50&restval=train|keep]
                                            precomputed region features (the M2 release's
                                            coco_detections.hdf5 layout: <image_id>_features, (n, D))
                                            with captions from a Karpathy split file (restval as for
                                            karpathy:) or from COCO captions files named
                                            captions_<split><year>.json (their splits from the names,
                                            as for coco:); captions default to dataset_coco.json beside
                                            the HDF5 file; each image keeps its first max_regions rows

Options after ``?`` are URL query parameters (``SOURCE_OPTIONS`` lists each scheme's); they may also be
given as a dict to `tfcaption.data.catalog.resolve_dataset`. This module parses specs and opens sources;
turning a spec into a prepared directory (once, cached by fingerprint) is `resolve_dataset`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.parse
from typing import Iterator

import tensorflow as tf

from tfcaption.data import annotations, records
from tfcaption.data.options import SOURCE_OPTIONS, SOURCE_SCHEMES, flag_value  # noqa: F401 (each scheme's options, typed)
from tfcaption.data.region_features import MAX_REGIONS, RegionFeatureFile

_CAPTION_FILES = ("captions.csv", "captions.jsonl", "captions.txt", "captions.json")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset spec that names nothing usable; the message is one line for the console."""


@dataclasses.dataclass
class DatasetSpec:
    """A parsed ``--data`` spec: ``scheme:path?options``."""

    scheme: str
    path: str
    options: dict

    @classmethod
    def parse(cls, spec: str) -> "DatasetSpec":
        spec = str(spec).strip()
        scheme, sep, rest = spec.partition(":")
        if not sep or scheme not in SOURCE_SCHEMES + ("records", "shapes"):
            scheme, rest = ("shapes", "") if spec == "shapes" else ("records", spec)
        path, _, query = rest.partition("?")
        options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        if path and "://" not in path:
            path = os.path.expanduser(path)
        return cls(scheme, path, options)

    def check_options(self, *known):
        """Raises ValueError naming any option this scheme does not take (a typo must not be ignored)."""
        unknown = set(self.options) - set(known)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))} for {self.scheme}: specs "
                             f"(known: {', '.join(known) or 'none'})")


def _flag(value, name) -> bool:
    # data.options' own reading of yes/no words (true/false, yes/no, on/off, 1/0; restval also train/keep)
    return flag_value(name, value, f"option {name}")


def _require(path: str, what: str) -> str:
    if not tf.io.gfile.exists(path):
        raise DatasetNotFoundError(f"{what} not found: {path}")
    return path


class FileSource:
    """A source read from annotation files on disk (COCO, Karpathy or a captions table).

    It holds every split's items in a fixed order (the annotations are read once, up front), so the
    preparation can shard them deterministically and resume by position.
    """

    def __init__(self, scheme: str, splits: dict, files: list, settings: dict):
        self.scheme = scheme
        self._splits = {name: splits[name] for name in sorted(splits, key=_split_order)}
        self._files = files
        self._settings = settings

    def describe(self) -> dict:
        return {"scheme": self.scheme, "files": self._files, **self._settings}

    def fingerprint_parts(self) -> dict:
        stats = []
        for path in self._files:
            stat = tf.io.gfile.stat(path)
            stats.append([path, stat.length, stat.mtime_nsec])
        return {**self.describe(), "file_stats": stats}

    def split_names(self) -> list:
        return list(self._splits)

    def split_size(self, split: str) -> int:
        return len(self._splits[split].items)

    def orphans(self, split: str) -> tuple[dict, dict]:
        """Counts by reason of the image entries and of the captions that became no item."""
        return dict(self._splits[split].orphan_images), dict(self._splits[split].orphan_captions)

    def items(self, split: str, start: int = 0) -> Iterator[annotations.Item]:
        return iter(self._splits[split].items[start:])

    def inputs(self) -> dict:
        """The manifest's ``"inputs"`` entry for what this source's examples hold."""
        return records.IMAGES.to_manifest()


class FeaturesSource(FileSource):
    """Captions from annotation files, and each image's content from an HDF5 file of region features.

    Items are those of the captions files (``path`` is the image's file name, for the skipped log only);
    preparation reads each item's rows with :meth:`open_features` instead of an image file. Opening
    checks that the HDF5 file has features for every captioned image, so a missing one fails at once
    rather than hours into a preparation.

    Raises:
        FeaturesNotFoundError: (a KeyError and a ValueError) naming the captioned images the HDF5
            file lacks, and the file.
    """

    def __init__(self, splits: dict, files: list, features_path: str, max_regions: int, settings: dict):
        super().__init__("features", splits, files + [features_path], {**settings, "max_regions": max_regions})
        self.features_path = features_path
        self.max_regions = max_regions
        with self.open_features() as features:
            features.require(item.image_id for split in self._splits.values() for item in split.items
                             if item.skip is None)
            self.feature_dim = features.feature_dim

    def open_features(self) -> RegionFeatureFile:
        """The HDF5 file, opened for reading (use it as a context manager)."""
        return RegionFeatureFile(self.features_path, self.max_regions)

    def inputs(self) -> dict:
        return records.InputKind("features", self.feature_dim, self.max_regions).to_manifest()


def _split_order(name: str):
    return ({"train": 0, "val": 1, "test": 2}.get(name, 3), name)


def _coco_source(spec: DatasetSpec) -> FileSource:
    path = spec.path
    spec.check_options(*SOURCE_OPTIONS["coco"])
    images_option = spec.options.get("images")
    if tf.io.gfile.isdir(path):
        if spec.options:
            raise ValueError("coco:ROOT takes no options; name one captions file to use images= or split=")
        files = sorted(tf.io.gfile.glob(os.path.join(path, "annotations", "captions_*.json")))
        if not files:
            raise DatasetNotFoundError(f"no annotations/captions_*.json under {path} (COCO's layout: "
                                       "ROOT/annotations/captions_train2014.json, ROOT/train2014/*.jpg)")
        plan = [(f, os.path.join(path, _coco_stem(f)), annotations.split_name_for(_coco_stem(f))) for f in files]
    else:
        _require(path, "COCO captions file")
        stem = _coco_stem(path)
        folder = os.path.dirname(path)
        images = images_option or next(
            (c for c in (os.path.join(os.path.dirname(folder), stem), os.path.join(folder, stem))
             if tf.io.gfile.isdir(c)), folder)
        plan = [(path, images, spec.options.get("split") or annotations.split_name_for(stem))]
    seen_ids: set = set()
    splits: dict = {}
    for annotation_file, images, split in plan:
        _require(images, "image folder")
        _merge(splits, split, annotations.read_coco_captions(annotation_file, images, seen_ids))
    return FileSource("coco", splits, [p for p, _, _ in plan], {"images": sorted({i for _, i, _ in plan})})


def _merge(splits: dict, split: str, read: annotations.SplitItems) -> None:
    """Append one annotations file's items (and orphan counts) to ``splits[split]``."""
    merged = splits.setdefault(split, annotations.SplitItems())
    merged.items.extend(read.items)
    merged.orphan_images.update(read.orphan_images)
    merged.orphan_captions.update(read.orphan_captions)


def _coco_stem(path: str) -> str:
    """``.../captions_train2014.json`` -> ``train2014``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem[len("captions_"):] if stem.startswith("captions_") else stem


def _karpathy_source(spec: DatasetSpec) -> FileSource:
    path = _require(spec.path, "Karpathy split file")
    spec.check_options(*SOURCE_OPTIONS["karpathy"])
    images = spec.options.get("images") or os.path.dirname(path)
    _require(images, "image root")
    fold = _flag(spec.options.get("restval", "train"), "restval")
    splits = annotations.read_karpathy(path, images, fold_restval=fold)
    return FileSource("karpathy", splits, [path], {"images": images, "fold_restval": fold})


def _folder_source(spec: DatasetSpec) -> FileSource:
    root = spec.path
    if not tf.io.gfile.isdir(root):
        raise DatasetNotFoundError(f"image folder not found: {root}")
    spec.check_options(*SOURCE_OPTIONS["folder"])
    captions = spec.options.get("captions")
    if captions is None:
        captions = next((os.path.join(root, n) for n in _CAPTION_FILES if tf.io.gfile.exists(os.path.join(root, n))),
                        None)
        if captions is None:
            raise DatasetNotFoundError(f"no captions file in {root} (looked for {', '.join(_CAPTION_FILES)}); "
                                       "name one with folder:DIR?captions=FILE")
    _require(captions, "captions file")
    val, test = float(spec.options.get("val", 0.05)), float(spec.options.get("test", 0.05))
    splits = annotations.read_caption_table(captions, root, val_fraction=val, test_fraction=test)
    return FileSource("folder", splits, [captions], {"images": root, "val": val, "test": test})


def _tfds_source(spec: DatasetSpec):
    from tfcaption.data.tfds_source import TfdsSource

    spec.check_options(*SOURCE_OPTIONS["tfds"])
    splits = spec.options.get("splits")
    return TfdsSource(
        spec.path, data_dir=spec.options.get("data_dir") or None,
        download=_flag(spec.options.get("download", "1"), "download"),
        fold_restval=_flag(spec.options.get("restval", "train"), "restval"),
        splits=[s.strip() for s in (splits.split(",") if isinstance(splits, str) else splits) if s.strip()]
        if splits else None)


def _features_source(spec: DatasetSpec) -> FeaturesSource:
    path = _require(spec.path, "region features file")
    spec.check_options(*SOURCE_OPTIONS["features"])
    captions = spec.options.get("captions")
    if captions is None:
        captions = os.path.join(os.path.dirname(path), "dataset_coco.json")
        if not tf.io.gfile.exists(captions):
            raise DatasetNotFoundError(f"no captions for {path}: name a Karpathy split file or COCO captions "
                                       "files with features:FILE.hdf5?captions=dataset_coco.json (looked for "
                                       f"{captions})")
    files = captions if isinstance(captions, (list, tuple)) else str(captions).split(",")
    files = [_require(os.path.expanduser(str(f).strip()), "captions file") for f in files if str(f).strip()]
    coco = [f for f in files if _is_coco_captions(f)]
    if not files or (coco and len(coco) != len(files)) or (not coco and len(files) > 1):
        raise ValueError(f"features: captions={captions!r}: give one Karpathy split file, or one or more COCO "
                         "captions files (captions_<split><year>.json), not a mix")
    max_regions = spec.options.get("max_regions", MAX_REGIONS)
    if not str(max_regions).strip().isdigit() or int(max_regions) < 1:
        raise ValueError(f"option max_regions={max_regions!r} is not a whole number >= 1")
    max_regions = int(max_regions)
    fold = _flag(spec.options.get("restval", "train"), "restval")
    splits: dict = {}
    if coco:
        # Images are never opened: the image folder is empty, and file names only label the skipped log.
        seen_ids: set = set()
        for f in coco:
            _merge(splits, annotations.split_name_for(_coco_stem(f)), annotations.read_coco_captions(f, "", seen_ids))
        settings = {"captions_format": "coco"}
    else:
        splits = annotations.read_karpathy(files[0], "", fold_restval=fold)
        settings = {"captions_format": "karpathy", "fold_restval": fold}
    if not any(split.items for split in splits.values()):
        raise annotations.AnnotationsError(f"{', '.join(files)}: no image entries with a file name and split "
                                           "(is it a Karpathy split file or COCO captions_<split>.json?)")
    return FeaturesSource(splits, files, path, max_regions, settings)


def _is_coco_captions(path: str) -> bool:
    """COCO's captions files are told apart from a Karpathy split file by COCO's own file names."""
    return os.path.basename(path).startswith("captions_")


_OPENERS = {"coco": _coco_source, "karpathy": _karpathy_source, "folder": _folder_source, "tfds": _tfds_source,
            "features": _features_source}


def open_source(spec) -> object:
    """The source a spec names (``coco:``, ``karpathy:``, ``tfds:``, ``folder:`` or ``features:``), annotations read.

    Raises:
        DatasetNotFoundError: a file or folder the spec names does not exist.
        AnnotationsError: an annotations file that is unusable as a whole.
        FeaturesNotFoundError: (``features:``) a captioned image the HDF5 file has no features for.
        ValueError: an unknown scheme or option.
    """
    parsed = spec if isinstance(spec, DatasetSpec) else DatasetSpec.parse(spec)
    if parsed.scheme not in _OPENERS:
        raise ValueError(f"{spec!r} is not a source spec; give one of "
                         f"{', '.join(s + ':...' for s in SOURCE_SCHEMES)}")
    if not parsed.path:
        raise ValueError(f"{spec!r} names no path or dataset after '{parsed.scheme}:'")
    return _OPENERS[parsed.scheme](parsed)


def source_fingerprint(source) -> str:
    text = json.dumps(source.fingerprint_parts(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
