"""Precomputed region features in HDF5: the one reader, for dataset preparation and for the M2 interop.

Layout (the M2 release's `coco_detections.hdf5`, from bottom-up-attention detections): per image a
dataset `<image_id>_features` of shape (n, d) (n <= 50 regions, d = 2048 there), beside
`<image_id>_boxes` and `<image_id>_cls_prob`, which captioning does not use and this reader ignores.
Read the way the M2 reference reads it:

* each image's regions are zero-padded to `max_regions` (50) rows; a file with more rows keeps the
  first `max_regions`, as the reference does. All-zero rows are padding.
* a requested image that the file lacks is an error naming the image and the file
  (`FeaturesNotFoundError`), never zeros or random features: a silently blank image would still get
  a caption and quietly lower the scores (or, in training, teach captions for nothing).
* so are an image whose feature width differs from the file's and one whose rows hold NaN or inf
  (`FeatureFileError`): either would poison every batch it lands in.
* h5py is an optional dependency (`pip install tfcaption[h5]`); it is imported only when an HDF5
  file is opened, and its absence is one line saying what to install.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "MAX_REGIONS", "FEATURES_SUFFIX", "H5PY_HINT", "FeaturesNotFoundError", "FeatureFileError",
    "import_h5py", "features_key", "RegionFeatureFile", "feature_batches",
]

MAX_REGIONS = 50
FEATURES_SUFFIX = "_features"
H5PY_HINT = "reading HDF5 region features needs h5py: pip install 'tfcaption[h5]' (or pip install h5py)"


class FeaturesNotFoundError(KeyError, ValueError):
    """Image ids whose `<id>_features` dataset is not in the HDF5 file.

    A `KeyError` (a missing key is what it is) and a `ValueError` (the console scripts print those as
    one line: a dataset that names images the features file lacks is a bad value the user can fix),
    with a readable message: `str()` of a plain KeyError is the repr of its argument, which would
    print the message in quotes.
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
    """An HDF5 file that is not a usable region-features file (unreadable, wrong shapes, non-finite values)."""


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
        self._dim_key = None  # the dataset the width was taken from, for the mismatch message

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
                    self._dim_key = name
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
    def num_regions(self, image_id) -> int:
        """How many rows the file holds for an image (before cutting to `max_regions`)."""
        key = features_key(image_id)
        if key not in self._file:
            raise FeaturesNotFoundError([str(image_id)], self.path)
        return int(self._dataset(key).shape[0])

    def read_rows(self, image_id) -> np.ndarray:
        """One image's real regions, (n, feature_dim) float32 with n <= max_regions, unpadded.

        Raises:
            FeaturesNotFoundError: the file has no `<image_id>_features`.
            FeatureFileError: its width differs from the file's, or a kept row holds NaN or inf.
        """
        key = features_key(image_id)
        if key not in self._file:
            raise FeaturesNotFoundError([str(image_id)], self.path)
        dataset = self._dataset(key)
        if dataset.shape[1] != self.feature_dim:
            raise FeatureFileError(f"{self.path}: image {image_id} ({key}) has {dataset.shape[1]} features per "
                                   f"region, other images have {self.feature_dim} (e.g. {self._dim_key})")
        rows = np.asarray(dataset[: self.max_regions], dtype=np.float32)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            raise FeatureFileError(f"{self.path}: image {image_id} ({key}) has NaN or inf in region row "
                                   f"{int(np.argmin(finite))}")
        return rows

    def read(self, image_id) -> np.ndarray:
        """One image's features, (max_regions, feature_dim) float32, zero rows after the real ones."""
        rows = self.read_rows(image_id)
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
