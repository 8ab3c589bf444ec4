"""tfcaption.data.prepare: each source layout into shards + manifest, counted by reason, resumable."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import layouts
from tfcaption.data import prepare as prepare_module
from tfcaption.data.pipeline import eval_dataset
from tfcaption.data.prepare import PrepareError, prepare_dataset
from tfcaption.data.records import list_shards, load_manifest, read_records
from tfcaption.data.catalog import resolve_dataset
from tfcaption.data.sources import DatasetNotFoundError, open_source


def _quiet(source, out_dir, **options):
    return prepare_dataset(open_source(source), str(out_dir), verbose=False, **options)


def _check_counts(manifest, expected):
    for split, counts in expected["splits"].items():
        assert {k: manifest["splits"][split][k] for k in counts} == counts, split
    assert manifest["skipped"]["images"] == dict(sorted(expected["skipped_images"].items()))
    assert manifest["skipped"]["captions"] == dict(sorted(expected["skipped_captions"].items()))


def _read_back(out_dir, split):
    return {r["image_id"].decode(): [c.decode() for c in r["captions"]]
            for r in read_records(str(out_dir), split).as_numpy_iterator()}


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    expected = layouts.make_coco(str(root / "coco"))
    manifest = _quiet(f"coco:{root / 'coco'}", root / "out", images_per_shard=3)
    return {"root": root, "out": root / "out", "manifest": manifest, "expected": expected}


def test_coco_layout_counts_every_skip_by_reason(coco):
    manifest = coco["manifest"]
    _check_counts(manifest, coco["expected"])
    assert manifest["converted"] == {"webp_to_jpeg": 1}
    assert manifest["image_kinds"] == {kind: 1 for kind in layouts.GOOD_KINDS.values()} | {"JPEG/RGB": 2}  # + val
    assert manifest["splits"]["train"]["shards"] == 5  # 13 train entries, 3 per shard
    assert manifest["images_checked"] is True
    assert manifest["vocabulary"]["captions"] == 14 and manifest["vocabulary"]["unique_words"] > 10


def test_coco_records_read_back_with_their_captions(coco):
    train = _read_back(coco["out"], "train")
    assert sorted(train, key=int) == ["1", "2", "3", "4", "5", "6", "7"]
    assert all(train[i] == layouts.captions_for(int(i)) for i in train)
    assert _read_back(coco["out"], "val") == {"200": layouts.captions_for(200)}
    batch = next(iter(eval_dataset(str(coco["out"]), "train", 16, 40)))
    assert batch["images"].shape == (7, 40, 40, 3)  # every written image decodes
    assert float(tf.reduce_min(batch["images"])) >= 0.0 and float(tf.reduce_max(batch["images"])) <= 255.0


def test_skipped_log_lists_every_image_and_caption(coco):
    with open(coco["out"] / "skipped.jsonl") as f:
        entries = [json.loads(line) for line in f]
    images = [e for e in entries if e["kind"] == "image"]
    assert len(images) == sum(coco["expected"]["skipped_images"].values())
    missing = next(e for e in images if e["reason"] == "missing_file")
    assert missing["file"].endswith("COCO_train2014_missing.jpg") and missing["split"] == "train"
    captions = [e for e in entries if e["kind"] == "caption"]
    assert sorted(e["reason"] for e in captions) == sorted(
        ["empty_caption"] * 3 + ["duplicate_caption", "invalid_utf8", "duplicate_caption_id"])
    assert not os.path.exists(coco["out"] / "_prepare")  # the resume state goes once the manifest is written


def test_summary_names_the_reasons(coco):
    text = prepare_module.format_summary(coco["manifest"], str(coco["out"]))
    assert "truncated_image 1" in text and "invalid_utf8 1" in text and "webp_to_jpeg 1" in text
    assert "skipped.jsonl" in text


def test_rerun_on_a_prepared_directory_does_no_work(coco, monkeypatch):
    monkeypatch.setattr(prepare_module, "_process_item", lambda *a: pytest.fail("re-processed an image"))
    assert _quiet(f"coco:{coco['root'] / 'coco'}", coco["out"], images_per_shard=3) == coco["manifest"]


def test_another_dataset_is_not_overwritten_without_asking(coco, tmp_path):
    path, _ = layouts.make_karpathy(str(tmp_path))
    with pytest.raises(PrepareError, match="already holds a prepared dataset"):
        _quiet(f"karpathy:{path}", coco["out"])
    with pytest.raises(PrepareError, match="already holds a prepared dataset"):  # other settings, same source
        _quiet(f"coco:{coco['root'] / 'coco'}", coco["out"], images_per_shard=4)


@pytest.mark.parametrize("layout", ["karpathy", "folder-csv", "folder-jsonl"])
def test_karpathy_and_folder_layouts_give_the_expected_counts_and_captions(tmp_path, layout):
    if layout == "karpathy":
        path, expected = layouts.make_karpathy(str(tmp_path / "src"))
        spec = f"karpathy:{path}"
    else:
        _, expected = layouts.make_folder(str(tmp_path / "src"), layout.split("-")[1])
        spec = f"folder:{tmp_path / 'src'}"
    manifest = _quiet(spec, tmp_path / "out", images_per_shard=2)
    _check_counts(manifest, expected)
    for split, counts in expected["splits"].items():
        assert sum(len(c) for c in _read_back(tmp_path / "out", split).values()) == counts["captions"]


def test_interrupted_preparation_resumes_at_the_first_unwritten_shard(tmp_path, monkeypatch):
    root = str(tmp_path / "coco")
    layouts.make_coco(root)
    reference = _quiet(f"coco:{root}", tmp_path / "reference", images_per_shard=3)

    real_write = prepare_module._write_shard
    written = []

    def write_then_stop(path, split, results):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(os.path.basename(path))
        return real_write(path, split, results)

    monkeypatch.setattr(prepare_module, "_write_shard", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _quiet(f"coco:{root}", tmp_path / "out", images_per_shard=3)
    assert not os.path.exists(tmp_path / "out" / "manifest.json")
    monkeypatch.setattr(prepare_module, "_write_shard", real_write)

    processed = []
    real_process = prepare_module._process_item
    monkeypatch.setattr(prepare_module, "_process_item", lambda item, *a: processed.append(item.image_id)
                        or real_process(item, *a))
    messages = []
    manifest = prepare_dataset(open_source(f"coco:{root}"), str(tmp_path / "out"), images_per_shard=3,
                               log=lambda *a, **k: messages.append(" ".join(map(str, a))))
    assert any("resuming at shard 3 of 5 (2 already written)" in m for m in messages)
    # Train shards 1-2 (ids 1-6) were not read again: train resumes at id 7, then val (200 and a repeated 2).
    # Sorted: items are processed by a thread pool, so the order of the calls is not fixed.
    assert sorted(processed) == sorted(["7", "8", "9", "10", "50", "1", "51", "200", "2"])
    assert manifest == reference
    for split in ("train", "val"):
        assert _read_back(tmp_path / "out", split) == _read_back(tmp_path / "reference", split)


def test_prepares_to_and_reads_from_a_gfile_url(tmp_path):
    """ram:// stands in for gs:// here: both go through tf.io.gfile only."""
    _, expected = layouts.make_folder(str(tmp_path / "src"), "csv")
    out = "ram://tfcaption-test/folder"
    manifest = _quiet(f"folder:{tmp_path / 'src'}", out, images_per_shard=2)
    _check_counts(manifest, expected)
    assert load_manifest(out) == manifest
    assert len(list_shards(out, "train")) == manifest["splits"]["train"]["shards"]
    assert resolve_dataset(f"records:{out}", str(tmp_path)) == out
    assert len(_read_back(out, "train")) == 5


