"""Shared fixtures: a tiny shapes dataset and the settings of a tiny, fast model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A model small enough to train for a few steps in seconds on two CPU cores.
TINY_MODEL = {
    "image_size": 32, "patch_size": 8, "hidden_dim": 32, "num_heads": 2, "key_dim": 16, "intermediate_dim": 64,
    "num_encoder_layers": 2, "num_decoder_layers": 2, "memory_slots": 4, "dropout": 0.0,
}
TINY_SHAPES = {"image_size": 32, "num_train": 48, "num_val": 12, "num_test": 12, "num_novel": 8, "num_shards": 2}


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="session")
def tiny_shapes(data_root):
    """Directory of a tiny shapes dataset (records + manifest), built once per session."""
    from tfcaption.data.shapes import ShapesConfig, build_shapes_dataset

    return build_shapes_dataset(data_root, ShapesConfig(**TINY_SHAPES), verbose=False, workers=1)


def tiny_train_args(output_dir, data_root, export_root, epochs=2):
    """`tfcaption-train` arguments for a run of a few seconds on the tiny dataset."""
    import json

    sets = [f"model.{k}={v}" for k, v in TINY_MODEL.items()]
    sets += [
        f"train.dataset_options={json.dumps(TINY_SHAPES)}", f"train.data_root={data_root}",
        f"train.export_root={export_root}", "train.batch_size=16", "train.warmup_steps=20",
        "train.learning_rate_scale=2.0", "train.eval_batch_size=8", "train.val_images=8", "train.max_caption_words=20",
        "train.eval_beam_size=2", "train.export_beam_size=2",
    ]
    args = ["--output-dir", output_dir, "--epochs", str(epochs)]
    for s in sets:
        args += ["--set", s]
    return args
