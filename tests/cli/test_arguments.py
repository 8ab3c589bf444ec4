"""Every console script: a mistake on the command line (a misspelled choice, a wrong number, an unknown flag, a
missing argument) is one line and exit code 2, the way every other error a user can fix is."""

import importlib

import pytest

from tfcaption.cli.common import ArgumentParser

SCRIPTS = ["caption", "convert_m2", "evaluate", "export", "prepare", "serve", "train"]


def parse_error(module, argv, capsys):
    parser = importlib.import_module(f"tfcaption.cli.{module}").build_parser()
    assert isinstance(parser, ArgumentParser)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.count("\n") == 1 and err.startswith(f"{parser.prog}: error: "), err
    return err.rstrip("\n")


@pytest.mark.parametrize("module", SCRIPTS)
def test_an_unknown_flag_is_one_line_exit_2(module, capsys):
    err = parse_error(module, ["a", "b", "c", "--no-such-flag"], capsys)
    assert "unrecognized arguments: " in err and err.endswith("--no-such-flag")


@pytest.mark.parametrize("module, argv, message", [
    ("train", ["--preset", "m2_region"], "argument --preset: invalid choice: 'm2_region' (choose from clip_m2, "),
    ("train", ["--task", "sct"], "argument --task: invalid choice: 'sct' (choose from xe, scst; did you mean"),
    ("train", ["--strategy", "gpu"], "argument --strategy: invalid choice: 'gpu' (choose from auto, default, "),
    ("evaluate", ["--weights", "last"], "argument --weights: invalid choice: 'last' (choose from best, latest; "
     "did you mean 'latest'?)"),
    ("export", ["--weights", "bets"], "argument --weights: invalid choice: 'bets' (choose from best, latest; "
     "did you mean 'best'?)"),
])
def test_a_misspelled_choice_is_one_line_naming_the_choices(module, argv, message, capsys):
    assert message in parse_error(module, argv, capsys)


@pytest.mark.parametrize("module, argv, message", [
    ("train", ["--epochs", "two"], "argument --epochs: invalid int value: 'two'"),
    ("export", ["--version", "1.5"], "argument --version: invalid int value: '1.5'"),
    ("serve", ["root", "--port", "http"], "argument --port: invalid int value: 'http'"),
    ("prepare", ["shapes"], "the following arguments are required: out_dir"),
])
def test_a_wrong_number_or_missing_argument_is_one_line(module, argv, message, capsys):
    assert message in parse_error(module, argv, capsys)


def test_help_still_prints_the_usage(capsys):
    parser = importlib.import_module("tfcaption.cli.train").build_parser()
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["--help"])
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith("usage: tfcaption-train")


def test_train_flags_offer_the_configs_choices():
    import typing

    from tfcaption.cli import train
    from tfcaption.config import TrainConfig
    from tfcaption.config_fields import field_types

    actions = {action.dest: action for action in train.build_parser()._actions}
    for field in ("task", "strategy"):
        assert tuple(actions[field].choices) == typing.get_args(field_types(TrainConfig)[field])
