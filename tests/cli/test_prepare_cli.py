"""tfcaption-prepare, then tfcaption-train and tfcaption-evaluate on the prepared COCO-layout data."""

import json
import os

import pytest

from tests.helpers.tiny import model_sets
from tests.helpers import layouts
from tfcaption.cli import evaluate as evaluate_cli
from tfcaption.cli import prepare as prepare_cli
from tfcaption.cli import train as train_cli


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return layouts.make_coco_clean(str(tmp_path_factory.mktemp("coco") / "coco"))


def test_prepare_prints_a_summary_and_writes_the_manifest(tmp_path, capsys):
    root = str(tmp_path / "dirty")
    expected = layouts.make_coco(root)
    out = str(tmp_path / "out")
    assert prepare_cli.main([f"coco:{root}", out, "--images-per-shard", "4", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"Prepared coco into {out}" in printed
    assert "truncated_image 1" in printed and "missing_file 1" in printed and "invalid_utf8 1" in printed
    assert f"tfcaption-train --data {out}" in printed
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["splits"]["train"]["images"] == expected["splits"]["train"]["images"]
    # The same command again: nothing to do, and it says so.
    assert prepare_cli.main([f"coco:{root}", out, "--images-per-shard", "4"]) == 0
    assert "already prepared" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["coco:/no/such/dir", "OUT"], "COCO captions file not found: /no/such/dir"),
    (["nonsense", "OUT"], "is not a source spec"),
])
def test_prepare_errors_are_one_line(tmp_path, capsys, args, message):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert prepare_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfcaption-prepare: error:") and message in err and "\n" not in err


def test_train_then_evaluate_on_a_prepared_coco_layout_give_the_same_captions(coco_root, tmp_path, capsys):
    out = str(tmp_path / "prepared")
    assert prepare_cli.main([f"coco:{coco_root}", out, "--quiet"]) == 0
    run = str(tmp_path / "run")
    sets = model_sets() + [
        "train.batch_size=8", "train.warmup_steps=10", "train.learning_rate_scale=4.0", "train.eval_batch_size=8",
        "train.max_caption_words=8", "train.eval_beam_size=2", f"train.export_root={tmp_path / 'savedmodel'}",
        f"train.data_root={tmp_path / 'cache'}", "train.model_name=coco_tiny", "train.early_stopping_patience=0",
        # No java: the captions compared below do not depend on it, and the metrics checked are evaluate's
        # (--no-java); the java path is tested by tests/metrics/test_coco.py and the end-to-end run's report.
        "decode.java=false"]
    args = ["--data", out, "--output-dir", run, "--epochs", "3", "--no-xla"]
    for s in sets:
        args += ["--set", s]
    assert train_cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "val/model" in printed  # no test split in COCO's layout: evaluated on val
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    assert set(report) == {"val"} and report["val"]["images"] == 9
    assert os.path.exists(tmp_path / "savedmodel" / "coco_tiny" / "1" / "saved_model.pb")

    # Evaluation straight from the source spec: prepared once into the data root, same numbers.
    output = str(tmp_path / "evaluation.json")
    assert evaluate_cli.main(["--model", run, "--data", f"coco:{coco_root}", "--splits", "val", "--no-java",
                              "--output", output]) == 0
    with open(output) as f:
        evaluation = json.load(f)
    assert evaluation["data"] == f"coco:{coco_root}"
    with open(os.path.join(run, "predictions.json")) as f:
        captions_after_training = json.load(f)["val"]
    # Same images, same captions (scores agree to float precision: this run decodes with XLA).
    evaluated = evaluation["predictions"]["val"]
    assert [(p["image_id"], p["caption"]) for p in evaluated] == [(p["image_id"], p["caption"])
                                                                  for p in captions_after_training]
    assert [p["score"] for p in evaluated] == pytest.approx([p["score"] for p in captions_after_training], abs=1e-4)
    assert 0.0 <= evaluation["report"]["val"]["model"]["bleu_4"] <= 1.0
    assert any(name.startswith("coco-") for name in os.listdir(tmp_path / "cache"))