def test_resolve_dataset_prepares_a_source_once(tmp_path, monkeypatch):
    path, expected = layouts.make_karpathy(str(tmp_path / "src"))
    first = resolve_dataset(f"karpathy:{path}", str(tmp_path / "cache"), verbose=False)
    assert os.path.basename(first).startswith("karpathy-")
    _check_counts(load_manifest(first), expected)
    monkeypatch.setattr(prepare_module, "_process_item", lambda *a: pytest.fail("prepared twice"))
    assert resolve_dataset(f"karpathy:{path}", str(tmp_path / "cache"), verbose=False) == first


def test_a_source_with_no_usable_image_is_an_error_naming_why(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"not an image")
    (tmp_path / "img" / "captions.csv").write_text("image,caption,split\na.jpg,a caption,train\n")
    with pytest.raises(ValueError, match="every image was skipped.*not_an_image 1"):
        _quiet(f"folder:{tmp_path / 'img'}", tmp_path / "out")


@pytest.mark.parametrize("spec, message", [
    ("coco:{tmp}/nothere", "COCO captions file not found"),
    ("karpathy:{tmp}/nothere.json", "Karpathy split file not found"),
    ("folder:{tmp}", "no captions file in"),
    ("folder:{tmp}?captions=x.csv&bogus=1", "unknown option"),
])
def test_bad_specs_say_what_is_wrong(tmp_path, spec, message):
    with pytest.raises((DatasetNotFoundError, ValueError), match=message):
        open_source(spec.format(tmp=tmp_path))


