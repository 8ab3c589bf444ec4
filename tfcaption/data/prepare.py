"""Preparing a caption source once into sharded TFRecords plus a manifest, in parallel and resumably.

Each split's items (see :mod:`tfcaption.data.sources`) are cut, in source order, into shards of
``images_per_shard`` items: shard ``i`` of split ``s`` always holds items ``[i * k, (i + 1) * k)``, so a
shard is a unit of work that can be redone alone. Images are read and checked by a pool of threads
(reading is I/O, and TensorFlow's decoder and Pillow release the GIL), written to a temporary file,
renamed into place, and then recorded in ``OUT_DIR/_prepare/<shard>.json`` with the shard's counts. A
rerun after an interruption finds those records and starts at the first shard without one. The
manifest is written last, so a directory with ``manifest.json`` is always complete.

Nothing is dropped silently: every image or caption that is not written is counted by reason in the
manifest, listed one per line in ``OUT_DIR/skipped.jsonl``, and summarised on the console.

A source of region features (:class:`tfcaption.data.sources.FeaturesSource`) goes through the same
shards, resumption and manifest, with each image's rows read from its HDF5 file instead of an image
file: stored unpadded, as float32 bytes (see :mod:`tfcaption.data.records`), cut to ``max_regions``
(counted in ``converted`` as ``regions_cut_to_<R>``), in the main thread (h5py serialises all reads
behind one lock, so threads would only queue). Unlike a bad image, bad features -- another width than
the file's, NaN or inf -- stop the preparation with an error naming the image and the file: there is no
decoder to be lenient about, only a features file that needs fixing. The manifest's ``inputs`` says
which kind of dataset it is (:func:`tfcaption.data.records.input_kind`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import socket
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfcaption.data import records
from tfcaption.data.image_check import ImageSkipped, check_image, read_image_file
from tfcaption.data.pipeline import DEFAULT_MAX_PIXELS
from tfcaption.data.sources import source_fingerprint
from tfcaption.data.tokenizer import normalize_caption

__all__ = ["PrepareError", "prepare_dataset", "format_summary"]

FORMAT_VERSION = 1
STATE_DIR = "_prepare"
LOCK_NAME = "prepare-lock.json"
SKIPPED_LOG = "skipped.jsonl"
_REPORT_SECONDS = 10.0
# How often a word must occur to be in a vocabulary built with min_count 5 (M2's COCO setting).
_FREQUENT = 5


class PrepareError(FileExistsError):
    """The output directory holds another dataset or another unfinished preparation; one line for the console."""


def prepare_dataset(source, out_dir: str, images_per_shard: int = 1000, workers: Optional[int] = None,
                    max_image_side: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                    overwrite: bool = False, verbose: bool = True, log: Callable = print) -> dict:
    """Write ``source`` into ``out_dir`` as TFRecord shards + ``manifest.json``; returns the manifest.

    Args:
        source: an opened source (:func:`tfcaption.data.sources.open_source`).
        out_dir: output directory, local or a ``tf.io.gfile`` URL (``gs://bucket/coco``).
        images_per_shard: items per shard (the unit of parallel work and of resumption).
        workers: threads reading and checking images (default: twice the CPU count, at most 16).
        max_image_side: downscale larger images to this longer side and store them as JPEG.
        max_pixels: skip images with more pixels than this (read from the header, never decoded).
        overwrite: replace a different dataset (or unfinished preparation) found in ``out_dir``.
        verbose: print progress and the summary.

    Returns:
        The manifest dict: ``splits`` (images, captions, shards and skips per split), ``skipped``
        (images and captions by reason), ``converted``, ``image_kinds``, ``vocabulary``, ``inputs``
        (``{"kind": "images"}`` or ``{"kind": "features", "feature_dim": D, "max_regions": R}``).
        ``max_image_side``, ``max_pixels`` and ``workers`` do not apply to region features.

    Raises:
        PrepareError: ``out_dir`` holds another dataset or another unfinished preparation.
        ValueError: not one usable image in the whole source (the manifest is still written).
        FeatureFileError: (region features) an image's features of another width, or NaN / inf; a
            ValueError naming the image and the HDF5 file.
    """
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be >= 1, got {images_per_shard}")
    out_dir = str(out_dir)
    options = {"images_per_shard": int(images_per_shard), "max_image_side": max_image_side,
               "max_pixels": int(max_pixels)}
    plan = {"format": FORMAT_VERSION, "source": source.describe(), "source_fingerprint": source_fingerprint(source),
            "options": options}
    plan_id = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode()).hexdigest()[:16]
    say = log if verbose else (lambda *a, **k: None)

    finished = _existing_manifest(out_dir)
    if finished is not None:
        if finished.get("plan_id") == plan_id:
            say(f"{out_dir} is already prepared from this source ({_totals(finished)}).")
            _remove_tree(_join(out_dir, STATE_DIR))
            return finished
        if not overwrite:
            raise PrepareError(f"{out_dir} already holds a prepared dataset of another source or settings "
                               f"({finished.get('source', {}).get('scheme', '?')}); use another directory or --overwrite")
    lock = _acquire_lock(out_dir)
    try:
        return _prepare_locked(source, out_dir, plan, plan_id, finished, images_per_shard, workers,
                               max_image_side, max_pixels, overwrite, verbose, say)
    finally:
        _release_lock(lock)


def _prepare_locked(source, out_dir, plan, plan_id, finished, images_per_shard, workers, max_image_side,
                    max_pixels, overwrite, verbose, say):
    if finished is not None:  # another dataset, and overwrite was asked for
        _clear(out_dir)
    state_dir = _join(out_dir, STATE_DIR)
    state_plan = _read_json(_join(state_dir, "plan.json"))
    if state_plan is not None and state_plan.get("plan_id") != plan_id:
        if not overwrite:
            raise PrepareError(f"{out_dir} holds an unfinished preparation of another source or settings; "
                               "use another directory or --overwrite")
        _clear(out_dir)
        state_plan = None
    if state_plan is None and records.list_splits(out_dir):
        if not overwrite:
            raise PrepareError(f"{out_dir} already has record shards but no manifest; use another directory "
                               "or --overwrite")
        _clear(out_dir)
    tf.io.gfile.makedirs(state_dir)
    _remove_temporaries(out_dir, state_dir)  # left by a run that was killed mid-shard
    if state_plan is None:
        records.write_json_atomically(_join(state_dir, "plan.json"), {"plan_id": plan_id, **plan})

    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    started = time.perf_counter()
    shard_stats = {}
    inputs = records.input_kind({"inputs": source.inputs()})
    with contextlib.ExitStack() as stack:
        if inputs.kind == "features":
            workers = 1
            features = stack.enter_context(source.open_features())

            def process(batch):
                return [_read_features(item, features) for item in batch]
        else:
            pool = stack.enter_context(concurrent.futures.ThreadPoolExecutor(max_workers=workers))

            def process(batch):
                return list(pool.map(lambda item: _process_item(item, max_image_side, max_pixels), batch))
        for split in source.split_names():
            shard_stats[split] = _prepare_split(source, split, out_dir, state_dir, images_per_shard, process, say)
    manifest = _manifest(source, plan, plan_id, shard_stats, inputs)
    _write_skipped_log(out_dir, shard_stats)
    records.write_manifest(out_dir, manifest)
    _remove_tree(state_dir)
    if verbose:
        say(format_summary(manifest, out_dir, time.perf_counter() - started, workers))
    if not any(s["images"] for s in manifest["splits"].values()):
        raise ValueError(f"no usable image in {source.describe().get('files') or source.describe()}: "
                         f"every image was skipped ({_reasons(manifest['skipped']['images'])})")
    return manifest


# ------------------------------------------------------------------------------------------ splits


def _prepare_split(source, split, out_dir, state_dir, per_shard, process, say):
    """Write the split's missing shards; returns every shard's stats (read back for finished ones).

    ``process`` turns a shard's items into ``(item, outcome)`` pairs (see :func:`_write_shard`).
    """
    total = source.split_size(split)
    num_shards = max(1, math.ceil(total / per_shard))
    names = [records.shard_name(split, i, num_shards) for i in range(num_shards)]
    stats = [_read_json(_join(state_dir, f"{name}.json")) for name in names]
    stats = [s if s is not None and tf.io.gfile.exists(_join(out_dir, n)) else None for s, n in zip(stats, names)]
    todo = [i for i, s in enumerate(stats) if s is None]
    if not todo:
        return stats
    if len(todo) < num_shards:
        say(f"{split}: resuming at shard {todo[0] + 1} of {num_shards} ({num_shards - len(todo)} already written)")
    items = source.items(split, start=todo[0] * per_shard)
    started, done_items, last_report = time.perf_counter(), 0, 0.0
    for index in range(todo[0], num_shards):
        batch = [item for _, item in zip(range(per_shard), items)]
        if stats[index] is not None:  # finished in an earlier run, after an unfinished one
            continue
        results = process(batch)
        stats[index] = _write_shard(_join(out_dir, names[index]), split, results)
        records.write_json_atomically(_join(state_dir, f"{names[index]}.json"), stats[index])
        done_items += len(batch)
        now = time.perf_counter()
        if now - last_report >= _REPORT_SECONDS or index == num_shards - 1:
            last_report = now
            say(f"{split}: shard {index + 1}/{num_shards} written, {index * per_shard + len(batch)}/{total} images "
                f"({done_items / max(now - started, 1e-9):.0f} images/s)", flush=True)
    return stats


def _process_item(item, max_image_side, max_pixels):
    """``(item, CheckedImage)`` or ``(item, ImageSkipped)``; never raises for a bad image."""
    if item.skip is not None:
        return item, ImageSkipped(*item.skip)
    try:
        data = item.data if item.data is not None else read_image_file(item.path)
        return item, check_image(data, max_pixels=max_pixels, max_side=max_image_side)
    except ImageSkipped as skipped:
        return item, skipped
    except Exception as error:  # noqa: BLE001 - a decoder failing in a way not foreseen: still one file
        return item, ImageSkipped("undecodable_image", f"{type(error).__name__}: {error}")


@dataclasses.dataclass
class _Regions:
    """One image's region features ready to store, as ``CheckedImage`` holds an image's bytes."""

    rows: np.ndarray
    kind: str = "region_features"
    conversion: Optional[str] = None


def _read_features(item, features):
    """``(item, _Regions)`` or, for an item its annotations already skip, ``(item, ImageSkipped)``.

    Raises the reader's errors (a missing image, another width, NaN or inf), which name the image and file.
    """
    if item.skip is not None:
        return item, ImageSkipped(*item.skip)
    rows = features.read_rows(item.image_id)
    cut = features.num_regions(item.image_id) > features.max_regions
    return item, _Regions(rows, conversion=f"regions_cut_to_{features.max_regions}" if cut else None)


def _write_shard(path, split, results) -> dict:
    """Write one shard (temporary name, then rename) and return its counts and log entries.

    ``results`` are ``(item, outcome)`` pairs: an outcome is an :class:`ImageSkipped`, a
    :class:`~tfcaption.data.image_check.CheckedImage` (image bytes) or a :class:`_Regions` (region features).
    """
    stats = {"images": 0, "captions": 0, "skipped_images": collections.Counter(),
             "skipped_captions": collections.Counter(), "converted": collections.Counter(),
             "image_kinds": collections.Counter(), "words": collections.Counter(),
             "caption_lengths": collections.Counter(), "log": []}
    temp = f"{path}.tmp-{os.getpid()}"
    with tf.io.TFRecordWriter(temp) as writer:
        for item, outcome in results:
            for reason, detail in item.dropped_captions:
                stats["skipped_captions"][reason] += 1
                stats["log"].append(_entry(split, item, "caption", reason, detail))
            if isinstance(outcome, ImageSkipped):
                stats["skipped_images"][outcome.reason] += 1
                stats["skipped_captions"]["image_skipped"] += len(item.captions)
                stats["log"].append(_entry(split, item, "image", outcome.reason, outcome.detail))
                continue
            stored = {"features": outcome.rows} if isinstance(outcome, _Regions) else {"image": outcome.data}
            writer.write(records.serialize_example({"image_id": item.image_id, "captions": item.captions, **stored}))
            stats["images"] += 1
            stats["captions"] += len(item.captions)
            stats["image_kinds"][outcome.kind] += 1
            if outcome.conversion:
                stats["converted"][outcome.conversion] += 1
            for caption in item.captions:
                words = normalize_caption(caption).split()
                stats["words"].update(words)
                stats["caption_lengths"][len(words)] += 1
    tf.io.gfile.rename(temp, path, overwrite=True)
    return stats


def _entry(split, item, kind, reason, detail):
    return {"split": split, "image_id": item.image_id, "file": item.path, "kind": kind, "reason": reason,
            "detail": detail}


# ---------------------------------------------------------------------------------------- manifest


def _manifest(source, plan, plan_id, shard_stats, inputs) -> dict:
    splits, skipped_images, skipped_captions = {}, collections.Counter(), collections.Counter()
    converted, kinds = collections.Counter(), collections.Counter()
    for split, stats in shard_stats.items():
        orphan_images, orphan_captions = source.orphans(split)
        images, captions = collections.Counter(orphan_images), collections.Counter(orphan_captions)
        for s in stats:
            images.update(s["skipped_images"])
            captions.update(s["skipped_captions"])
            converted.update(s["converted"])
            kinds.update(s["image_kinds"])
        splits[split] = {"images": sum(s["images"] for s in stats), "captions": sum(s["captions"] for s in stats),
                         "shards": len(stats), "skipped_images": dict(sorted(images.items())),
                         "skipped_captions": dict(sorted(captions.items()))}
        skipped_images.update(images)
        skipped_captions.update(captions)
    return {
        "name": source.scheme,
        "format": FORMAT_VERSION,
        "plan_id": plan_id,
        # Every written image was decoded by the training decoder here (every features row checked finite),
        # so trainers need not check again.
        "images_checked": True,
        "inputs": inputs.to_manifest(),
        "source": plan["source"],
        "options": plan["options"],
        "splits": splits,
        "skipped": {"images": dict(sorted(skipped_images.items())), "captions": dict(sorted(skipped_captions.items()))},
        "converted": dict(sorted(converted.items())),
        "image_kinds": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
        "vocabulary": _vocabulary_stats(shard_stats.get("train", [])),
    }


def _vocabulary_stats(stats) -> dict:
    """Word and caption-length statistics of the training captions (normalised as the tokenizer does)."""
    words, lengths = collections.Counter(), collections.Counter()
    for s in stats:
        words.update(s["words"])
        lengths.update({int(k): v for k, v in s["caption_lengths"].items()})
    if not lengths:
        return {"split": "train", "captions": 0}
    values = np.repeat(np.array(list(lengths), dtype=np.int64), list(lengths.values()))
    return {
        "split": "train",
        "captions": int(values.size),
        "words": int(sum(words.values())),
        "unique_words": len(words),
        f"words_seen_{_FREQUENT}_times": sum(1 for n in words.values() if n >= _FREQUENT),
        "caption_words": {"mean": round(float(values.mean()), 2), "median": float(np.median(values)),
                          "p95": float(np.percentile(values, 95)), "max": int(values.max())},
        "most_common": sorted(words, key=lambda w: (-words[w], w))[:20],
    }


def _write_skipped_log(out_dir, shard_stats):
    lines = [json.dumps(entry, ensure_ascii=False) for stats in shard_stats.values() for s in stats for entry in s["log"]]
    with tf.io.gfile.GFile(_join(out_dir, SKIPPED_LOG), "w") as f:
        f.write("".join(line + "\n" for line in lines))


def format_summary(manifest: dict, out_dir: str, seconds: Optional[float] = None, workers: Optional[int] = None) -> str:
    """The console summary of a preparation: per-split counts, skips by reason, conversions, vocabulary."""
    timing = f" in {seconds:.1f} s with {workers} thread{'s' if workers != 1 else ''}" if seconds is not None else ""
    lines = [f"Prepared {manifest['name']} into {out_dir}{timing}",
             f"{'split':<10}{'images':>9}{'captions':>10}{'shards':>8}{'skipped images':>16}{'skipped captions':>18}"]
    for split, s in manifest["splits"].items():
        lines.append(f"{split:<10}{s['images']:>9}{s['captions']:>10}{s['shards']:>8}"
                     f"{sum(s['skipped_images'].values()):>16}{sum(s['skipped_captions'].values()):>18}")
    lines.append(f"Skipped images:   {_reasons(manifest['skipped']['images'])}")
    lines.append(f"Skipped captions: {_reasons(manifest['skipped']['captions'])}")
    lines.append(f"Converted:        {_reasons(manifest['converted'])}")
    lines.append(f"Image kinds:      {_reasons(manifest['image_kinds'])}")
    inputs = records.input_kind(manifest)
    if inputs.kind == "features":
        lines.append(f"Inputs:           region features, {inputs.feature_dim} values per region, "
                     f"padded to {inputs.max_regions} regions")
    vocab = manifest["vocabulary"]
    if vocab.get("captions"):
        length = vocab["caption_words"]
        lines.append(f"Vocabulary:       {vocab['unique_words']} words in {vocab['captions']} training captions "
                     f"({vocab[f'words_seen_{_FREQUENT}_times']} seen {_FREQUENT}+ times); caption length mean "
                     f"{length['mean']}, 95th percentile {length['p95']:g}, max {length['max']} words")
    if any(manifest["skipped"][k] for k in ("images", "captions")):
        lines.append(f"Every skipped item, with its reason: {_join(out_dir, SKIPPED_LOG)}")
    return "\n".join(lines)


def _reasons(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _totals(manifest):
    return ", ".join(f"{k}: {v['images']} images" for k, v in manifest.get("splits", {}).items())


# ------------------------------------------------------------------------------------------- files


def _join(directory, name):
    return os.path.join(str(directory), name)


def _existing_manifest(out_dir):
    try:
        return records.load_manifest(out_dir)
    except (FileNotFoundError, ValueError):
        return None


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.loads(f.read())
    except (ValueError, tf.errors.OpError):
        return None  # a record cut off by the interruption: that shard is redone


def _remove_tree(path):
    if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)


def _acquire_lock(out_dir):
    """Claim ``out_dir`` for this process: two preparations writing one directory would corrupt it."""
    tf.io.gfile.makedirs(out_dir)
    path = _join(out_dir, LOCK_NAME)
    holder = _read_json(path)
    if holder is not None:
        same_host = holder.get("host") == socket.gethostname()
        if not same_host:
            raise PrepareError(f"{out_dir} is being prepared by process {holder.get('pid')} on {holder.get('host')}; "
                               f"if no preparation is running there, delete {path}")
        if holder.get("pid") != os.getpid() and _process_alive(holder.get("pid")):
            raise PrepareError(f"{out_dir} is being prepared by another process (pid {holder.get('pid')}); "
                               "wait for it to finish or stop it")
    records.write_json_atomically(path, {"host": socket.gethostname(), "pid": os.getpid()})
    return path


def _release_lock(path):
    holder = _read_json(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        tf.io.gfile.remove(path)


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def _remove_temporaries(out_dir, state_dir):
    for directory in (out_dir, state_dir):
        for name in tf.io.gfile.listdir(directory):
            if ".tmp-" in name and not tf.io.gfile.isdir(_join(directory, name)):
                tf.io.gfile.remove(_join(directory, name))


def _clear(out_dir):
    """Remove what a preparation writes (shards, manifest, log, state), nothing else."""
    for name in tf.io.gfile.listdir(out_dir):
        name = name.rstrip("/")
        if records.is_shard_file(name) or name in (records.MANIFEST_NAME, SKIPPED_LOG):
            tf.io.gfile.remove(_join(out_dir, name))
    _remove_tree(_join(out_dir, STATE_DIR))
