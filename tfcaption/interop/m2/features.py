"""Precomputed region features (the M2 release's HDF5 file) and the Karpathy COCO split.

Why this module exists: the released M2 checkpoint was trained and evaluated on bottom-up-attention
detection features, distributed as one HDF5 file (`coco_detections.hdf5`) holding, per COCO image, a
dataset `<image_id>_features` of shape (n, 2048) with n <= 50 regions, plus `<image_id>_boxes` and
`<image_id>_cls_prob` that captioning does not use. The COCO test split and its reference captions
come from Karpathy's `dataset_coco.json`. Reproducing the paper's numbers needs both, read exactly
the way the reference evaluation reads them:

* each image's regions are zero-padded to `max_regions` (50) rows; a file with more rows keeps the
  first `max_regions`, as the reference does. All-zero rows are padding (tfcaption's corrected
  encoder masks them; the released behaviour attends to them, see `CaptionerConfig`).
* a requested image that the file lacks is an error naming the image and the file
  (`FeaturesNotFoundError`), never zeros or random features: a silently blank image would still get
  a caption and quietly lower the scores.
* h5py is an optional dependency (`pip install tfcaption[h5]`); it is imported only when an HDF5
  file is opened, and its absence is one line saying what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from tfcaption.data.annotations import AnnotationsError, read_karpathy

MAX_REGIONS = 50
FEATURES_SUFFIX = "_features"
H5PY_HINT = "reading HDF5 region features needs h5py: pip install 'tfcaption[h5]' (or pip install h5py)"

# Karpathy's split names; training uses train + restval (as M2 and most captioning papers do).
KARPATHY_SPLITS = ("train", "restval", "val", "test")


class FeaturesNotFoundError(KeyError):
    """An image id whose `<id>_features` dataset is not in the HDF5 file.

    A `KeyError` (a missing key is what it is), with a readable message: `str()` of a plain KeyError
    is the repr of its argument, which would print the message in quotes.
    """

    def __init__(self, image_ids: Sequence[str], path: str):
        self.image_ids = list(image_ids)
        self.path = path
        shown = ", ".join(self.image_ids[:5])
        if len(self.image_ids) > 5:
            shown += f" (and {len(self.image_ids) - 5} more)"
        noun = "image" if len(self.image_ids) == 1 else f"{len(self.image_ids)} images"
        super().__init__(f"no region features for {noun} {shown} in {path} "
                         f"(expected dataset(s) named '<image_id>{FEATURES_SUFFIX}')")

    def __str__(self) -> str:
        return str(self.args[0])


class FeatureFileError(ValueError):
    """An HDF5 file that is not a region-features file (unreadable, wrong shapes)."""


def import_h5py():
    """h5py, or an ImportError whose one-line message says how to install it."""
    try:
        import h5py
    except ImportError:
        raise ImportError(H5PY_HINT) from None
    return h5py


def features_key(image_id) -> str:
    """The HDF5 dataset name of an image's region features (`391895` -> `391895_features`)."""
    return f"{image_id}{FEATURES_SUFFIX}"


def _id_order(image_id: str):
    # Numeric ids in numeric order (COCO ids), any others after them alphabetically.
    return (0, int(image_id), "") if image_id.isdigit() else (1, 0, image_id)


