"""TFRecord shards and the dataset manifest: the one on-disk format every data source is prepared into.

Every source (built-in shapes, COCO/Karpathy, TFDS, a folder of images) is converted once into the same
examples -- ``{"image_id": str, "image": bytes, "captions": list[str], "scene": str}`` -- and stored as
``<data_dir>/<split>-00000-of-00004.tfrecord`` shards plus ``<data_dir>/manifest.json``. Training,
evaluation and export then read only this format, so they never need to know where the data came from.

A dataset of precomputed region features (``features:`` specs) stores, in place of ``image``, a
``features`` field: an image's real regions, ``(n, D)`` float32 little-endian bytes with ``n <=
max_regions`` (unpadded: padding is the pipeline's job, so shards hold no zeros). The manifest says
which a dataset holds, in ``"inputs"``: ``{"kind": "images"}`` or ``{"kind": "features", "feature_dim":
D, "max_regions": R}`` (:func:`input_kind`; manifests written before region features have no
``"inputs"`` and hold images).

All file access goes through ``tf.io.gfile`` so that ``data_dir`` may be a local path or a ``gs://``
bucket (TPU training reads from GCS). Writes go to temporary names that are renamed only once complete,
so an interrupted preparation never leaves a shard set that looks finished.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from typing import Iterable, NamedTuple, Optional

import numpy as np

import tensorflow as tf

__all__ = [
    "MANIFEST_NAME",
    "WrittenShards",
    "shard_name",
    "is_shard_file",
    "serialize_example",
    "list_shards",
    "list_splits",
    "write_shards",
    "read_records",
    "parse_record",
    "write_manifest",
    "write_json_atomically",
    "load_manifest",
    "InputKind",
    "IMAGES",
    "input_kind",
    "dataset_input_kind",
]

MANIFEST_NAME = "manifest.json"

# `<split>-00000-of-00004.tfrecord`; the split name may itself contain dashes ("train-small").
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")

# Shards read at once (each open reader holds a buffer); also the limit of exact write-order reading.
_MAX_OPEN_SHARDS = 64

_COMMON_FEATURES = {
    "image_id": tf.io.FixedLenFeature([], tf.string),
    # RaggedFeature with no partitions parses to a dense 1-D tensor for a single example.
    "captions": tf.io.RaggedFeature(tf.string),
    "scene": tf.io.FixedLenFeature([], tf.string, default_value=""),
}
# The field holding an example's input, per kind; each kind's records must have it (no default).
_INPUT_FIELDS = {"images": "image", "features": "features"}
_PARSE_SPECS = {kind: {**_COMMON_FEATURES, name: tf.io.FixedLenFeature([], tf.string)}
                for kind, name in _INPUT_FIELDS.items()}


class InputKind(NamedTuple):
    """What a dataset's examples hold: ``"images"`` (encoded bytes) or ``"features"`` (region rows).

    Attributes:
        kind: ``"images"`` or ``"features"``.
        feature_dim: values per region (features only, else None).
        max_regions: regions per example after padding (features only, else None).
    """

    kind: str
    feature_dim: Optional[int] = None
    max_regions: Optional[int] = None

    def to_manifest(self) -> dict:
        """The manifest's ``"inputs"`` entry."""
        if self.kind == "images":
            return {"kind": "images"}
        return {"kind": self.kind, "feature_dim": int(self.feature_dim), "max_regions": int(self.max_regions)}


IMAGES = InputKind("images")


