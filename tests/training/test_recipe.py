"""`tfcaption.train(run_config)`: the library call behind tfcaption-train, on the tiny shapes dataset."""

import json
import os

import pytest
import tensorflow as tf

import tfcaption
from tests.helpers.tensorboard import tensorboard_summaries
from tests.helpers.tiny import TINY_MODEL, TINY_SHAPES
from tfcaption.config import RunConfig
from tfcaption.models import CaptionerConfig


def tiny_run_config(output_dir, data_root, **model):
    config = RunConfig.from_preset("small")
    config.model = CaptionerConfig.from_preset("small", **{**TINY_MODEL, **model})
    config.data.spec, config.data.root, config.data.options = "shapes", data_root, dict(TINY_SHAPES)
    config.data.max_caption_words = 20
    train = {"output_dir": str(output_dir), "epochs": 1, "steps_per_epoch": 3, "batch_size": 8, "warmup_steps": 2,
             "val_images": 4, "jit_compile": False}
    for key, value in train.items():
        setattr(config.train, key, value)
    config.decode.batch_size, config.decode.beam_size, config.decode.java = 8, 2, False
    config.decode.eval_splits = ("test",)
    config.export.enabled = False
    return config


@pytest.fixture(scope="module")
def first(tiny_shapes, data_root, tmp_path_factory):
    """A tiny run trained through `tfcaption.train`, and the lines it logged."""
    lines = []
    result = tfcaption.train(tiny_run_config(tmp_path_factory.mktemp("recipe") / "run", data_root), log=lines.append)
    return result, lines


def test_train_returns_the_report_and_model_writes_tensorboard_figures_and_resumes(first, data_root):
    result, lines = first
    with open(os.path.join(result.run_dir, "report.json")) as f:
        assert json.load(f) == result.report
    assert 0.0 <= result.report["test"]["model"]["cider_d"] and "blind_baseline" in result.report["test"]
    assert len(result.history) == 1 and result.export_path == "" and result.blind_caption
    assert any(line.startswith("Vocabulary:") for line in lines)
    assert result.vocab.size == result.model.config.vocab_size
    # The task the report was decoded with: the trained network, the vocabulary and the run's decode settings.
    assert isinstance(result.captioner, tfcaption.ImageCaptioner) and result.captioner.backbone is result.model
    assert result.captioner.preprocessor.vocabulary is result.vocab and result.captioner.beam_size == 2

    images, texts = tensorboard_summaries(os.path.join(result.run_dir, "logs"))
    assert sorted(images) == ["val_attention/0", "val_attention/1", "val_attention/2"]
    for png in images.values():  # an attention figure: a picture, not a blank canvas
        pixels = tf.io.decode_png(png).numpy()
        assert min(pixels.shape[:2]) > 100 and pixels.std() > 10
    assert texts["val_examples"].startswith("| image | generated | references |")

    again = tfcaption.train(tiny_run_config(result.run_dir, data_root), log=lines.append)
    assert again.history == [] and any(line.startswith("Resuming from") for line in lines)
    with pytest.raises(ValueError, match="different model config"):
        tfcaption.train(tiny_run_config(result.run_dir, data_root, hidden_dim=64, key_dim=32), log=lambda *a: None)


def test_init_from_starts_with_the_runs_model_vocabulary_and_best_weights(first, data_root, tmp_path):
    import numpy as np

    first, _ = first
    config = tiny_run_config(tmp_path / "tuned", data_root, hidden_dim=64, key_dim=32)  # ignored: the run's model
    config.train.init_from, config.train.learning_rate_scale, config.train.steps_per_epoch = first.run_dir, 0.0, 1
    lines = []
    tuned = tfcaption.train(config, log=lines.append)
    assert f"Initialised from {os.path.join(first.run_dir, 'best.weights.h5')}." in lines
    assert tuned.model.config == first.model.config and tuned.vocab.tokens == first.vocab.tokens
    for mine, theirs in zip(tuned.model.variables, first.model.variables):  # a learning rate of 0 kept them
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    itself = tiny_run_config(tmp_path / "new", data_root)
    itself.train.init_from = itself.train.output_dir
    with pytest.raises(ValueError, match="is the run directory itself"):
        tfcaption.train(itself, log=lambda *a: None)


def test_scst_from_an_xe_run_logs_reward_and_baseline_and_changes_the_weights(first, data_root, tmp_path):
    import numpy as np

    first, _ = first
    config = tiny_run_config(tmp_path / "scst", data_root)
    config.train.init_from, config.train.task, config.train.batch_size = first.run_dir, "scst", 10  # 2 images x 5
    config.train.scst_learning_rate = 1e-3
    lines = []
    tuned = tfcaption.train(config, log=lines.append)
    (record,) = tuned.history
    assert np.isfinite(record["reward"]) and np.isfinite(record["baseline"]) and np.isfinite(record["train_loss"])
    assert record["baseline"] == pytest.approx(record["reward"], abs=1e-6)  # beam mode: the beams' mean reward
    assert any("SCST reward" in line for line in lines)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(tuned.model.trainable_variables, first.model.trainable_variables))
    scalars = set()
    for name in os.listdir(os.path.join(tuned.run_dir, "logs")):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(tuned.run_dir, "logs", name)):
            scalars |= {value.tag for value in event.summary.value}
    assert {"scst_reward", "scst_baseline", "val_cider_d"} <= scalars
