"""Fixtures several test directories share, and the CI rule that a skip is a failure.

Plain helpers (constants, builders, file writers) are in tests/helpers/; this file holds only pytest
fixtures and plugins.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tests.helpers.shared import built_once  # noqa: E402
from tests.helpers.tiny import TINY_SHAPES, tiny_train_args  # noqa: E402

# ci_skips: under CI (the variable set, non-empty) a skipped test is reported as a failure.
# pytester: tests/test_ci_skips.py runs an inner pytest session to check that.
pytest_plugins = ["tests.helpers.ci_skips", "pytester"]
# Files written by earlier versions (and the script that wrote them, which needs that version).
collect_ignore_glob = ["fixtures/*"]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """The datasets root of the session (shared by xdist workers: tests/helpers/shared.py); `tiny_shapes`
    builds the tiny shapes dataset there, which runs given this root find instead of building it."""
    return built_once(tmp_path_factory, "datasets", str)


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory, data_root):
    """Directory of a tiny shapes dataset (records + manifest) under `data_root`, built once per session."""
    from tfcaption.datasets.shapes.dataset import ShapesConfig, build_shapes_dataset

    def build(_):  # into data_root, where the runs of tiny_train_args look for it
        return build_shapes_dataset(data_root, ShapesConfig(**TINY_SHAPES), verbose=False, workers=1)

    return built_once(tmp_path_factory, "tiny_shapes", build)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_root, tiny_shapes):
    """One tiny `tfcaption-train --preset small` run, trained once per session: one epoch of the `small` preset
    at test size (`TINY_MODEL`, which is `tiny_overrides("small")`) on the tiny shapes dataset, without XLA,
    evaluated on the test split (no java) and exported. For the tests that need a trained tiny run directory
    and its export (tests/test_inference.py, tests/viz/, the `small` case of tests/cli/test_presets.py) and
    the first epoch of tests/cli/test_end_to_end.py. Read it, never write into it: a test that continues the
    run (the end-to-end test resumes it) copies it first.

    Returns {"run", "export_root", "export"}: the run directory, the export root and the version directory
    (`export_root/shapes_m2_small/1`)."""
    from tfcaption.cli import train as train_cli

    def build(root):
        run, export_root = str(root / "run"), str(root / "savedmodel")
        args = tiny_train_args(run, data_root, export_root, epochs=1) + [
            "--preset", "small", "--no-xla", "--set", 'decode.eval_splits=["test"]', "--set", "decode.java=false"]
        assert train_cli.main(args) == 0
        return {"run": run, "export_root": export_root, "export": os.path.join(export_root, "shapes_m2_small", "1")}

    return built_once(tmp_path_factory, "tiny_run", build)


@pytest.fixture(scope="session")
def tiny_predictor(tiny_run):
    """`tfcaption.load` of the shared tiny run directory, greedy (beam size 1)."""
    import tfcaption

    return tfcaption.load(tiny_run["run"], beam_size=1)


@pytest.fixture(scope="session")
def tensorflow_only(tmp_path_factory):
    """The TensorFlow-only child process (tests/helpers/exports.py) that captions with exports as a
    consumer without tfcaption or tensorflow-text would; one per session, started at its first use."""
    from tests.helpers.exports import TensorFlowOnlyProcess

    process = TensorFlowOnlyProcess(tmp_path_factory.mktemp("tensorflow_only"))
    yield process
    process.close()


@pytest.fixture(scope="module")
def blip_runs(tmp_path_factory):
    """`blip_runs(name)`: the BLIP fixture checkpoint `name` (tests/fixtures/hf) imported into a run directory,
    once per module; returns its path."""
    from tests.helpers.hf_fixture import model_dir
    from tfcaption.interop.hf.import_blip import import_blip

    root, paths = tmp_path_factory.mktemp("imported"), {}

    def run(name):
        if name not in paths:
            paths[name] = import_blip(model_dir(name), str(root / name))[1].path
        return paths[name]

    return run


@pytest.fixture(scope="session")
def blip_exports(tmp_path_factory):
    """The BLIP fixture checkpoint `BLIP_EXPORTED` imported as a run and exported twice with tfcaption-export,
    beam size 3 and its generate() cases' new tokens: "plain" without a prompt and "prompt" with
    `baked_prompts()` (tests/helpers/hf_fixture.py). Built once per session (the export, page and gRPC tests
    share it); {"run", "plain", "prompt"}: the run directory and the two version directories."""
    from tests.helpers.hf_fixture import BLIP_EXPORTED, baked_prompts, model_dir, new_tokens

    def build(work):
        from tfcaption.cli.export import main
        from tfcaption.interop.hf.import_blip import import_blip

        run, root = work / "run", work / "savedmodel"
        import_blip(model_dir(BLIP_EXPORTED), run)
        common = ["--model", str(run), "--export-root", str(root), "--beam-size", "3", "--max-steps",
                  str(new_tokens())]
        assert main([*common, "--name", "plain"]) == 0
        prompts = [arg for prompt in baked_prompts() for arg in ("--prompt", prompt)]
        assert main([*common, "--name", "prompt", *prompts]) == 0
        return {"run": str(run), "plain": str(root / "plain" / "1"), "prompt": str(root / "prompt" / "1")}

    return built_once(tmp_path_factory, "blip_exports", build)


@pytest.fixture(scope="session")
def blip_server(blip_exports):
    """An in-process tfcaption-serve (REST and gRPC) on the "prompt" export of `blip_exports` alone (its version
    directory: model name "prompt"), started once per session: loading BLIP is what a server start costs."""
    from tests.serving.servers import InProcessServer
    from tfcaption.serving.models import ModelRepository

    with InProcessServer(ModelRepository(blip_exports["prompt"]), grpc=True) as running:
        yield running


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The M2 reference fixture converted to a run directory, and its inputs as an HDF5 file (ids 100, 101, 102).

    Used by tests/interop/m2/test_features.py and tests/cli/test_features_cli.py.
    """
    from tests.helpers.m2_fixture import FIXTURE, skip_without_fixture
    from tests.helpers.optional import h5py, skip_without_h5py
    from tfcaption.interop.m2.convert import convert

    skip_without_h5py()
    skip_without_fixture("config.json", "m2_tiny.pth", "vocab.pkl", "inputs.npz", "expected.npz")
    tmp = tmp_path_factory.mktemp("features_run")
    heads = json.loads((FIXTURE / "config.json").read_text())["h"]
    convert(FIXTURE / "m2_tiny.pth", FIXTURE / "vocab.pkl", tmp / "run", num_heads=heads)
    inputs = np.load(FIXTURE / "inputs.npz")
    real = np.any(inputs["features"] != 0, axis=-1).sum(axis=1)  # 10, 9, 7 real regions
    with h5py.File(tmp / "features.h5", "w") as f:
        for row, n in enumerate(real):
            f[f"{100 + row}_features"] = inputs["features"][row, :n]
    return {"run": str(tmp / "run"), "h5": str(tmp / "features.h5"), "tmp": tmp,
            "expected": dict(np.load(FIXTURE / "expected.npz"))}