def input_kind(manifest: Optional[dict]) -> InputKind:
    """The inputs a manifest's dataset holds; a manifest without ``"inputs"`` (or none at all) means images.

    Raises:
        ValueError: an ``"inputs"`` entry of an unknown kind, or a features entry without its sizes.
    """
    inputs = (manifest or {}).get("inputs") or {"kind": "images"}
    kind = inputs.get("kind", "images") if isinstance(inputs, dict) else inputs
    if kind == "images":
        return IMAGES
    if kind != "features":
        raise ValueError(f"manifest inputs of unknown kind {kind!r} (known: {', '.join(_INPUT_FIELDS)})")
    try:
        dims = int(inputs["feature_dim"]), int(inputs["max_regions"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"manifest inputs {inputs!r}: a features dataset needs integer feature_dim and "
                         "max_regions") from None
    if min(dims) < 1:
        raise ValueError(f"manifest inputs {inputs!r}: feature_dim and max_regions must be >= 1")
    return InputKind("features", *dims)


def dataset_input_kind(data_dir: str) -> InputKind:
    """:func:`input_kind` of ``data_dir``'s manifest; images when the directory has no manifest (shards only)."""
    if not tf.io.gfile.exists(_join(str(data_dir), MANIFEST_NAME)):
        return IMAGES
    return input_kind(load_manifest(data_dir))


class WrittenShards(list):
    """The shard paths written by :func:`write_shards`, plus how many images and captions they hold.

    It *is* a ``list[str]`` of the final shard paths (so code written against ``write_shards(...) ->
    list[str]`` keeps working), with two extra attributes that a manifest needs:

    Attributes:
        images: number of examples (images) written.
        captions: total number of captions over those examples.
    """

    def __init__(self, paths: Iterable[str], images: int, captions: int):
        super().__init__(paths)
        self.images = int(images)
        self.captions = int(captions)

    @property
    def paths(self) -> list[str]:
        return list(self)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"WrittenShards(paths={list(self)!r}, images={self.images}, captions={self.captions})"


def shard_name(split: str, index: int, num_shards: int) -> str:
    """File name of shard ``index`` of ``num_shards`` for ``split``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def is_shard_file(name: str) -> bool:
    """Whether a file name is a shard, or a shard's temporary name while it is written."""
    return bool(_SHARD_RE.match(re.sub(r"\.tmp-[0-9a-z]+$", "", name)))


def _join(data_dir: str, name: str) -> str:
    # os.path.join is right for gs:// paths too ("gs://b/d" + "x" -> "gs://b/d/x").
    return os.path.join(str(data_dir), name)


def _scan_shards(data_dir: str) -> dict[str, dict[int, list[str]]]:
    """{split: {num_shards: [paths]}} for every shard file in ``data_dir`` (non-recursive)."""
    data_dir = str(data_dir)
    found: dict[str, dict[int, list[str]]] = {}
    if not tf.io.gfile.isdir(data_dir):
        return found
    for name in tf.io.gfile.listdir(data_dir):
        m = _SHARD_RE.match(name.rstrip("/"))
        if m:
            found.setdefault(m["split"], {}).setdefault(int(m["total"]), []).append(_join(data_dir, name))
    return found


def list_splits(data_dir: str) -> list[str]:
    """Names of the splits that have at least one shard in ``data_dir``, sorted."""
    return sorted(_scan_shards(data_dir))


def list_shards(data_dir: str, split: str) -> list[str]:
    """Sorted paths of the complete shard set of ``split``.

    Raises:
        FileNotFoundError: no shard of ``split`` in ``data_dir`` (the message lists the splits that exist),
            or the shard set is incomplete / mixes shard counts.
    """
    data_dir = str(data_dir)
    shards = _scan_shards(data_dir)
    if split not in shards:
        if not tf.io.gfile.isdir(data_dir):
            raise FileNotFoundError(f"dataset directory {data_dir!r} does not exist (looking for split {split!r})")
        existing = ", ".join(sorted(shards)) or "none"
        raise FileNotFoundError(
            f"no '{split}-*-of-*.tfrecord' shards in {data_dir!r}; splits that exist there: {existing}")
    by_total = shards[split]
    if len(by_total) != 1:
        raise FileNotFoundError(
            f"split {split!r} in {data_dir!r} mixes shard sets of sizes {sorted(by_total)}; "
            "delete the stale shards or prepare the split again")
    (total, paths), = by_total.items()
    if len(paths) != total:
        raise FileNotFoundError(
            f"split {split!r} in {data_dir!r} is incomplete: {len(paths)} of {total} shards present")
    return sorted(paths)


def _bytes_feature(values) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _to_bytes(value, field: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"example field {field!r} must be str or bytes, got {type(value).__name__}")


def serialize_example(example: dict) -> bytes:
    """One example dict (see :func:`write_shards`) as a serialised ``tf.train.Example``."""
    return _serialize(example)[0]


def _serialize(example: dict) -> tuple[bytes, int]:
    """Serialised ``tf.train.Example`` and its caption count; validates the example dict."""
    if "image_id" not in example or ("image" in example) == ("features" in example):
        raise KeyError(f"an example needs 'image_id' and one of 'image' or 'features' (has {sorted(example)})")
    captions = example.get("captions", [])
    if isinstance(captions, (str, bytes)):
        raise TypeError("example 'captions' must be a list of strings, not a single string")
    captions = [_to_bytes(c, "captions") for c in captions]
    feature = {
        "image_id": _bytes_feature([_to_bytes(example["image_id"], "image_id")]),
        "captions": _bytes_feature(captions),
        "scene": _bytes_feature([_to_bytes(example.get("scene") or "", "scene")]),
    }
    if "image" in example:
        image = example["image"]
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise TypeError(f"example 'image' must be encoded image bytes, got {type(image).__name__}")
        feature["image"] = _bytes_feature([bytes(image)])
    else:
        rows = np.asarray(example["features"])
        if rows.ndim != 2 or not np.issubdtype(rows.dtype, np.floating):
            raise TypeError(f"example 'features' must be a float array (regions, feature_dim), got "
                            f"{rows.dtype} {rows.shape}")
        # Little-endian float32 is what tf.io.decode_raw reads back by default, on any machine.
        feature["features"] = _bytes_feature([rows.astype("<f4").tobytes()])
    proto = tf.train.Example(features=tf.train.Features(feature=feature))
    return proto.SerializeToString(deterministic=True), len(captions)


def write_shards(examples: Iterable[dict], data_dir: str, split: str, num_shards: int = 4) -> WrittenShards:
    """Write ``examples`` round-robin into ``num_shards`` TFRecord shards of ``split``.

    Round-robin (example i goes to shard i % num_shards) keeps the shards the same size to within one
    example without knowing the total in advance, so ``examples`` can be a streaming generator.
    Shards are written under temporary names and renamed only when every example has been written;
    afterwards any older shard set of the same split with a different shard count is deleted, so a
    re-preparation never leaves duplicate data behind.

    Args:
        examples: dicts ``{"image_id": str, "image": bytes, "captions": list[str], "scene": str}``
            (``scene`` may be missing or ``""``); a features dataset's have ``"features"``, a float
            array ``(regions, feature_dim)``, in place of ``"image"``.
        data_dir: output directory (local or ``gs://``); created if needed.
        split: split name, e.g. ``"train"``.
        num_shards: number of shard files (>= 1).

    Returns:
        :class:`WrittenShards`: the list of final shard paths (sorted), with ``.images`` and
        ``.captions`` counts.

    Example:
        >>> import tempfile
        >>> png = tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)).numpy()
        >>> with tempfile.TemporaryDirectory() as d:
        ...     out = write_shards([{"image_id": "1", "image": png, "captions": ["a cat"]}], d, "train", 2)
        ...     [os.path.relpath(path, d) for path in out], out.images, out.captions
        (['train-00000-of-00002.tfrecord', 'train-00001-of-00002.tfrecord'], 1, 1)
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not split or "/" in split:
        raise ValueError(f"invalid split name {split!r}")
    data_dir = str(data_dir)
    tf.io.gfile.makedirs(data_dir)
    token = uuid.uuid4().hex[:8]
    finals = [_join(data_dir, shard_name(split, i, num_shards)) for i in range(num_shards)]
    temps = [f"{p}.tmp-{token}" for p in finals]
    writers = [tf.io.TFRecordWriter(t) for t in temps]
    images = captions = 0
    try:
        for i, example in enumerate(examples):
            payload, n_caps = _serialize(example)
            writers[i % num_shards].write(payload)
            images += 1
            captions += n_caps
    except BaseException:
        for w in writers:
            w.close()
        for t in temps:
            if tf.io.gfile.exists(t):
                tf.io.gfile.remove(t)
        raise
    for w in writers:
        w.close()
    for t, p in zip(temps, finals):
        tf.io.gfile.rename(t, p, overwrite=True)
    # Remove shard sets of the same split left by an earlier run with another shard count.
    for total, paths in _scan_shards(data_dir).get(split, {}).items():
        if total != num_shards:
            for p in paths:
                tf.io.gfile.remove(p)
    return WrittenShards(finals, images, captions)


def parse_record(serialized: tf.Tensor, kind: str = "images") -> dict:
    """Parse one serialised example into ``{"image_id", "image", "captions" (1-D), "scene"}`` tensors.

    With ``kind="features"`` the input is ``"features"`` (the stored float32 bytes, see
    :func:`tfcaption.data.pipeline.decode_features`) instead of ``"image"``.
    """
    if kind not in _PARSE_SPECS:
        raise ValueError(f"unknown input kind {kind!r} (known: {', '.join(_PARSE_SPECS)})")
    parsed = tf.io.parse_single_example(serialized, _PARSE_SPECS[kind])
    name = _INPUT_FIELDS[kind]
    return {
        "image_id": parsed["image_id"],
        name: parsed[name],
        "captions": tf.reshape(parsed["captions"], [-1]),
        "scene": parsed["scene"],
    }


def read_records(data_dir: str, split: str, shuffle_files: bool = False,
                 seed: Optional[int] = None, kind: Optional[str] = None) -> tf.data.Dataset:
    """Dataset of parsed examples of ``split``.

    Elements: ``{"image_id": tf.string[], "image": tf.string[] (encoded bytes), "captions": tf.string[None],
    "scene": tf.string[]}``, with ``"features"`` (float32 bytes) in place of ``"image"`` for a features
    dataset; ``kind`` (``"images"`` / ``"features"``) defaults to the manifest's (:func:`dataset_input_kind`).
    Without ``shuffle_files`` the order is deterministic: shard 0's records
    interleaved one by one with shard 1's, and so on (the inverse of the round-robin write, so with up
    to 64 shards the examples come back in the order they were written). With ``shuffle_files`` the shard order
    is shuffled with ``seed`` (re-shuffled each epoch).

    Raises:
        FileNotFoundError: one line naming ``data_dir`` and ``split`` and listing the splits that exist.
    """
    paths = list_shards(data_dir, split)
    kind = kind or dataset_input_kind(data_dir).kind
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_files and len(paths) > 1:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), _MAX_OPEN_SHARDS),
        block_length=1,
        num_parallel_calls=min(len(paths), 8),
        deterministic=True,
    )
    return ds.map(lambda record: parse_record(record, kind), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)


def write_manifest(data_dir: str, manifest: dict) -> str:
    """Write ``manifest`` as ``<data_dir>/manifest.json`` atomically (temporary file, then rename).

    Returns the manifest path.
    """
    data_dir = str(data_dir)
    tf.io.gfile.makedirs(data_dir)
    path = _join(data_dir, MANIFEST_NAME)
    write_json_atomically(path, manifest, indent=2)
    return path


def write_json_atomically(path: str, value, indent=None) -> None:
    """Write ``value`` as JSON to a temporary name beside ``path``, then rename: readers never see half."""
    text = json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def load_manifest(data_dir: str) -> dict:
    """Read ``<data_dir>/manifest.json``.

    Raises:
        FileNotFoundError: one clear line when the manifest is missing (the dataset was never prepared
            there, or the path is wrong).
    """
    path = _join(str(data_dir), MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"no {MANIFEST_NAME} in {str(data_dir)!r}: prepare the dataset there first "
            "(its shards and manifest are written by the data preparation step)")
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
