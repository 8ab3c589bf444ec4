"""`tfcaption-train --init-from` an imported BLIP run (tfcaption-import): XE then SCST on shapes with the run's
model, BERT tokenizer and image processing; the run it writes is a run like any other."""

import json

import numpy as np
import pytest

from tests.helpers.hf_fixture import images, model_dir
from tests.helpers.tiny import TINY_SHAPES
from tfcaption.cli import caption as caption_cli
from tfcaption.cli import train as train_cli

# Two steps of each phase on the tiny shapes dataset, the tower frozen; rates high enough to move the weights.
FINE_TUNE_SETS = [
    "model.image_encoder.train_backbone=frozen", "model.dtype_policy=float32", "train.steps_per_epoch=2",
    "train.batch_size=10", "train.warmup_steps=1", "train.learning_rate_scale=4.0", "train.scst_learning_rate=1e-3",
    "train.val_images=4", "train.jit_compile=false", "decode.batch_size=8", "decode.beam_size=1",
    "decode.java=false", 'decode.eval_splits=["test"]',
]


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tfcaption-train: error: ")
    return err[0]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from tfcaption.interop.hf.import_blip import import_blip

    captioner, run = import_blip(model_dir("blip_a"), tmp_path_factory.mktemp("import") / "blip_a")
    return run.path, captioner


@pytest.fixture(scope="module")
def tuned(imported, tiny_shapes, data_root, tmp_path_factory):
    """The imported fixture fine-tuned through tfcaption-train's main: its default phases, XE then SCST."""
    start, _ = imported
    out = str(tmp_path_factory.mktemp("tuned") / "run")
    sets = FINE_TUNE_SETS + [f"data.options={json.dumps(TINY_SHAPES)}", f"data.root={data_root}"]
    args = ["--init-from", start, "--output-dir", out, "--epochs", "1", "--no-export"]
    assert train_cli.main(args + [a for s in sets for a in ("--set", s)]) == 0
    return out


def test_fine_tuning_an_imported_run_trains_xe_then_scst_with_its_tokenizer_and_frozen_tower(imported, tuned):
    import tfcaption
    from tfcaption.config import RunConfig
    from tfcaption.data.bert_tokenizer import BertTokenizer

    start, original = imported
    config = RunConfig.load(f"{tuned}/config.json")
    assert config.data.tokenizer == "bert" and not config.data.augment_flip
    assert [phase["task"] for phase in config.train.phases] == ["xe", "scst"]
    assert config.model.image_encoder.type == "blip_vit" and config.model.image_encoder.train_backbone == "frozen"
    with open(f"{tuned}/history.jsonl") as f:
        history = [json.loads(line) for line in f]
    assert [record.get("task") for record in history] == ["xe", "scst"], history
    assert all(np.isfinite(record["train_loss"]) for record in history)
    assert np.isfinite(history[1]["reward"]) and np.isfinite(history[1]["baseline"])

    captioner = tfcaption.ImageCaptioner.from_preset(tuned)
    assert isinstance(captioner.preprocessor.vocabulary, BertTokenizer)
    assert captioner.preprocessor.vocabulary.tokens == original.preprocessor.vocabulary.tokens
    tuned_model, start_model = captioner.backbone, original.backbone
    for mine, theirs in zip(tuned_model.image_encoder.weights, start_model.image_encoder.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))  # frozen: not one value moved
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(tuned_model.decoder.weights, start_model.decoder.weights))


def test_the_fine_tuned_run_captions_through_tfcaption_caption(tuned, capsys):
    capsys.readouterr()
    assert caption_cli.main([str(images()[0]), "--model", tuned, "--max-steps", "6", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert isinstance(result["caption"], str)


def test_a_fine_tuned_run_resumes_from_its_directory(imported, tuned):
    start, _ = imported
    args = train_cli.build_parser().parse_args(
        ["--init-from", start, "--output-dir", tuned] + [a for s in FINE_TUNE_SETS for a in ("--set", s)])
    config = train_cli.resolve_config(args)
    assert config.model.image_encoder.train_backbone == "frozen" and config.model.dtype_policy == "float32"


def test_a_bad_init_from_path_is_one_line_and_exit_2(tmp_path, capsys):
    assert train_cli.main(["--init-from", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "run")]) == 2
    line = _error_line(capsys)
    assert "nowhere" in line and "tfcaption-import" in line
    assert not (tmp_path / "run").exists()


def test_an_architecture_field_over_an_imported_run_is_one_line_and_exit_2(imported, tmp_path, capsys):
    start, _ = imported
    args = ["--init-from", start, "--output-dir", str(tmp_path / "run"), "--set", "model.decoder.num_layers=3"]
    assert train_cli.main(args) == 2
    line = _error_line(capsys)
    assert "model.decoder.num_layers" in line and "model.image_encoder.train_backbone" in line
