"""Region features from HDF5 (the M2 release's layout), the Karpathy split, and captioning from them.

HDF5 files are written here with h5py; the captioning tests use the M2 reference fixture converted
to a run directory (the `converted` fixture, tests/conftest.py), whose expected beams were computed by the authors' code.
"""

import json
import sys

import numpy as np
import pytest

from tests.helpers.karpathy import karpathy_file, karpathy_image
from tests.helpers.m2_fixture import FIXTURE, requires_fixture
from tests.helpers.optional import h5py, needs_h5py
from tfcaption.interop.m2.features import (
    MAX_REGIONS,
    AnnotationsError,
    FeatureFileError,
    FeaturesNotFoundError,
    RegionFeatureFile,
    feature_batches,
    load_karpathy_split,
)

needs_fixture = requires_fixture("config.json", "m2_tiny.pth", "vocab.pkl", "inputs.npz", "expected.npz")

DIM = 32
ROWS = {"7": 3, "12": 50, "3": 1, "99": 55}  # 55 > 50: the reference keeps the first 50


@pytest.fixture()
def h5_file(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {i: (rng.standard_normal((n, DIM)) + 0.5).astype(np.float32) for i, n in ROWS.items()}
    path = tmp_path / "detections.hdf5"
    with h5py.File(path, "w") as f:
        for image_id, array in arrays.items():
            f[f"{image_id}_features"] = array if image_id != "3" else array.astype(np.float64)
            f[f"{image_id}_boxes"] = np.zeros((len(array), 4), np.float32)  # present in the release, unused
    return path, arrays


@needs_h5py
def test_ids_are_numeric_order_and_features_zero_padded_or_cut_to_max_regions(h5_file):
    path, arrays = h5_file
    with RegionFeatureFile(path) as features:
        assert features.image_ids() == ["3", "7", "12", "99"]  # numeric order, *_boxes ignored
        assert features.feature_dim == DIM and "7" in features and 7 in features and "8" not in features
        for image_id, array in arrays.items():
            padded = features.read(image_id)
            n = min(len(array), MAX_REGIONS)
            assert padded.shape == (MAX_REGIONS, DIM) and padded.dtype == np.float32
            np.testing.assert_array_equal(padded[:n], array[:n].astype(np.float32))
            assert not padded[n:].any()
            assert np.all(np.any(padded[:n] != 0, axis=-1))  # real rows are never mistaken for padding
    with RegionFeatureFile(path, max_regions=5) as features:
        np.testing.assert_array_equal(features.read("12"), arrays["12"][:5])


@needs_h5py
def test_missing_image_is_a_named_key_error(h5_file):
    path, _ = h5_file
    with RegionFeatureFile(path) as features:
        with pytest.raises(FeaturesNotFoundError) as info:
            features.read_batch(["7", "404", "12"])
        assert isinstance(info.value, KeyError)
        message = str(info.value)
        assert "404" in message and str(path) in message and "'" not in message[:3]
        assert info.value.image_ids == ["404"]
        with pytest.raises(KeyError, match="no region features for image 405"):
            features.read(405)
    # The batch iterator checks every id before yielding anything.
    batches = feature_batches(path, ["7", "3", "12", "99", "500", "501"], batch_size=2)
    with pytest.raises(FeaturesNotFoundError, match="2 images 500, 501"):
        next(batches)


@needs_h5py
def test_feature_batches_follow_the_requested_ids_in_order(h5_file):
    path, arrays = h5_file
    ids = ["99", "3", 7, "12", "3"]
    batches = list(feature_batches(path, ids, batch_size=2))
    assert [b[0] for b in batches] == [["99", "3"], ["7", "12"], ["3"]]
    stacked = np.concatenate([b[1] for b in batches])
    assert stacked.shape == (5, MAX_REGIONS, DIM)
    with RegionFeatureFile(path) as features:
        for row, image_id in enumerate(ids):
            np.testing.assert_array_equal(stacked[row], features.read(image_id))


@needs_h5py
def test_missing_unreadable_or_misshapen_files_and_missing_h5py_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="region features file not found"):
        RegionFeatureFile(tmp_path / "none.h5")
    not_h5 = tmp_path / "text.h5"
    not_h5.write_text("not hdf5")
    with pytest.raises(FeatureFileError, match="not a readable HDF5 file"):
        RegionFeatureFile(not_h5)
    odd = tmp_path / "odd.h5"
    with h5py.File(odd, "w") as f:
        f["1_features"] = np.ones((2, 3, 4), np.float32)
    with RegionFeatureFile(odd) as features:
        with pytest.raises(FeatureFileError, match="expected \\(regions, feature_dim\\)"):
            features.read("1")
    # Without h5py: one line saying what to install, not a traceback from deep inside.
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError) as info:
        RegionFeatureFile(odd)
    assert "pip install 'tfcaption[h5]'" in str(info.value) and "\n" not in str(info.value)


