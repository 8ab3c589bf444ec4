"""Every preset, end to end at test size: tfcaption-train --preset NAME trains a few steps, beam-decodes
(the run's evaluation), exports, and the export captions in a TensorFlow-only process exactly as the run
directory does; attention maps come out over the image encoder's token grid (per region for region
models). Pixel presets train on the tiny shapes dataset (`small`: the session's tiny run, tests/conftest.py,
which is that preset at test size), region presets on an HDF5 region-features file in the M2 release's
layout with Karpathy captions (`features:` datasets)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfcaption
from tests.helpers.karpathy import karpathy_file, karpathy_image
from tests.helpers.optional import h5py, needs_h5py
from tests.helpers.tiny import TINY_SHAPES, model_sets, tiny_overrides
from tfcaption.cli import evaluate as evaluate_cli
from tfcaption.config import RunConfig
from tfcaption.inference import ImageError
from tfcaption.cli import train as train_cli
from tfcaption.models import PRESETS, CaptionerConfig

KINDS = {name: CaptionerConfig.from_preset(name).image_encoder.type for name in PRESETS}
PIXEL_PRESETS = sorted(n for n, kind in KINDS.items() if kind == "patches")
REGION_PRESETS = sorted(n for n, kind in KINDS.items() if kind == "regions")
FEATURE_DIM = 12
COLOURS = ["red", "green", "blue", "yellow"]
SHAPES = ["circle", "square", "star"]

@pytest.fixture(scope="module")
def region_features(tmp_path_factory):
    """An HDF5 file of 36 images (3-5 regions of 12 values; the colour and shape are in the features) and a
    Karpathy file captioning them: 24 train, 6 val, 6 test."""
    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(0)
    images, arrays = [], {}
    for i in range(36):
        colour, shape = COLOURS[i % 4], SHAPES[i % 3]
        rows = rng.normal(0, 0.1, (3 + i % 3, FEATURE_DIM)).astype(np.float32) + 0.5
        rows[0, i % 4] += 3.0
        rows[1, 4 + i % 3] += 3.0
        arrays[str(500 + i)] = rows
        split = "train" if i < 24 else ("val" if i < 30 else "test")
        images.append(karpathy_image(500 + i, split, f"a {colour} {shape}", f"one {colour} {shape} here"))
    h5 = root / "detections.hdf5"
    with h5py.File(h5, "w") as f:
        for image_id, rows in arrays.items():
            f[f"{image_id}_features"] = rows
            f[f"{image_id}_boxes"] = np.zeros((len(rows), 4), np.float32)
    captions = karpathy_file(root / "dataset_coco.json", images)
    return {"spec": f"features:{h5}?captions={captions}", "arrays": arrays, "root": root}


def _train(name, root, data_root, data_sets):
    run_dir, export_root = str(root / f"run_{name}"), str(root / "savedmodel")
    sets = model_sets(tiny_overrides(name)) + data_sets + [
        f"data.root={data_root}", f"export.root={export_root}", f"export.model_name={name}",
        "train.batch_size=8", "train.steps_per_epoch=4", "train.warmup_steps=4", "train.val_images=4",
        "decode.batch_size=8", "decode.beam_size=2", "export.beam_size=2", "data.max_caption_words=8",
        "decode.eval_splits=[\"test\"]", "decode.java=false",
    ]
    # --no-xla: each preset compiles five functions here; XLA compilation would triple the time (the XLA
    # path is exercised by tests/cli/test_end_to_end.py).
    # --task xe: one XE epoch (the m2* presets' default XE + SCST phases are tests/training/test_phases.py's).
    args = ["--preset", name, "--output-dir", run_dir, "--epochs", "1", "--no-xla", "--task", "xe"]
    for s in sets:
        args += ["--set", s]
    assert train_cli.main(args) == 0
    return run_dir, os.path.join(export_root, name, "1")


def _served_in_tensorflow_only(tensorflow_only, export, inputs, input_name):
    """Captions from the export's serving_default in the session's TensorFlow-only process (one TensorFlow
    import for every preset, tests/helpers/exports.py), which imported neither tfcaption nor tensorflow-text."""
    captions, foreign_modules = tensorflow_only.caption(export, inputs, input_name)
    assert foreign_modules == []
    return captions


def _check_report(run_dir, split):
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    assert report[split]["images"] > 0 and 0.0 <= report[split]["model"]["bleu_4"] <= 1.0
    return report


@pytest.mark.parametrize("name", PIXEL_PRESETS)
def test_pixel_preset_trains_exports_and_serves_with_attention_over_its_grid(name, tiny_shapes, data_root, tmp_path,
                                                                             tensorflow_only, request):
    if name == "small":  # the session's tiny run is this preset's: tfcaption-train --preset small at test size
        tiny_run = request.getfixturevalue("tiny_run")
        run_dir, export = tiny_run["run"], tiny_run["export"]
        trained = RunConfig.load(os.path.join(run_dir, "config.json"))
        assert trained.model.replace(vocab_size=0) == CaptionerConfig.from_preset(name, **tiny_overrides(name))
    else:
        run_dir, export = _train(name, tmp_path, data_root, [f"data.options={json.dumps(TINY_SHAPES)}"])
    _check_report(run_dir, "test")
    from tfcaption.data.records import read_records

    images = [r["image"] for r in read_records(tiny_shapes, "test").take(3).as_numpy_iterator()]
    served = _served_in_tensorflow_only(tensorflow_only, export, images, "image_bytes")
    from_run = tfcaption.load(run_dir, beam_size=2)  # the run's decode.beam_size: also its default predictor
    assert served == [r["caption"] for r in from_run.caption(images)]

    config = CaptionerConfig.from_preset(name, **tiny_overrides(name))
    side = config.image_encoder.image_size // config.image_encoder.patch_size
    meshed = config.decoder.type == "meshed"
    for predictor in (from_run, tfcaption.load(export)):
        for result in predictor.caption_with_attention(images):
            n = len(result["words"])
            assert result["attention"].shape == (n, side, side)
            np.testing.assert_allclose(result["attention"].sum(axis=(1, 2)), 1.0, atol=1e-4)
            assert (result["gates"] is not None) == meshed
            if meshed:
                assert result["gates"].shape == (n, config.encoder.num_levels)
            assert result["image"].shape == (config.image_encoder.image_size,) * 2 + (3,)
    with open(os.path.join(export, "assets", "config.json")) as f:
        serving = json.load(f)["serving"]
    assert serving["token_grid"] == {"rows": side, "cols": side, "prefix": 0} and serving["input"] == "image_bytes"


@needs_h5py
@pytest.mark.parametrize("name", REGION_PRESETS)
def test_region_preset_trains_evaluates_and_exports_from_an_hdf5_features_file(name, region_features, data_root,
                                                                               tmp_path, tensorflow_only):
    run_dir, export = _train(name, tmp_path, data_root, [f"data.spec={region_features['spec']}",
                                                         "data.augment_flip=false"])
    _check_report(run_dir, "test")
    output = str(tmp_path / "evaluation.json")
    assert evaluate_cli.main(["--model", run_dir, "--splits", "test", "--no-java", "--output", output]) == 0
    with open(output) as f:
        assert json.load(f)["report"]["test"]["images"] == 6

    arrays = [region_features["arrays"][str(530 + i)] for i in range(3)]  # 3, 4 and 5 regions
    batch = np.zeros((3, 5, FEATURE_DIM), np.float32)
    for i, rows in enumerate(arrays):
        batch[i, :len(rows)] = rows
    served = _served_in_tensorflow_only(tensorflow_only, export, batch, "features")
    from_run = tfcaption.load(run_dir, beam_size=2)  # the run's decode.beam_size: also its default predictor
    assert served == [r["caption"] for r in from_run.caption(arrays)]
    masked = CaptionerConfig.from_preset(name).image_encoder.padding_mask == "corrected"
    predictors = {run_dir: from_run, export: tfcaption.load(export)}
    for path, predictor in predictors.items():
        result = predictor.caption_with_attention(arrays)[0]  # 3 regions, padded to 5 in the batch
        assert result["attention"].shape == (len(result["words"]), 5)  # per-region weights
        np.testing.assert_allclose(result["attention"].sum(-1), 1.0, atol=1e-4)
        if masked:  # the released behaviour attends to padding rows too
            np.testing.assert_allclose(result["attention"][:, 3:], 0.0, atol=1e-6)
        assert result["image"] is None and result["gates"].shape[1] == 2
    with pytest.raises(ImageError, match="reads precomputed region features, not images"):
        predictors[export].caption(str(region_features["root"] / "photo.png"))
    # A bad request fails with the row named; the next good one succeeds (the export's own signature,
    # as tf.saved_model.load gives it).
    signature = predictors[export].backend.loaded.signatures["serving_default"]
    bad = batch.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"features\[1\]: NaN or infinite values"):
        signature(features=tf.constant(bad))
    assert len(signature(features=tf.constant(batch[:1]))["caption"].numpy()) == 1


def test_a_region_preset_on_an_image_dataset_is_one_line_exit_2(tiny_shapes, data_root, tmp_path, capsys):
    args = ["--preset", "m2_regions", "--output-dir", str(tmp_path / "r"), "--epochs", "1",
            "--set", f"data.root={data_root}", "--set", f"data.options={json.dumps(TINY_SHAPES)}"]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds images" in err and "pixel preset" in err


def test_each_preset_and_dataset_gets_its_own_default_run_directory_and_savedmodel(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def resolved(*argv):
        config = train_cli.resolve_config(train_cli.build_parser().parse_args(list(argv)))
        return config.train.output_dir, config.export_name

    assert resolved() == (os.path.join("runs", "shapes-small"), "shapes_m2_small")  # the default run, as before
    assert resolved("--preset", "cptr_small") == (os.path.join("runs", "shapes-cptr_small"), "shapes_cptr_small")
    assert resolved("--preset", "m2", "--data", "coco:/data/coco") == (os.path.join("runs", "coco-m2"), "coco-m2")
    assert resolved("--preset", "m2", "--data", "/data/prepared/coco-karpathy/")[0] == os.path.join(
        "runs", "coco-karpathy-m2")
    assert resolved("--preset", "spatial_small", "--output-dir", "mine", "--set", "export.model_name=x") == ("mine", "x")


@pytest.mark.parametrize("name", ["clip_m2", "clip_transformer"])
def test_clip_preset_loads_a_local_checkpoint_trains_exports_and_serves(name, tiny_shapes, data_root, tmp_path,
                                                                         tensorflow_only):
    from tests.helpers import hf_fixture

    # the fixture CLIPModel (32 px, patch 8, 32 wide, 3 layers) in place of openai/clip-vit-base-patch16
    tower = {"weights": str(hf_fixture.model_dir("clip_full")), "image_size": 0, "patch_size": 0, "width": 0,
             "num_heads": 0, "num_layers": 0, "mlp_dim": 0}
    run_dir, export = _train(name, tmp_path, data_root, [f"data.options={json.dumps(TINY_SHAPES)}"] +
                             model_sets({"image_encoder": tower}))
    _check_report(run_dir, "test")
    part = RunConfig.load(os.path.join(run_dir, "config.json")).model.image_encoder
    assert (part.type, part.image_size, part.patch_size, part.width, part.num_layers, part.train_backbone) == (
        "clip", 32, 8, 32, 3, "frozen")
    from tfcaption.data.records import read_records

    images = [r["image"] for r in read_records(tiny_shapes, "test").take(3).as_numpy_iterator()]
    served = _served_in_tensorflow_only(tensorflow_only, export, images, "image_bytes")
    assert served == [r["caption"] for r in tfcaption.load(run_dir, beam_size=2).caption(images)]
    with open(os.path.join(export, "assets", "config.json")) as f:
        assert json.load(f)["serving"]["token_grid"] == {"rows": 4, "cols": 4, "prefix": 1}


def test_a_clip_preset_without_its_checkpoint_is_one_line_exit_2(tiny_shapes, data_root, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # not in the cache and no network: say which files to fetch
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    args = ["--preset", "clip_m2", "--output-dir", str(tmp_path / "c"), "--epochs", "1",
            "--set", f"data.root={data_root}", "--set", f"data.options={json.dumps(TINY_SHAPES)}"]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hf://openai/clip-vit-base-patch16" in err and "hf download openai/clip-vit-base-patch16" in err
