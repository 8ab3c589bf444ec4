"""The --features paths of tfcaption-caption and tfcaption-evaluate (the M2 reproduction commands)."""

import json

from tests.helpers.karpathy import karpathy_file, karpathy_image
from tests.helpers.m2_fixture import requires_fixture
from tests.helpers.optional import needs_h5py
from tfcaption.cli import caption as caption_cli
from tfcaption.cli import evaluate as evaluate_cli

# `converted` (tests/conftest.py): the M2 reference fixture as a run directory plus an HDF5 features file.
pytestmark = [needs_h5py, requires_fixture("config.json", "m2_tiny.pth", "vocab.pkl", "inputs.npz", "expected.npz")]


def test_caption_cli_prints_json_with_all_beams(converted, capsys):
    code = caption_cli.main(["--model", converted["run"], "--features", converted["h5"], "100", "102",
                             "--json", "--all-beams", "--beam-size", "3"])
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["image_id"] for r in results] == ["100", "102"]
    for result in results:
        assert set(result) >= {"image_id", "caption", "score", "beams"}
        assert len(result["beams"]) == 3
        assert {"caption", "tokens", "score"} <= set(result["beams"][0])


def test_caption_cli_names_a_missing_feature_key(converted, capsys):
    assert caption_cli.main(["--model", converted["run"], "--features", converted["h5"], "404"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "404" in err


def test_evaluate_cli_on_a_karpathy_split_reports_raw_and_collapsed_metrics(converted, capsys):
    annotations = karpathy_file(converted["tmp"] / "cli_dataset_coco.json",
                            [karpathy_image(100, "test", "w01 w02"), karpathy_image(101, "test", "w03")])
    output = converted["tmp"] / "evaluation.json"
    code = evaluate_cli.main(["--model", converted["run"], "--features", converted["h5"], "--annotations",
                              str(annotations), "--no-java", "--beam-size", "3", "--output", str(output)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "test/raw" in printed and "test/collapse_repeats" in printed
    report = json.loads(output.read_text())["report"]["test"]
    assert report["images"] == 2 and "cider_d" in report["raw"]