def test_karpathy_split_selects_images_by_split_and_names_bad_files(tmp_path):
    path = karpathy_file(tmp_path / "dataset_coco.json", [
        karpathy_image(391895, "test", "A man riding a bike.", "A biker on a road."),
        karpathy_image(522418, "val", "A woman cutting a cake."),
        karpathy_image(184613, "restval", "A boy with an umbrella."),
        karpathy_image(318219, "train", "A computer on a desk."),
        karpathy_image(None, "test", "A cat on a sofa.", imgid=17),  # no cocoid: imgid is the id
    ])
    test = load_karpathy_split(path, "test")
    assert test.image_ids == ["391895", "17"]
    assert test.references["391895"] == ["A man riding a bike.", "A biker on a road."]
    assert test.filenames["391895"] == "COCO_val2014_000000391895.jpg"
    assert load_karpathy_split(path, "train").image_ids == ["184613", "318219"]  # train + restval
    assert load_karpathy_split(path, "restval").image_ids == ["184613"]
    with pytest.raises(AnnotationsError, match="unknown split 'dev'"):
        load_karpathy_split(path, "dev")
    with pytest.raises(FileNotFoundError):
        load_karpathy_split(tmp_path / "none.json")
    empty = karpathy_file(tmp_path / "only_train.json", [karpathy_image(1, "train", "x")])
    with pytest.raises(AnnotationsError, match="no images in split 'test' \\(splits present: train\\)"):
        load_karpathy_split(empty, "test")
    twice = karpathy_file(tmp_path / "twice.json", [karpathy_image(1, "test", "x"), karpathy_image(1, "test", "y")])
    with pytest.raises(AnnotationsError, match="image id 1 appears twice"):
        load_karpathy_split(twice, "test")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(AnnotationsError, match="not a JSON file"):
        load_karpathy_split(tmp_path / "bad.json")


# ------------------------------------------------------------------------------- captioning from features


def _words(tokens):
    from tfcaption.interop.m2.vocab import load_m2_vocab

    itos = load_m2_vocab(FIXTURE / "vocab.pkl")
    words = []
    for t in tokens:
        if t == 3:
            break
        words.append(itos[t])
    return " ".join(words)


@needs_fixture
@needs_h5py
def test_caption_features_reproduces_the_reference_beams(converted):
    from tfcaption.interop.m2.captioning import caption_features

    expected = converted["expected"]
    # The fixture's reference ran on 10 regions per image (zero-padded): pad to 10 to compare.
    results = caption_features(converted["run"], converted["h5"], beam_size=3, all_beams=True, max_steps=12,
                               reference_mode=True, max_regions=10, batch_size=2)
    assert [r["image_id"] for r in results] == ["100", "101", "102"]  # all ids of the file, in order
    assert json.loads(json.dumps(results)) == results  # plain JSON types only
    for row, result in enumerate(results):
        assert len(result["beams"]) == 3
        for k, beam in enumerate(result["beams"]):
            full = expected["beam_tokens_f32"][row, k].tolist()
            kept = full[: full.index(3) + 1] if 3 in full else full
            assert beam["tokens"] == kept
            assert beam["caption"] == _words(full)
            assert abs(beam["score"] - expected["beam_scores_f32"][row, k]) < 1e-4
        assert result["caption"] == result["beams"][0]["caption"] and result["score"] == result["beams"][0]["score"]


