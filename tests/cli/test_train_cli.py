"""tfcaption-train's own argument handling (the training itself: tfcaption.train, tests/training)."""

import json
import os

import pytest

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


@pytest.mark.parametrize("args, message", [
    (["--set", "train.epochs=abc"], "train.epochs must be an integer >= 1, got 'abc' (a string)."),
    (["--set", "model.decoder.num_layers=two"],
     "model.decoder.num_layers must be an integer >= 1, got 'two' (a string)."),
    (["--set", 'train.phases=[{"task":"scst","epochs":"x"}]'],
     "train.phases[0].epochs must be an integer >= 1, got 'x' (a string)."),
    (["--set", 'train.phases=["scst"]'], "train.phases[0] must be an object of phase fields"),
    (["--set", "train.batch_size=-3"], "train.batch_size must be an integer >= 1, got -3."),
    (["--preset", "m2", "--set", "model.image_encoder.positions=2d"],
     "model.image_encoder.positions must be one of 'learned', 'sinusoid_2d', got '2d' (a string)."),
])
def test_a_wrong_set_value_is_one_line_and_exit_2(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"tfcaption-train: error: {message}"), err
    assert not os.path.exists(tmp_path / "runs")


def test_a_wrong_value_in_a_config_file_is_one_line_naming_the_file_and_field(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    values = RunConfig().to_dict()
    values["decode"]["beam_size"] = "wide"
    (tmp_path / "run.json").write_text(json.dumps(values))
    assert train_cli.main(["--config", "run.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tfcaption-train: error: run.json: decode.beam_size must be an integer >= 1, got 'wide' (a string)."
    (tmp_path / "run.yaml").write_text("train: [unclosed")
    assert train_cli.main(["--config", "run.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run.yaml is not valid YAML" in err


def test_list_presets_prints_the_table_without_training(tmp_path, monkeypatch, capsys):
    from tfcaption.models.presets import PRESETS

    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["PRESET", "INPUT", "PARAMETERS", "PAPER"]
    assert all(f"\n{name} " in out for name in PRESETS) and "m2_regions         features" in out
    assert not os.listdir(tmp_path)


def test_an_unknown_preset_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(["--preset", "m3"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1, err  # one line, no usage above it
    assert err.startswith("tfcaption-train: error: argument --preset: invalid choice: 'm3' (choose from clip_m2, ")
    with pytest.raises(SystemExit) as stopped:
        train_cli.main(["--preset", "smal"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and err.rstrip().endswith("did you mean 'small'?)"), err
