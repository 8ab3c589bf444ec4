"""Fixtures of the export tests: the trained tiny run exported greedily (beam size 1), the reference that the
sampling tests' greedy equivalences are checked against (the shared `tiny_run` export has beam size 2)."""

import os

import pytest

from tests.helpers.shared import built_once


@pytest.fixture(scope="session")
def tiny_run_greedy_export(tiny_run, tmp_path_factory):
    """The version directory of `tiny_run`'s model exported with beam size 1: its `serving_default` is greedy."""
    from tfcaption.export.saved_model import export_run
    from tfcaption.training.run_directory import load_run

    def build(root):
        captioner, run_config = load_run(tiny_run["run"])
        return export_run(captioner, run_config, export_root=str(root), model_name="greedy", beam_size=1)

    path = built_once(tmp_path_factory, "tiny_run_greedy", build)
    assert os.path.basename(path) == "1"
    return path
