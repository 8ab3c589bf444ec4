"""benchmarks/portable.py --quick on the session's tiny run: every format measured and scored in one run, the
files' sizes in the order quantization promises, and a wrong --model refused in one line."""

import importlib.util
import json
import os

import pytest

from tests.helpers.paths import REPO_ROOT

FORMATS = ["SavedModel", "TF function", "LiteRT float32", "LiteRT float16", "LiteRT dynamic int8", "LiteRT int8",
           "ONNX"]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("portable_benchmark",
                                                  os.path.join(REPO_ROOT, "benchmarks", "portable.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    output = tmp_path_factory.mktemp("portable_benchmark") / "portable.json"
    assert load_benchmark().main(["--model", tiny_run["run"], "--quick", "--output", str(output)]) == 0
    with open(output) as f:
        return json.load(f)


def test_quick_run_measures_every_format_with_the_runs_beam_on_a_few_test_images(report):
    assert report["quick"] and report["test_images"] == 8 and report["beam_size"] == 2
    rows = report["results"]["beam 2"]
    assert list(rows) == FORMATS
    for name, row in rows.items():
        assert 0 < row["p50_ms"] <= row["p95_ms"], name
        assert row["images_per_s"] > 0 and row["requests"] == 5, name
        assert row["cider_d"] >= 0 and 0 <= row["grounding_f1"] <= 1, name
    assert report["machine"]["cpu"] and isinstance(report["machine"]["cpu_flags"], list)


def test_litert_float32_and_onnx_give_the_float32_functions_captions_and_quantized_files_are_smaller(report):
    rows = report["results"]["beam 2"]
    assert rows["LiteRT float32"]["same_captions_as_float32"] == 1.0
    assert rows["ONNX"]["same_captions_as_float32"] == 1.0
    assert rows["TF function"]["size_bytes"] is None
    float32 = rows["LiteRT float32"]["size_bytes"]
    assert rows["LiteRT dynamic int8"]["size_bytes"] < rows["LiteRT float16"]["size_bytes"] < float32
    assert rows["LiteRT int8"]["size_bytes"] < rows["LiteRT float16"]["size_bytes"]
    assert report["tensorflow_over_litert_float32_p50"]["beam 2"] == pytest.approx(
        rows["TF function"]["p50_ms"] / rows["LiteRT float32"]["p50_ms"])


def test_a_directory_that_is_not_a_run_is_one_line_and_exit_code_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_benchmark().main(["--model", str(tmp_path), "--quick"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"--model {tmp_path}: not a run directory (no config.json)." and "\n" not in err
