"""TensorFlow Datasets as a caption source (``tfds:coco_captions``): its examples as prepare-able items.

``coco_captions`` (COCO 2014 images with Karpathy's train / restval / val / test splits) is the one this
is built and tested for; any TFDS dataset with an ``image`` feature and captions under ``captions/text``,
``captions`` or ``caption`` reads the same way. Images are read with ``SkipDecoding``, so the encoded
JPEG bytes TFDS stored go into the prepared shards untouched (no decode and re-encode).
"""

from __future__ import annotations

from typing import Iterator, Optional

from tfcaption.data.annotations import Item, add_caption, finish_item
from tfcaption.data.records import IMAGES

# coco_captions' splits, for when the dataset's info cannot list them (not yet prepared, or mocked).
_KNOWN_SPLITS = {"coco_captions": ("train", "restval", "val", "test")}


class TfdsSource:
    """A TFDS dataset as caption items.

    Args:
        name: TFDS name, optionally with config and version (``coco_captions/2014:1.1.0``).
        data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).
        download: download and prepare the dataset first if needed (COCO 2014 is about 20 GB).
        fold_restval: read ``restval`` as part of ``train`` (standard practice).
        splits: split names to prepare; default: all splits of the dataset.
    """

    scheme = "tfds"

    def __init__(self, name: str, data_dir: Optional[str] = None, download: bool = True,
                 fold_restval: bool = True, splits: Optional[list] = None):
        import tensorflow_datasets as tfds

        self.name = name
        self.data_dir = data_dir
        self.download = download
        self.fold_restval = fold_restval
        self._tfds = tfds
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as error:
            raise ValueError(f"TFDS has no dataset {name!r} ({str(error).splitlines()[0]})") from None
        self._prepared = False
        available = list(splits or self.builder.info.splits.keys() or _KNOWN_SPLITS.get(self.builder.name, ()))
        if not available:
            raise ValueError(f"cannot list the splits of tfds:{name}; name them, e.g. tfds:{name}?splits=train,test")
        self._parts = {}
        for split in available:
            target = "train" if fold_restval and split == "restval" else split
            self._parts.setdefault(target, []).append(split)
        self._sizes = {}

    def describe(self) -> dict:
        return {"scheme": self.scheme, "name": self.name, "data_dir": self.data_dir,
                "fold_restval": self.fold_restval, "splits": self._parts}

    def fingerprint_parts(self) -> dict:
        return {**self.describe(), "version": str(self.builder.info.version)}

    def split_names(self) -> list:
        return list(self._parts)

    def orphans(self, split: str):
        return {}, {}

    def inputs(self) -> dict:
        """The manifest's ``"inputs"`` entry: TFDS examples are encoded images."""
        return IMAGES.to_manifest()

    def _dataset(self, split: str):
        if self.download and not self._prepared:
            self.builder.download_and_prepare()
            self._prepared = True
        try:
            return self.builder.as_dataset(
                split="+".join(self._parts[split]), shuffle_files=False,
                decoders={"image": self._tfds.decode.SkipDecoding()})
        except AssertionError as error:  # TFDS's way of saying the dataset was never built there
            raise FileNotFoundError(f"tfds:{self.name} is not built in {self.builder.data_dir} (drop download=0 "
                                    f"to let TFDS download and build it): {str(error).splitlines()[0]}") from None

    def split_size(self, split: str) -> int:
        if split not in self._sizes:
            known = [self.builder.info.splits[p].num_examples if p in self.builder.info.splits else 0
                     for p in self._parts[split]]
            if all(known):
                self._sizes[split] = sum(known)
            else:
                dataset = self._dataset(split)
                count = int(dataset.cardinality())
                self._sizes[split] = count if count >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))
        return self._sizes[split]

    def items(self, split: str, start: int = 0) -> Iterator[Item]:
        for index, example in enumerate(self._tfds.as_numpy(self._dataset(split).skip(start)), start):
            yield _example_item(example, f"{split}-{index}")


def _example_item(example: dict, fallback_id: str) -> Item:
    image_id = example.get("image/id", example.get("image/filename", fallback_id))
    image_id = image_id.decode("utf-8", "replace") if isinstance(image_id, bytes) else str(image_id)
    captions = example.get("captions", example.get("caption", []))
    if isinstance(captions, dict):
        captions = captions.get("text", [])
    if isinstance(captions, (bytes, str)):
        captions = [captions]
    item = Item(image_id=image_id, captions=[], data=bytes(example["image"]))
    seen: set = set()
    for caption in captions:
        add_caption(item.captions, seen, item.dropped_captions, caption)
    return finish_item(item)
