"""`--sampler --temperature --top-k --top-p --seed` of tfcaption-caption and tfcaption-evaluate."""

import json

import pytest

from tfcaption.cli import caption as caption_cli
from tfcaption.cli import evaluate as evaluate_cli
from tfcaption.cli.sampling import sampler_from_args


def _sampler(*flags, beam_size=None):
    args = caption_cli.build_parser().parse_args(list(flags))
    return sampler_from_args(args, beam_size)


def test_flags_build_the_sampler_they_name():
    assert _sampler() is None  # no flag: the run's beam size decides
    top_p = _sampler("--top-p", "0.8", "--top-k", "20", "--temperature", "0.7", "--seed", "5")
    assert type(top_p).__name__ == "TopPSampler"
    assert (top_p.p, top_p.k, top_p.temperature, top_p.seed) == (0.8, 20, 0.7, 5)
    assert type(_sampler("--top-k", "4")).__name__ == "TopKSampler" and _sampler("--top-k", "4").k == 4
    assert type(_sampler("--seed", "3")).__name__ == "RandomSampler"
    assert _sampler("--sampler", "beam", beam_size=5).num_beams == 5
    assert type(_sampler("--sampler", "greedy")).__name__ == "GreedySampler"


@pytest.mark.parametrize("main", [caption_cli.main, evaluate_cli.main], ids=["caption", "evaluate"])
@pytest.mark.parametrize("flags, message", [
    (["--sampler", "nucleus"], "--sampler must be one of beam, generate_beam, greedy, random, top_k, top_p, got 'nucleus'."),
    (["--temperature", "abc"], "--temperature must be a number > 0, got 'abc'."),
    (["--temperature", "0"], "--temperature must be a number > 0, got '0'."),
    (["--top-k", "0"], "--top-k must be an integer >= 1, got '0'."),
    (["--top-p", "1.5"], "--top-p must be a number in (0, 1], got '1.5'."),
    (["--seed", "x"], "--seed must be an integer, got 'x'."),
    (["--sampler", "greedy", "--seed", "1"], "--seed applies to the random samplers"),
    (["--sampler", "random", "--top-p", "0.5"], "--top-p applies to --sampler top_p, not random."),
    (["--top-p", "0.5", "--beam-size", "3"], "--beam-size applies to --sampler beam, not top_p."),
], ids=["name", "temperature-text", "temperature-zero", "top-k", "top-p", "seed", "seed-greedy", "top-p-random",
        "beam-size"])
def test_a_bad_value_is_one_line_and_exit_2(main, flags, message, capsys, tmp_path):
    assert main(["--model", str(tmp_path / "no-run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_caption_cli_with_a_seeded_sampler_prints_the_same_captions_twice(tiny_run, tiny_shapes, tmp_path, capsys):
    from tfcaption.data.records import read_records

    paths = []
    for i, record in enumerate(read_records(tiny_shapes, "test").take(3).as_numpy_iterator()):
        path = tmp_path / f"image{i}.png"
        path.write_bytes(record["image"])
        paths.append(str(path))
    flags = ["--model", tiny_run["run"], "--json", "--sampler", "top_p", "--top-p", "0.95", "--seed", "2", *paths]
    outputs = []
    for _ in range(2):
        assert caption_cli.main(flags) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 3
    assert all(r["score"] <= 0 for r in outputs[0])


def test_evaluate_cli_with_a_seeded_sampler_scores_the_same_captions_twice(tiny_run, tmp_path, capsys):
    predictions = []
    for i in range(2):
        output = str(tmp_path / f"evaluation{i}.json")
        code = evaluate_cli.main(["--model", tiny_run["run"], "--splits", "test", "--no-java", "--no-blind",
                                  "--sampler", "top_k", "--top-k", "3", "--seed", "1", "--output", output])
        assert code == 0, capsys.readouterr().err
        with open(output) as f:
            predictions.append(json.load(f)["predictions"]["test"])
    assert predictions[0] == predictions[1] and len(predictions[0]) > 0
