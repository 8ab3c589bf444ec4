"""`tfcaption.train(run_config)`: the library call behind tfcaption-train, on the tiny shapes dataset."""

import json
import os

import pytest

import tfcaption
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


def test_train_returns_the_report_and_model_then_resumes_and_refuses_another_model(tiny_shapes, data_root,
                                                                                  tmp_path):
    lines = []
    result = tfcaption.train(tiny_run_config(tmp_path / "run", data_root), log=lines.append)
    with open(os.path.join(result.run_dir, "report.json")) as f:
        assert json.load(f) == result.report
    assert 0.0 <= result.report["test"]["model"]["cider_d"] and "blind_baseline" in result.report["test"]
    assert len(result.history) == 1 and result.export_path == "" and result.blind_caption
    assert any(line.startswith("Vocabulary:") for line in lines)
    assert result.vocab.size == result.model.config.vocab_size

    again = tfcaption.train(tiny_run_config(tmp_path / "run", data_root), log=lines.append)
    assert again.history == [] and any(line.startswith("Resuming from") for line in lines)
    with pytest.raises(ValueError, match="different model config"):
        tfcaption.train(tiny_run_config(tmp_path / "run", data_root, hidden_dim=64, key_dim=32), log=lambda *a: None)
