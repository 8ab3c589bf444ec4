"""benchmarks/blip_latency.py: its --quick run (tfcaption alone, tiny sizes) and its FLOP count."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "benchmarks", "blip_latency.py")
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import blip_latency  # noqa: E402  (benchmarks/ is not a package)


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("blip_latency") / "report.json"
    done = _run("--quick", "--batch-sizes", 2, "--new-tokens", 4, "--greedy", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_quick_run_times_every_search_and_batch_of_the_imported_checkpoint(quick_report):
    report, stdout = quick_report
    rows = {(r["search"], r["batch"]): r for r in report["rows"]}
    assert set(rows) == {("beam3", 2), ("greedy", 2)}
    for (search, batch), row in rows.items():
        assert row["implementation"] == "tfcaption (XLA)" and row["calls"] == 1
        assert row["images_per_s"] == pytest.approx(batch / row["seconds_per_call"])
        assert row["ms_per_image"] == pytest.approx(1000 * row["seconds_per_call"] / batch)
        assert row["gflop_per_s"] == pytest.approx(row["gflop_per_image"] * row["images_per_s"])
        assert row["percent_of_matmul_peak"] == pytest.approx(
            100 * row["gflop_per_s"] / report["xla_matmul_gflop_per_s"])
        assert row["tfcaption_speedup"] is None
    assert rows[("beam3", 2)]["decoder_gflop_per_image"] > rows[("greedy", 2)]["decoder_gflop_per_image"]
    assert report["reference"] is None and report["issue_targets"] == {}
    assert "transformers: skipped" in stdout and "tfcaption (XLA)  beam3" in stdout


def test_flops_per_image_follow_the_documented_formula_at_blip_base_sizes():
    d, mlp, vocab, layers, tokens, beams, steps = 768, 3072, 30524, 12, 577, 3, 20
    vision = 2 * (576 * 16 * 16 * 3 * d + layers * (tokens * (4 * d * d + 2 * d * mlp) + 2 * tokens ** 2 * d))
    keys_values = layers * 2 * 2 * tokens * d * d
    token = [layers * (4 * 2 * d * d + 2 * 2 * (t + 1) * d  # self-attention: projections, prefix of t + 1
                       + 2 * 2 * d * d + 2 * 2 * tokens * d  # cross-attention: query and output, over the image
                       + 2 * 2 * d * mlp)  # MLP
             + 2 * d * d + 2 * d * vocab  # LM head: transform, projection
             for t in range(steps)]
    assert blip_latency.flops_per_image(blip_latency.BASE, beams, steps) == (vision, keys_values + beams * sum(token))
    assert 100e9 < vision < 120e9  # ViT-B/16 at 384 px is about 110 GFLOPs per image


@pytest.mark.parametrize("args, message", [
    (["--batch-sizes", 1, 0], "--batch-sizes 1 0: must be at least 1"),
    (["--beam-size", 1], "--beam-size 1: beam search needs at least 2 beams"),
    (["--new-tokens", 40], "--new-tokens 40: [DEC] and the new tokens must fit the decoder's 32 positions"),
    (["--reference-python", "/nonexistent/python"], "--reference-python /nonexistent/python:"),
])
def test_a_wrong_option_is_one_line_and_exit_code_2(args, message):
    done = _run("--quick", *args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("blip_latency.py: " + message), done.stderr
