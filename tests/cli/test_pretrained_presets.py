"""The pretrained-backbone presets from the command line, as a user runs them: `tfcaption-train --preset
vit_m2 | cptr | spatial_attention` with weights written locally in the real formats (Google's ViT `.npz`,
a keras.applications `.weights.h5`), frozen / last-n / fine-tuned, on the tiny shapes dataset; the exports
caption image bytes in a TensorFlow-only process with attention over the backbone's grid; offline, the
default weights are one line and exit code 2. Nothing downloads."""

import json
import os
import sys
import urllib.request

import keras
import numpy as np
import pytest

import tfcaption
from tests.helpers.tiny import TINY_SHAPES, model_sets, tiny_overrides
from tests.helpers.vit_checkpoint import write_checkpoint
from tfcaption.cli import train as train_cli
from tfcaption.training.run_directory import load_run

# name -> (preset, image_encoder fields over the preset's tiny sizes; "WEIGHTS" is replaced by the file)
RUNS = {
    # Sizes left to the checkpoint (only the image size given), the backbone frozen.
    "vit_m2": ("vit_m2", {"image_size": 32, "weights": "WEIGHTS", "train_backbone": "frozen"}, False),
    "cptr": ("cptr", {"weights": "WEIGHTS", "backbone_lr_multiplier": 0.5}, True),
    "spatial_attention": ("spatial_attention", {"weights": "WEIGHTS", "train_backbone": "last_n",
                                                "trainable_blocks": 1}, True),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A ViT checkpoint whose sizes only the file gives (patch 8, width 24), one as wide as the tiny
    model (cptr: no projection), and a random VGG16 in Keras's weights format."""
    root = tmp_path_factory.mktemp("weights")
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    vgg.save_weights(root / "vgg16.weights.h5")
    return {
        "vit_m2": write_checkpoint(root / "vit_24.npz", patch=8, hidden=24, heads=2, layers=2, mlp=48, grid=4),
        "cptr": write_checkpoint(root / "vit_32.npz", patch=8, hidden=32, heads=2, layers=2, mlp=48, grid=4, seed=1),
        "spatial_attention": str(root / "vgg16.weights.h5"),
    }


@pytest.fixture(scope="module")
def trained(weights, tiny_shapes, data_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained_runs")
    runs = {}
    for name, (preset, image_encoder, tiny) in RUNS.items():
        overrides = tiny_overrides(preset) if tiny else {k: v for k, v in tiny_overrides(preset).items()
                                                          if k != "image_encoder"}
        part = {**overrides.get("image_encoder", {}), **image_encoder, "weights": weights[name]}
        sets = model_sets({**overrides, "image_encoder": part}) + [
            f"data.options={json.dumps(TINY_SHAPES)}", f"data.root={data_root}", f"export.root={root / 'savedmodel'}",
            "train.batch_size=8", "train.steps_per_epoch=3", "train.warmup_steps=2", "train.val_images=4",
            "decode.batch_size=8", "decode.beam_size=2", "export.beam_size=2", "data.max_caption_words=8",
            'decode.eval_splits=["test"]', "decode.java=false",
        ]
        args = ["--preset", preset, "--output-dir", str(root / name), "--epochs", "1", "--no-xla", "--task", "xe"]
        for s in sets:
            args += ["--set", s]
        log = root / f"{name}.log"
        with open(log, "w") as out:
            stdout, sys.stdout = sys.stdout, out
            try:
                assert train_cli.main(args) == 0
            finally:
                sys.stdout = stdout
        runs[name] = {"run": str(root / name), "export": str(root / "savedmodel" / f"shapes_{preset}" / "1"),
                      "log": log.read_text()}
    return runs


def test_vit_sizes_come_from_the_checkpoint_and_the_run_says_what_it_loaded(trained, weights):
    with open(os.path.join(trained["vit_m2"]["run"], "config.json")) as f:
        part = json.load(f)["model"]["image_encoder"]
    assert {k: part[k] for k in ("patch_size", "width", "num_heads", "num_layers", "mlp_dim")} == {
        "patch_size": 8, "width": 24, "num_heads": 2, "num_layers": 2, "mlp_dim": 48}
    assert f"Image encoder: ViT weights (custom sizes) from {weights['vit_m2']}" in trained["vit_m2"]["log"]
    assert f"Image encoder: vgg16 weights from {weights['spatial_attention']}" in trained["spatial_attention"]["log"]


def test_a_frozen_backbone_ends_training_with_the_checkpoints_weights(trained, weights):
    model = load_run(trained["vit_m2"]["run"])[0].backbone
    arrays = np.load(weights["vit_m2"])
    vit = model.image_encoder.backbone
    np.testing.assert_array_equal(np.asarray(vit.patch_embedding.kernel), arrays["embedding/kernel"])
    np.testing.assert_array_equal(np.asarray(vit.encoder_norm.gamma), arrays["Transformer/encoder_norm/scale"])


def test_last_n_from_the_command_line_trains_only_the_last_vgg_block(trained, weights):
    model = load_run(trained["spatial_attention"]["run"])[0].backbone
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    reference.load_weights(weights["spatial_attention"])
    for layer in [layer for layer in model.image_encoder.backbone.layers if layer.weights]:
        for mine, theirs in zip(layer.get_weights(), reference.get_layer(layer.name).get_weights()):
            assert np.array_equal(mine, theirs) == (not layer.name.startswith("block5")), layer.name


def test_exports_caption_image_bytes_in_tensorflow_only_with_attention_over_the_backbone_grid(trained, tiny_shapes,
                                                                                              tensorflow_only):
    from tfcaption.data.records import read_records

    images = [r["image"] for r in read_records(tiny_shapes, "test").take(2).as_numpy_iterator()]
    grids = {"vit_m2": (4, 4, 1), "cptr": (4, 4, 1), "spatial_attention": (2, 2, 0)}  # ViT 32/8; VGG 32/16
    for name in RUNS:
        export = trained[name]["export"]
        # the session's TensorFlow-only process (tests/helpers/exports.py): no TensorFlow import per test
        served, foreign_modules = tensorflow_only.caption(export, images, "image_bytes")
        assert foreign_modules == []
        assert served == [r["caption"] for r in tfcaption.load(trained[name]["run"], beam_size=2).caption(images)]
        rows, cols, prefix = grids[name]
        with open(os.path.join(export, "assets", "config.json")) as f:
            assert json.load(f)["serving"]["token_grid"] == {"rows": rows, "cols": cols, "prefix": prefix}
        for attention in tfcaption.load(export).caption_with_attention(images):
            assert attention["attention"].shape == (len(attention["words"]), rows, cols)
            np.testing.assert_allclose(attention["attention"].sum(axis=(1, 2)), 1.0, atol=1e-4)


@pytest.mark.parametrize("preset", ["cptr", "spatial_attention"])
def test_default_weights_offline_are_one_line_and_exit_2_before_any_work(preset, tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: offline())
    monkeypatch.setenv("TFCAPTION_VIT_CACHE", str(tmp_path / "vit"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    code = train_cli.main(["--preset", preset, "--output-dir", str(tmp_path / "run"),
                           "--set", f"data.root={tmp_path / 'data'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    expected = (str(tmp_path / "vit" / "ViT-B_16.npz") if preset == "cptr"
                else "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert expected in err and "put it" in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()
