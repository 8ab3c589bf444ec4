"""Fixtures of the export tests: the trained tiny run exported greedily (beam size 1), the reference that the
sampling tests' greedy equivalences are checked against (the shared `tiny_run` export has beam size 2)."""

import os

import pytest


@pytest.fixture(scope="session")
def tiny_run_greedy_export(tiny_run, tmp_path_factory):
    """The version directory of `tiny_run`'s model exported with beam size 1: its `serving_default` is greedy."""
    from tfcaption.export.saved_model import export_run
    from tfcaption.training.run_directory import load_run

    captioner, run_config = load_run(tiny_run["run"])
    root = str(tmp_path_factory.mktemp("tiny_run_greedy"))
    path = export_run(captioner, run_config, export_root=root, model_name="greedy", beam_size=1)
    assert os.path.basename(path) == "1"
    return path
