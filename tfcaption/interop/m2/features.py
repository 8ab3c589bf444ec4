"""The M2 release's evaluation inputs: its HDF5 region features and Karpathy's COCO split.

Why this module exists: the released M2 checkpoint was trained and evaluated on bottom-up-attention
detection features, distributed as one HDF5 file (`coco_detections.hdf5`), and the COCO test split and
its reference captions come from Karpathy's `dataset_coco.json`. Reproducing the paper's numbers needs
both, read exactly the way the reference evaluation reads them. The HDF5 reader itself (padding to
`max_regions`, the errors naming a missing or malformed image, the optional h5py) is
:mod:`tfcaption.data.region_features`, the one shared with dataset preparation (``features:`` specs);
its names are re-exported here. This module adds the strict reading of one Karpathy split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tfcaption.data.annotations import AnnotationsError, read_karpathy
from tfcaption.data.region_features import (
    FEATURES_SUFFIX,
    H5PY_HINT,
    MAX_REGIONS,
    FeatureFileError,
    FeaturesNotFoundError,
    RegionFeatureFile,
    feature_batches,
    features_key,
    import_h5py,
)

__all__ = [
    # re-exported from tfcaption.data.region_features, where the reader lives
    "MAX_REGIONS", "FEATURES_SUFFIX", "H5PY_HINT", "FeaturesNotFoundError", "FeatureFileError", "import_h5py",
    "features_key", "RegionFeatureFile", "feature_batches",
    # the Karpathy split, read strictly
    "AnnotationsError", "KARPATHY_SPLITS", "KarpathySplit", "load_karpathy_split",
]

# Karpathy's split names; training uses train + restval (as M2 and most captioning papers do).
KARPATHY_SPLITS = ("train", "restval", "val", "test")

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
