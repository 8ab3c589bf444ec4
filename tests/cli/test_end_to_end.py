"""A tiny train -> evaluate -> export -> caption run through the console scripts' entry points."""

import json
import os
import shutil

import pytest

from tests.helpers.tiny import tiny_train_args
from tfcaption.cli import caption as caption_cli
from tfcaption.cli import evaluate as evaluate_cli
from tfcaption.cli import export as export_cli
from tfcaption.cli import train as train_cli

METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")
GROUNDING = ("grounding_precision", "grounding_recall", "grounding_f1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root, tiny_run):
    root = tmp_path_factory.mktemp("e2e")
    run_dir, export_root = str(root / "run"), str(root / "savedmodel")
    # One epoch (the session's tiny run, tests/conftest.py: `tiny_train_args(..., epochs=1)` without XLA, exported
    # as version 1; copied, since other tests read it), then a rerun asking for two, with XLA and the default
    # evaluation: the second resumes from the checkpoint.
    shutil.copytree(tiny_run["run"], run_dir)
    shutil.copytree(tiny_run["export_root"], export_root)
    assert train_cli.main(tiny_train_args(run_dir, data_root, export_root, epochs=2)) == 0
    return {"run": run_dir, "export_root": export_root, "root": root}


def _history(run_dir):
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_training_resumes_instead_of_restarting(trained):
    epochs = [record["epoch"] for record in _history(trained["run"])]
    assert epochs == [1, 2]
    for name in ("config.json", "vocab.txt", "best.weights.h5", "report.json", "blind_baseline.json"):
        assert os.path.exists(os.path.join(trained["run"], name)), name
    assert os.listdir(os.path.join(trained["run"], "logs"))  # TensorBoard events


def test_report_has_every_split_metric_and_baseline(trained):
    with open(os.path.join(trained["run"], "report.json")) as f:
        report = json.load(f)
    assert set(report) == {"test", "novel"}
    for split in report.values():
        for side in ("model", "blind_baseline"):
            for key in METRICS + GROUNDING:
                assert key in split[side], (side, key)
            for key in METRICS[:4] + GROUNDING:
                assert 0.0 <= split[side][key] <= 1.0
        assert split["images"] > 0


def test_both_training_runs_exported_a_new_version(trained):
    model_dir = os.path.join(trained["export_root"], "shapes_m2_small")
    assert sorted(os.listdir(model_dir)) == ["1", "2"]
    assert os.path.exists(os.path.join(model_dir, "2", "saved_model.pb"))
    assert os.path.exists(os.path.join(model_dir, "2", "assets", "vocab.txt"))


def test_evaluate_cli_writes_a_report(trained, capsys):
    output = str(trained["root"] / "evaluation.json")
    assert evaluate_cli.main(["--model", trained["run"], "--splits", "test", "--no-java", "--output", output]) == 0
    printed = capsys.readouterr().out
    assert "BLEU-4" in printed and "test/model" in printed
    with open(output) as f:
        evaluation = json.load(f)
    assert evaluation["report"]["test"]["model"]["meteor"] is None  # --no-java
    assert len(evaluation["predictions"]["test"]) == evaluation["report"]["test"]["images"]


def _test_images(tiny_shapes, count=3):
    from tfcaption.data.records import read_records

    return [r["image"] for r in read_records(tiny_shapes, "test").take(count).as_numpy_iterator()]


def test_saved_model_in_a_fresh_process_matches_the_keras_model(trained, tiny_shapes, tensorflow_only):
    import tfcaption

    export = os.path.join(trained["export_root"], "shapes_m2_small", "2")
    images = _test_images(tiny_shapes)
    # A process of its own with TensorFlow only (tests/helpers/exports.py): the export needs nothing else.
    served, foreign_modules = tensorflow_only.caption(export, images, "image_bytes")
    assert foreign_modules == []
    local = [r["caption"] for r in tfcaption.load(trained["run"], beam_size=2).caption(images)]
    assert served == local
    assert all(isinstance(c, str) for c in served)


def test_export_cli_writes_the_next_version(trained, capsys):
    assert export_cli.main(["--model", trained["run"], "--export-root", str(trained["root"] / "other")]) == 0
    assert capsys.readouterr().out.strip().endswith(os.path.join("shapes_m2_small", "1"))


def test_caption_cli_reports_bad_files_and_captions_the_rest(trained, tiny_shapes, tmp_path, capsys):
    good = tmp_path / "good.png"
    good.write_bytes(_test_images(tiny_shapes, 1)[0])
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    code = caption_cli.main([str(good), str(bad), "--model", os.path.join(trained["export_root"], "shapes_m2_small")])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.txt" in captured.err and "not a decodable image" in captured.err
    assert captured.out.startswith(str(good) + ": ")


def test_missing_paths_give_one_line(tmp_path, capsys):
    assert caption_cli.main(["x.png", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err
    assert evaluate_cli.main(["--model", str(tmp_path / "nope")]) == 2
    assert train_cli.main(["--data", str(tmp_path / "missing"), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "missing" in err[-1]
