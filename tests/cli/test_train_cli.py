"""tfcaption-train's own argument handling (the training itself: tfcaption.train, tests/training)."""

import os

from tfcaption.cli import train as train_cli
from tfcaption.config import RunConfig
from tfcaption.models import CaptionerConfig


def test_init_from_takes_the_runs_model_into_its_own_default_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = tmp_path / "runs" / "shapes-small"
    os.makedirs(start)
    saved = RunConfig(model=CaptionerConfig.from_preset("cptr_small", vocab_size=30, max_length=27))
    saved.save(str(start / "config.json"))
    (start / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(30)))
    config = train_cli.resolve_config(train_cli.build_parser().parse_args(["--init-from", str(start)]))
    assert config.train.output_dir == os.path.join("runs", "shapes-small-from-shapes-small")
    assert config.model == saved.model and config.train.init_from == str(start)


def test_time_budget_sets_the_runs_budget_and_is_off_without_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parse = train_cli.build_parser().parse_args
    assert train_cli.resolve_config(parse(["--time-budget", "7.5"])).train.time_budget_minutes == 7.5
    assert train_cli.resolve_config(parse([])).train.time_budget_minutes == 0.0