@needs_fixture
@needs_h5py
def test_caption_features_defaults_give_sorted_beams_and_unknown_ids_or_dims_are_errors(converted):
    from tfcaption.interop.m2.captioning import caption_features, format_captions

    # Run defaults (beam 5, 20 steps) and the release's 50-row padding; numpy values on request.
    results = caption_features(converted["run"], converted["h5"], image_ids=[102, "100"], all_beams=True,
                               json_output=False)
    assert [r["image_id"] for r in results] == ["102", "100"]
    for result in results:
        beams = result["beams"]
        assert len(beams) == 5
        scores = [float(b["score"]) for b in beams]
        assert scores == sorted(scores, reverse=True)
        for beam in beams:
            assert beam["tokens"].dtype == np.int32 and len(beam["tokens"]) <= 20
            np.testing.assert_allclose(beam["log_probs"].sum(), beam["score"], atol=1e-4)
    assert format_captions(results).splitlines()[0] == f"102: {results[0]['caption']}"
    # One image alone (a batch of one) gives the same beams as within a batch.
    single = caption_features(converted["run"], converted["h5"], image_ids=["101"], beam_size=3, all_beams=True,
                              max_steps=12, reference_mode=True, max_regions=10)
    expected = converted["expected"]["beam_tokens_f32"][1]
    assert [b["tokens"] for b in single[0]["beams"]] == [row[: row.index(3) + 1] if 3 in row else row
                                                         for row in expected.tolist()]
    with pytest.raises(FeaturesNotFoundError, match="no region features for image 404"):
        caption_features(converted["run"], converted["h5"], image_ids=["100", "404"])
    wrong_dim = converted["tmp"] / "wrong_dim.h5"
    with h5py.File(wrong_dim, "w") as f:
        f["100_features"] = np.ones((4, 16), np.float32)
    with pytest.raises(ValueError, match="16 values per region, but this model reads 32"):
        caption_features(converted["run"], str(wrong_dim))


@needs_fixture
@needs_h5py
def test_evaluate_features_reports_raw_and_collapsed(converted):
    from tfcaption.interop.m2.captioning import evaluate_features, metrics_rows

    expected = converted["expected"]
    best = [_words(expected["beam_tokens_f32"][row, 0].tolist()) for row in range(3)]
    assert "w01 w01" in best[0]  # the reference's best caption repeats words, so collapsing matters
    # Two test images whose references are exactly the reference's best captions, one train image.
    annotations = karpathy_file(converted["tmp"] / "dataset_coco.json", [
        karpathy_image(100, "test", best[0]), karpathy_image(101, "test", best[1]), karpathy_image(102, "train", best[2]),
    ])
    report = evaluate_features(converted["run"], converted["h5"], annotations, split="test", beam_size=3,
                               max_steps=12, max_regions=10, use_java=False)
    assert report["images"] == 2 and report["beam_size"] == 3 and report["max_steps"] == 12
    assert [p["caption"] for p in report["predictions"]] == best[:2]
    raw, collapsed = report["raw"], report["collapse_repeats"]
    assert raw["tokenizer"] == collapsed["tokenizer"] == "python" and raw["meteor"] is None
    assert raw["bleu_1"] == pytest.approx(1.0) and raw["bleu_4"] == pytest.approx(1.0)
    assert raw["rouge_l"] == pytest.approx(1.0)
    assert collapsed["bleu_1"] < 0.9 and collapsed["rouge_l"] < raw["rouge_l"]  # shorter than its references
    assert set(metrics_rows(report)) == {"test/collapse_repeats", "test/raw"}
    only_raw = evaluate_features(converted["run"], converted["h5"], annotations, beam_size=3, max_steps=12,
                                 max_regions=10, use_java=False, collapse_repeats=False)
    assert "collapse_repeats" not in only_raw and only_raw["raw"] == raw
