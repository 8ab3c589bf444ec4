"""tfcaption-import: a BLIP checkpoint directory (or hf://) becomes a run directory that tfcaption-caption reads;
a user's mistakes are one line and exit code 2."""

import json
import os
import shutil
import subprocess
import sys

from tests.helpers.hf_fixture import images, manifest, model_dir
from tests.helpers.paths import REPO_ROOT
from tfcaption.cli.import_hub import main

PROGRAM = "tfcaption-import"


def _python(module, *args, env=None):
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=600)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"{PROGRAM}: error: ")
    return err[0]


def test_imported_run_captions_through_tfcaption_caption(tmp_path):
    run = tmp_path / "blip_a"
    imported = _python("tfcaption.cli.import_hub", model_dir("blip_a"), run)
    assert imported.returncode == 0, imported.stderr
    assert f"to {run}" in imported.stdout
    image = images()[0]
    captioned = _python("tfcaption.cli.caption", image, "--model", run, "--beam-size", "1", "--max-steps", "8",
                        "--json")
    assert captioned.returncode == 0, captioned.stderr
    [result] = json.loads(captioned.stdout)
    assert result["caption"] == manifest()["models"]["blip_a"]["generation"]["captions"]["greedy"][0]


def test_an_existing_out_dir_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main([str(model_dir("blip_b")), str(out)]) == 2
    assert "--overwrite" in _error_line(capsys)
    assert main([str(model_dir("blip_b")), str(out), "--overwrite"]) == 0
    assert {"config.json", "vocab.txt", "tokenizer_config.json", "best.weights.h5"} <= set(os.listdir(out))


def test_an_unknown_architecture_is_one_line(tmp_path, capsys):
    assert main([str(model_dir("clip_vision")), str(tmp_path / "run")]) == 2
    assert "CLIPVisionModel" in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_missing_weights_file_is_one_line(tmp_path, capsys):
    source = tmp_path / "blip"
    shutil.copytree(model_dir("blip_a"), source)
    (source / "pytorch_model.bin").unlink()
    assert main([str(source), str(tmp_path / "run")]) == 2
    _error_line(capsys)


def test_a_missing_source_directory_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "run")]) == 2
    assert "nowhere" in _error_line(capsys)


def test_an_offline_hub_miss_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    assert main(["hf://tfcaption-tests/no-such-blip", str(tmp_path / "run")]) == 2
    assert "tfcaption-tests/no-such-blip" in _error_line(capsys)