class RegionFeatureFile:
    """Read access to an HDF5 file of per-image region features, padded to `max_regions`.

    Args:
        path: the HDF5 file (e.g. the released `coco_detections.hdf5`).
        max_regions: rows per image after zero-padding (extra rows are dropped, as the reference
            does); 50 for the released model.

    Example:
        >>> import tempfile, h5py
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = os.path.join(tmp, "coco_detections.hdf5")
        ...     with h5py.File(path, "w") as f:   # the release's layout: "<image id>_features", (regions, 2048)
        ...         f["391895_features"] = np.ones((36, 2048), np.float32)
        ...         f["522418_features"] = np.ones((50, 2048), np.float32)
        ...     with RegionFeatureFile(path) as features:
        ...         array = features.read_batch(["391895", "522418"])
        >>> array.shape, array.dtype
        ((2, 50, 2048), dtype('float32'))
    """

    def __init__(self, path: str | os.PathLike, max_regions: int = MAX_REGIONS):
        self.path = os.fspath(path)
        self.max_regions = int(max_regions)
        if self.max_regions < 1:
            raise ValueError(f"max_regions must be >= 1, got {max_regions}")
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"region features file not found: {self.path}")
        h5py = import_h5py()
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise FeatureFileError(f"{self.path} is not a readable HDF5 file ({reason})") from None
        self._feature_dim = None

    # -------------------------------------------------------------------------------- context
    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RegionFeatureFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------------------------- contents
    def image_ids(self) -> list[str]:
        """Every image id with a `<id>_features` dataset, numeric ids in numeric order."""
        ids = [name[: -len(FEATURES_SUFFIX)] for name in self._file.keys() if name.endswith(FEATURES_SUFFIX)]
        return sorted(ids, key=_id_order)

    def __contains__(self, image_id) -> bool:
        return features_key(image_id) in self._file

    def missing(self, image_ids: Iterable) -> list[str]:
        """The ids among `image_ids` that the file has no features for (checked without reading)."""
        return [str(i) for i in image_ids if features_key(i) not in self._file]

    def require(self, image_ids: Iterable) -> None:
        """Raises `FeaturesNotFoundError` listing every requested id the file lacks."""
        missing = self.missing(image_ids)
        if missing:
            raise FeaturesNotFoundError(missing, self.path)

    @property
    def feature_dim(self) -> int:
        """The feature size, from the first `*_features` dataset."""
        if self._feature_dim is None:
            for name in self._file.keys():
                if name.endswith(FEATURES_SUFFIX):
                    self._feature_dim = int(self._dataset(name).shape[-1])
                    break
            else:
                raise FeatureFileError(f"{self.path} holds no '<image_id>{FEATURES_SUFFIX}' datasets")
        return self._feature_dim

    def _dataset(self, key: str):
        dataset = self._file[key]
        shape = getattr(dataset, "shape", None)
        if shape is None or len(shape) != 2:
            raise FeatureFileError(f"{self.path}: {key} has shape {shape}, expected (regions, feature_dim)")
        return dataset

    # -------------------------------------------------------------------------------- reading
    def read(self, image_id) -> np.ndarray:
        """One image's features, (max_regions, feature_dim) float32, zero rows after the real ones."""
        key = features_key(image_id)
        if key not in self._file:
            raise FeaturesNotFoundError([str(image_id)], self.path)
        dataset = self._dataset(key)
        if dataset.shape[1] != self.feature_dim:
            raise FeatureFileError(f"{self.path}: {key} has {dataset.shape[1]} features per region, "
                                   f"other images have {self.feature_dim}")
        rows = np.asarray(dataset[: self.max_regions], dtype=np.float32)
        padded = np.zeros((self.max_regions, self.feature_dim), np.float32)
        padded[: rows.shape[0]] = rows
        return padded

    def read_batch(self, image_ids: Sequence) -> np.ndarray:
        """Features of several images, (len(image_ids), max_regions, feature_dim) float32.

        Every id is checked before anything is read, so a missing image fails at once, naming all
        the missing ids of the batch.
        """
        self.require(image_ids)
        if not len(image_ids):
            return np.zeros((0, self.max_regions, self.feature_dim), np.float32)
        return np.stack([self.read(i) for i in image_ids])

    def batches(self, image_ids: Sequence, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yields `(ids, features)` for consecutive slices of `image_ids` (the last may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ids = [str(i) for i in image_ids]
        for start in range(0, len(ids), batch_size):
            chunk = ids[start: start + batch_size]
            yield chunk, self.read_batch(chunk)


def feature_batches(path, image_ids: Sequence, batch_size: int = 50,
                    max_regions: int = MAX_REGIONS) -> Iterator[tuple[list[str], np.ndarray]]:
    """Batches of `(image_ids, features (B, max_regions, d) float32)` read from an HDF5 file.

    All ids are checked before the first batch is produced, so a long run never fails halfway
    through for a missing image.
    """
    with RegionFeatureFile(path, max_regions) as features:
        features.require(image_ids)
        yield from features.batches(image_ids, batch_size)


# ------------------------------------------------------------------------------------ Karpathy JSON


@dataclass
class KarpathySplit:
    """The images of one split of Karpathy's `dataset_coco.json` and their reference captions.

    `image_ids` are strings (COCO ids when the file has `cocoid`), in file order; `references`
    maps each id to its raw reference captions; `filenames` maps each id to its image file name.
    """

    split: str
    image_ids: list[str] = field(default_factory=list)
    references: dict[str, list[str]] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)


def load_karpathy_split(path, split: str = "test") -> KarpathySplit:
    """Reads one split of a Karpathy-style captions file (`dataset_coco.json`), strictly.

    Parsing is :func:`tfcaption.data.annotations.read_karpathy`'s (ids are `cocoid`, the COCO image id
    that keys the released features file, else `imgid`); `split="train"` means train + restval, the
    training set of M2 and most captioning papers; "val", "test" and "restval" select that split alone.
    Unlike dataset preparation, which counts and skips bad entries, evaluating against a features file
    must see every image of the split, so an id listed twice or an image with no caption is an error.

    Raises:
        FileNotFoundError: no such file.
        AnnotationsError: not JSON, no `images` list, an unknown split name, an id that appears twice,
            an image without references, or no images in the split.
    """
    path = os.fspath(path)
    if split not in KARPATHY_SPLITS:
        raise AnnotationsError(f"unknown split {split!r}; Karpathy splits are {', '.join(KARPATHY_SPLITS)}")
    splits = read_karpathy(path, image_root="", fold_restval=split == "train")
    items = splits[split].items if split in splits else []
    if not items:
        found = sorted(name for name, s in splits.items() if s.items)
        raise AnnotationsError(f"{path}: no images in split {split!r} (splits present: {', '.join(found) or 'none'})")
    result = KarpathySplit(split)
    for item in items:
        reason = item.skip[0] if item.skip else None
        if reason == "duplicate_image_id":
            raise AnnotationsError(f"{path}: {item.skip[1]} in split {split!r}")
        if reason == "no_captions":
            raise AnnotationsError(f"{path}: image {item.image_id} has no reference captions ('sentences[].raw')")
        result.image_ids.append(item.image_id)
        result.references[item.image_id] = item.captions
        result.filenames[item.image_id] = os.path.basename(item.path or "")
    return result