def test_eval_dataset_over_prepared_odd_modes_matches_direct_decoding(coco):
    """The kept originals (CMYK, 16-bit, palette...) decode in the pipeline exactly as they do alone."""
    from tfcaption.data.pipeline import decode_image

    direct = {}
    for record in read_records(str(coco["out"]), "train").take(7).as_numpy_iterator():
        image = decode_image(record["image"], 24).numpy()
        assert image.shape == (24, 24, 3) and np.isfinite(image).all()
        direct[record["image_id"].decode()] = image
    assert len(direct) == 7  # every kept original, one of each mode
    piped = {}
    for batch in eval_dataset(str(coco["out"]), "train", 3, 24).as_numpy_iterator():  # 3 per batch: 3 + 3 + 1
        for image_id, image in zip(batch["image_id"], batch["images"]):
            piped[image_id.decode()] = image
    assert sorted(piped, key=int) == sorted(direct, key=int)
    for image_id, image in direct.items():
        np.testing.assert_allclose(piped[image_id], image, rtol=0, atol=1e-6, err_msg=f"image {image_id}")


def test_a_directory_another_live_preparation_holds_is_refused(tmp_path):
    import socket
    import subprocess
    import sys

    layouts.make_folder(str(tmp_path / "src"), "csv")
    out = tmp_path / "out"
    out.mkdir()
    lock = out / prepare_module.LOCK_NAME
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))  # alive: pytest's parent
    with pytest.raises(PrepareError, match=f"another process \\(pid {os.getppid()}\\)"):
        _quiet(f"folder:{tmp_path / 'src'}", out)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(finished.stdout)}))  # a dead process
    (out / "train-00000-of-00001.tfrecord.tmp-99999").write_bytes(b"half a shard")  # what a killed run leaves
    (out / "_prepare").mkdir()
    (out / "_prepare" / "plan.json.tmp-99999").write_text("{")
    _quiet(f"folder:{tmp_path / 'src'}", out)  # the stale lock is taken over, the leftovers removed
    assert sorted(n for n in os.listdir(out) if ".tmp-" in n) == []
    assert not lock.exists()  # released


def test_an_unforeseen_decoder_failure_skips_that_image_only(tmp_path, monkeypatch):
    _, expected = layouts.make_folder(str(tmp_path / "src"), "csv")
    real_check = prepare_module.check_image

    def check(data, **options):
        if data == layouts.GOOD["gray.jpg"](1):
            raise MemoryError("decoder ran out of memory")
        return real_check(data, **options)

    monkeypatch.setattr(prepare_module, "check_image", check)
    manifest = _quiet(f"folder:{tmp_path / 'src'}", tmp_path / "out")
    assert manifest["skipped"]["images"]["undecodable_image"] == 1
    assert manifest["splits"]["train"]["images"] == expected["splits"]["train"]["images"] - 1
