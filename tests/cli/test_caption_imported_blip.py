"""tfcaption-caption on an imported BLIP run (issue 30, item 4): `--beam-size` runs transformers' beam search (the
run's `decode.beam_search`), `--prompt` continues BLIP's conditional captioning prompt, `--max-steps` counts the
tokens after it; through the command line the token ids and captions are transformers' `generate()` ones.

The parity cases run in one subprocess: it calls the console script's `main` once per (checkpoint, beam size,
prompt) case with the argv a shell would give it and collects each call's stdout, so the eight calls share one
TensorFlow start.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.exports import TINY_MAX_STEPS
from tests.helpers.fixed_token import one_word_captioner, write_run
from tests.helpers.hf_fixture import BLIP_MODELS, assert_close, expected, images, manifest
from tests.helpers.paths import REPO_ROOT
from tfcaption.cli import caption as caption_cli

NEW_TOKENS = 8  # the fixtures' max_new_tokens
CASES = {"greedy": ["--beam-size", "1"], "greedy_prompt": ["--beam-size", "1", "--prompt", "a picture of"],
         "beam3": ["--beam-size", "3"], "beam3_prompt": ["--beam-size", "3", "--prompt", "a picture of"]}

DRIVER = """
import contextlib, io, json, sys
from tfcaption.cli.caption import main
calls = []
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    calls.append({"code": code, "stdout": out.getvalue()})
print(json.dumps(calls))
"""




@pytest.fixture(scope="module")
def cli_outputs(blip_runs):
    """{(checkpoint, case): the JSON list tfcaption-caption printed} for every BLIP fixture and case of CASES."""
    paths = [str(path) for path in images()]
    keys = [(name, case) for name in BLIP_MODELS for case in CASES]
    argvs = [[*paths, "--model", blip_runs(name), "--max-steps", str(NEW_TOKENS), "--json", *CASES[case]]
             for name, case in keys]
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    calls = json.loads(done.stdout.strip().splitlines()[-1])
    assert [call["code"] for call in calls] == [0] * len(keys), done.stderr[-2000:]
    return {key: json.loads(call["stdout"]) for key, call in zip(keys, calls)}


def _reference_tokens(row, eos_id):
    """transformers' row as tfcaption-caption prints it: [DEC] left out, up to and including [SEP]."""
    row = row[1:].tolist()
    return row[:row.index(eos_id) + 1] if eos_id in row else row


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_caption_cli_gives_transformers_ids_and_captions_greedy_and_beam3_with_and_without_the_prompt(cli_outputs,
                                                                                                        name):
    outputs = {case: cli_outputs[name, case] for case in CASES}
    generation = manifest()["models"][name]["generation"]
    eos_id = manifest()["models"][name]["token_ids"]["sep"]
    for case, results in outputs.items():
        reference = expected(name)[f"generate_{case}"]
        assert [r["image"] for r in results] == [str(path) for path in images()]
        assert [r["tokens"] for r in results] == [_reference_tokens(row, eos_id) for row in reference], case
        assert [r["caption"] for r in results] == generation["captions"][case], case
        if case.startswith("beam3"):  # transformers' sequences_scores: its length-normalised beam scores
            assert_close([r["score"] for r in results], expected(name)[f"generate_{case}_sequences_scores"])
    for results in (outputs["greedy_prompt"], outputs["beam3_prompt"]):
        assert all(r["caption"].startswith("a picture of") for r in results)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    """A word-vocabulary run whose every generated token is "a" (tests/helpers/fixed_token.py)."""
    return write_run(tmp_path_factory.mktemp("word") / "run", *one_word_captioner("a"))


def test_a_prompt_on_a_word_vocabulary_run_starts_every_caption(word_run, capsys):
    image = str(images()[0])
    assert caption_cli.main([image, "--model", word_run, "--prompt", "Red circle", "--max-steps", "3",
                             "--beam-size", "1", "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["caption"] == "red circle a a a"  # the prompt normalised as the vocabulary's captions are
    assert len(result["tokens"]) == 2 + 3


def test_the_default_length_after_a_prompt_is_the_runs_length_less_the_prompt(word_run, capsys):
    """As transformers' max_length (which counts the prompt), unlike --max-steps (its max_new_tokens)."""
    assert caption_cli.main([str(images()[0]), "--model", word_run, "--prompt", "two red", "--beam-size", "1",
                             "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["caption"].split() == ["two", "red"] + ["a"] * (TINY_MAX_STEPS - 2)


@pytest.mark.parametrize("flags, message", [
    (["--prompt", "a zebra"], "the prompt 'a zebra' has words outside this model's vocabulary: zebra."),
    (["--prompt", "a", "--attention", "out.png"], "--attention draws captions decoded without a prompt"),
    (["--prompt", "a", "--features", "x.h5"], "--prompt continues captions of images"),
], ids=["unknown-word", "attention", "features"])
def test_a_prompt_the_run_cannot_take_is_one_line_and_exit_2(word_run, flags, message, capsys):
    assert caption_cli.main([str(images()[0]), "--model", word_run, *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tfcaption-caption: error: ") and message in err[0], err


def test_a_prompt_too_long_for_the_position_table_is_one_line(blip_runs, capsys):
    positions = manifest()["models"]["blip_b"]["config"]["text_config"]["max_position_embeddings"]
    assert caption_cli.main([str(images()[0]), "--model", blip_runs("blip_b"), "--prompt", "a picture of",
                             "--max-steps", str(positions)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"exceed this model's {positions} positions" in err[0], err


def test_reference_token_rows_are_cut_after_sep():
    assert _reference_tokens(np.array([37, 5, 0, 3, 0, 0]), 3) == [5, 0, 3]
    assert _reference_tokens(np.array([37, 5, 6]), 3) == [5, 6]
