"""`features:` datasets: HDF5 region features + captions, prepared into records and read by the pipeline.

The HDF5 files are written here with h5py in the M2 release's layout (`<id>_features` of shape (n, D),
beside `<id>_boxes`, which must be ignored); captions come from a Karpathy split file or from COCO
captions files. Expected values are the arrays written here, padded with numpy.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.karpathy import karpathy_file, karpathy_image
from tests.helpers.optional import h5py, needs_h5py
from tfcaption.data import prepare as prepare_module
from tfcaption.data.catalog import resolve_dataset
from tfcaption.data.pipeline import count_undecodable, eval_dataset, train_dataset
from tfcaption.data.records import IMAGES, InputKind, input_kind, load_manifest, read_records
from tfcaption.data.region_features import FeatureFileError, FeaturesNotFoundError
from tfcaption.data.tokenizer import Vocabulary

pytestmark = needs_h5py

DIM = 16
NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]
IDS = [str(1000 + i) for i in range(len(NAMES))]
# Karpathy splits: 6 train + 2 restval (trained on), 2 val, 2 test.
SPLITS = ["train"] * 6 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 2


def _captions(index):
    # Each image's words are its own, so a caption names its image; "left" checks that flips stay off.
    return [f"a {NAMES[index]} on the left", f"one {NAMES[index]} here"]


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    # 3..6 regions; + 0.5 keeps real rows away from all-zero (padding).
    return {image_id: (rng.standard_normal((3 + i % 4, DIM)) + 0.5).astype(np.float32)
            for i, image_id in enumerate(IDS)}


def _write_h5(path, arrays):
    with h5py.File(path, "w") as f:
        for image_id, array in arrays.items():
            f[f"{image_id}_features"] = array
            f[f"{image_id}_boxes"] = np.zeros((len(array), 4), np.float32)  # in the release; not read
        f["5555_features"] = np.ones((2, DIM), np.float32)  # an image no captions file names
    return path


def _karpathy(path, ids=IDS):
    return karpathy_file(path, [karpathy_image(int(image_id), SPLITS[i], *_captions(i))
                                for i, image_id in enumerate(ids)])


def _padded(array, max_regions):
    out = np.zeros((max_regions, DIM), np.float32)
    n = min(len(array), max_regions)
    out[:n] = array[:n]
    return out


def _owner(caption):
    """The index of the image a caption belongs to (its one image-specific word)."""
    return next(i for i, name in enumerate(NAMES) if name in caption.split())


@pytest.fixture(scope="module")
def karpathy_dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    arrays = _arrays()
    h5 = _write_h5(tmp / "coco_detections.hdf5", arrays)
    captions = _karpathy(tmp / "dataset_coco.json")
    data_dir = resolve_dataset(f"features:{h5}", str(tmp / "cache"), options={"captions": str(captions)},
                               verbose=False)
    vocab = Vocabulary.build([c for i in range(len(NAMES)) for c in _captions(i)])
    return {"tmp": tmp, "h5": h5, "captions": captions, "arrays": arrays, "data_dir": data_dir, "vocab": vocab}


def test_manifest_records_the_features_input_kind_and_karpathy_splits(karpathy_dataset):
    manifest = load_manifest(karpathy_dataset["data_dir"])
    assert karpathy_dataset["data_dir"].split("/")[-1].startswith("features-")
    assert manifest["inputs"] == {"kind": "features", "feature_dim": DIM, "max_regions": 50}
    assert input_kind(manifest) == InputKind("features", DIM, 50)
    assert {s: (v["images"], v["captions"]) for s, v in manifest["splits"].items()} == {
        "train": (8, 16), "val": (2, 4), "test": (2, 4)}  # restval folded into train
    assert manifest["skipped"]["images"] == {} and manifest["image_kinds"] == {"region_features": 12}
    assert manifest["images_checked"] is True
    assert count_undecodable(karpathy_dataset["data_dir"], "train") == (0, [])
    # The stored rows are the real ones only (padding is the pipeline's).
    stored = {r["image_id"].decode(): r["features"] for r in read_records(karpathy_dataset["data_dir"], "val")
              .as_numpy_iterator()}
    for image_id, data in stored.items():
        np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(-1, DIM), karpathy_dataset["arrays"][image_id])


def test_manifests_without_inputs_mean_images_and_bad_inputs_are_errors():
    assert input_kind({"splits": {}}) == IMAGES == input_kind(None)
    assert input_kind({"inputs": {"kind": "images"}}).kind == "images"
    with pytest.raises(ValueError, match="unknown kind 'voxels'"):
        input_kind({"inputs": {"kind": "voxels"}})
    with pytest.raises(ValueError, match="feature_dim and max_regions"):
        input_kind({"inputs": {"kind": "features", "feature_dim": 16}})


@pytest.mark.parametrize("decode_once", [True, False])
def test_train_batches_carry_the_hdf5_rows_zero_padded_with_their_captions(karpathy_dataset, decode_once):
    vocab, arrays = karpathy_dataset["vocab"], karpathy_dataset["arrays"]
    ds = train_dataset(karpathy_dataset["data_dir"], "train", vocab, batch_size=4, max_length=10, image_size=224,
                       seed=3, augment_flip=True, decode_once=decode_once)
    seen = []
    for batch in ds:
        assert set(batch) == {"features", "tokens"}
        assert batch["features"].dtype == tf.float32 and batch["features"].shape == (4, 50, DIM)
        assert batch["tokens"].shape == (4, 12)
        for features, tokens in zip(batch["features"].numpy(), batch["tokens"].numpy()):
            caption = vocab.decode(tokens)
            index = _owner(caption)
            np.testing.assert_array_equal(features, _padded(arrays[IDS[index]], 50))
            seen.append(caption)
    # 16 pairs in 4 full batches: every caption once, and "left" never swapped (no flips for features).
    train = [c for i, split in enumerate(SPLITS) if split in ("train", "restval") for c in _captions(i)]
    assert sorted(seen) == sorted(c.lower() for c in train)


def test_eval_batches_carry_image_ids_references_and_features(karpathy_dataset):
    batches = list(eval_dataset(karpathy_dataset["data_dir"], "test", batch_size=5, image_size=224))
    assert len(batches) == 1
    batch = batches[0]
    assert "images" not in batch and batch["features"].shape == (2, 50, DIM)
    ids = [i.decode() for i in batch["image_id"].numpy()]
    assert ids == IDS[10:]
    for row, image_id in enumerate(ids):
        np.testing.assert_array_equal(batch["features"][row].numpy(), _padded(karpathy_dataset["arrays"][image_id], 50))
        assert [c.decode() for c in batch["captions"][row].numpy() if c] == _captions(IDS.index(image_id))


def test_resolving_again_reuses_the_prepared_directory(karpathy_dataset, monkeypatch):
    monkeypatch.setattr(prepare_module, "_read_features", lambda *a: pytest.fail("prepared twice"))
    spec = f"features:{karpathy_dataset['h5']}?captions={karpathy_dataset['captions']}"  # the same, in the spec
    assert resolve_dataset(spec, str(karpathy_dataset["tmp"] / "cache"), verbose=False) == karpathy_dataset["data_dir"]


def test_captions_default_to_dataset_coco_json_beside_the_hdf5_file(karpathy_dataset):
    assert resolve_dataset(f"features:{karpathy_dataset['h5']}", str(karpathy_dataset["tmp"] / "cache"),
                           verbose=False) == karpathy_dataset["data_dir"]


def test_options_are_checked(karpathy_dataset, tmp_path):
    h5, captions = karpathy_dataset["h5"], str(karpathy_dataset["captions"])
    with pytest.raises(ValueError, match="dataset_options images do not apply to features"):
        resolve_dataset(f"features:{h5}", str(tmp_path), options={"captions": captions, "images": "x"})
    with pytest.raises(ValueError, match="option captions is given twice"):
        resolve_dataset(f"features:{h5}?captions={captions}", str(tmp_path), options={"captions": "other.json"})
    with pytest.raises(ValueError, match="max_regions='0'"):
        resolve_dataset(f"features:{h5}?captions={captions}&max_regions=0", str(tmp_path))


# ------------------------------------------------------------------------------------------ bad data


def _prepare_bad(tmp_path, arrays, ids=IDS):
    h5 = _write_h5(tmp_path / "bad.hdf5", arrays)
    captions = _karpathy(tmp_path / "dataset_coco.json", ids)
    return h5, lambda: resolve_dataset(f"features:{h5}", str(tmp_path / "cache"),
                                       options={"captions": str(captions)}, verbose=False)


def test_a_captioned_image_missing_from_the_hdf5_file_is_an_error_naming_it(tmp_path):
    h5, prepare = _prepare_bad(tmp_path, _arrays(), IDS[:11] + ["777"])
    with pytest.raises(FeaturesNotFoundError) as info:
        prepare()
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)  # one line in the CLIs
    assert "777" in str(info.value) and str(h5) in str(info.value) and info.value.image_ids == ["777"]


def test_features_of_another_width_are_an_error_naming_the_image(tmp_path):
    arrays = _arrays()
    arrays["1005"] = np.ones((4, DIM // 2), np.float32)
    h5, prepare = _prepare_bad(tmp_path, arrays)
    with pytest.raises(FeatureFileError) as info:
        prepare()
    assert isinstance(info.value, ValueError)
    assert "image 1005" in str(info.value) and str(h5) in str(info.value) and f"{DIM // 2} features" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_an_error_naming_the_image(tmp_path, bad):
    arrays = _arrays()
    arrays["1009"][1, 3] = bad
    h5, prepare = _prepare_bad(tmp_path, arrays)
    with pytest.raises(FeatureFileError, match="image 1009 .* NaN or inf in region row 1") as info:
        prepare()
    assert str(h5) in str(info.value)


# ------------------------------------------------------------------------------------- COCO captions


def _coco_captions(path, indices):
    images = [{"id": int(IDS[i]), "file_name": f"COCO_{path.stem}_{IDS[i]}.jpg"} for i in indices]
    annotations = [{"id": 10 * i + k, "image_id": int(IDS[i]), "caption": c}
                   for i in indices for k, c in enumerate(_captions(i))]
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions_files_give_splits_from_their_names_and_max_regions_cuts(tmp_path):
    arrays = _arrays(seed=1)
    h5 = _write_h5(tmp_path / "detections.h5", arrays)
    train = _coco_captions(tmp_path / "captions_train2014.json", range(9))
    val = _coco_captions(tmp_path / "captions_val2014.json", range(9, 12))
    data_dir = resolve_dataset(f"features:{h5}?max_regions=4", str(tmp_path / "cache"),
                               options={"captions": f"{train},{val}"}, verbose=False)
    manifest = load_manifest(data_dir)
    assert manifest["inputs"] == {"kind": "features", "feature_dim": DIM, "max_regions": 4}
    assert {s: v["images"] for s, v in manifest["splits"].items()} == {"train": 9, "val": 3}
    cut = sum(len(arrays[IDS[i]]) > 4 for i in range(12))  # 5 and 6 regions
    assert manifest["converted"] == {"regions_cut_to_4": cut}
    batch = next(iter(eval_dataset(data_dir, "val", batch_size=8, image_size=224)))
    assert [i.decode() for i in batch["image_id"].numpy()] == IDS[9:]
    for row, image_id in enumerate(IDS[9:]):
        np.testing.assert_array_equal(batch["features"][row].numpy(), _padded(arrays[image_id], 4))
        assert [c.decode() for c in batch["captions"][row].numpy() if c] == _captions(9 + row)
    vocab = Vocabulary.build([c for i in range(12) for c in _captions(i)])
    train_batch = next(iter(train_dataset(data_dir, "train", vocab, 6, 10, 224, seed=0)))
    assert train_batch["features"].shape == (6, 4, DIM)
    for features, tokens in zip(train_batch["features"].numpy(), train_batch["tokens"].numpy()):
        np.testing.assert_array_equal(features, _padded(arrays[IDS[_owner(vocab.decode(tokens))]], 4))
