"""One caption-length unit on every surface: tokens generated, <eos> included (transformers'
`max_new_tokens`; docs/guides/decoding.md#caption-length). On a captioner whose output never includes <eos>
(tests/helpers/fixed_token.py: "a" wins every step), a length of N gives exactly N tokens, all words, and the
caption "a" N times, with no <eos> forced: through `decoding.generate`'s `max_steps`,
`ImageCaptioner.generate`'s `max_length`, the run config's `data.max_caption_words + 1`, `tfcaption-caption
--max-steps` (run directory and export), the export's `max_steps` (`serving_default`) and the `sample`
signature's `max_length`. The samplers' `min_length` counts in the same unit."""

import json
import os

import numpy as np
import pytest

from tests.helpers.exports import TINY_MAX_STEPS, encode, random_rgb
from tfcaption.data.tokenizer import SpecialIds, Vocabulary

IDS = SpecialIds.of(Vocabulary)  # the word vocabulary's, as the test models' own

N = 3  # the caption length under test, below the tiny model's TINY_MAX_STEPS
WORD = "a"


@pytest.fixture(scope="module")
def one_word():
    from tests.helpers.fixed_token import one_word_captioner

    return one_word_captioner(WORD)


@pytest.fixture(scope="module")
def run_dir(one_word, tmp_path_factory):
    """A run directory of the one-word captioner whose config asks for N - 1 words (N decoding steps)."""
    from tfcaption.config import RunConfig
    from tfcaption.training.run_directory import RunDirectory

    model, vocab = one_word
    run = RunDirectory(str(tmp_path_factory.mktemp("length_run")))
    config = RunConfig.from_dict({"model": model.config.to_dict(), "data": {"max_caption_words": N - 1},
                                  "decode": {"beam_size": 2}})
    assert config.data.max_decode_steps == N
    config.save(run.config)
    vocab.save(run.vocab)
    model.save_weights(run.best_weights)
    return run.path


@pytest.fixture(scope="module")
def export_dir(one_word, tmp_path_factory):
    """The one-word captioner exported with max_steps N (beam 2)."""
    from tfcaption.export.saved_model import export_saved_model
    from tfcaption.models import ImageCaptioner

    captioner = ImageCaptioner.from_backbone(*one_word)
    return export_saved_model(captioner, str(tmp_path_factory.mktemp("length_export")), "words", beam_size=2,
                              max_steps=N)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("length_images") / "image.png"
    path.write_bytes(encode(random_rgb(32, 32)))
    return str(path)


def _words(length):
    return " ".join([WORD] * length)


def test_decoding_generate_max_steps_n_gives_n_word_tokens_with_every_sampler(one_word):
    from tfcaption.decoding import generate

    model, vocab = one_word
    images = np.zeros((2, *model.image_encoder.image_size, 3), np.float32)
    for sampler in ("greedy", 2, "top_k"):
        tokens = generate(model, images, sampler, max_steps=N, special_ids=IDS)["tokens"].numpy()
        assert tokens.tolist() == [[vocab.tokens.index(WORD)] * N] * 2, sampler


def test_image_captioner_generate_max_length_n_and_the_configs_default_give_n_words(run_dir, image_file):
    from tfcaption.models.image_captioner import ImageCaptioner

    captioner = ImageCaptioner.from_preset(run_dir)
    assert captioner.max_length == N  # data.max_caption_words + 1
    for sampler in ("greedy", "beam", "top_p"):
        details = captioner.generate(image_file, sampler=sampler, return_details=True)
        assert details["caption"] == _words(N) and len(details["tokens"]) == N, sampler
        assert captioner.generate(image_file, sampler=sampler, max_length=N - 1) == _words(N - 1)
        assert captioner.generate(image_file, sampler=sampler, max_length=TINY_MAX_STEPS) == _words(TINY_MAX_STEPS)


def test_export_max_steps_n_and_sample_max_length_give_n_tokens_without_a_forced_eos(one_word, export_dir,
                                                                                    image_file):
    import tensorflow as tf

    model, vocab = one_word
    with open(os.path.join(export_dir, "assets", "config.json")) as f:
        assert json.load(f)["serving"]["max_steps"] == N
    loaded = tf.saved_model.load(export_dir)
    images = tf.constant([open(image_file, "rb").read()] * 3)
    out = loaded.signatures["serving_default"](image_bytes=images)
    word, pad = vocab.tokens.index(WORD), vocab.tokens.index("<pad>")
    assert out["tokens"].numpy().tolist() == [[word] * N] * 3
    assert [c.decode() for c in out["caption"].numpy()] == [_words(N)] * 3
    settings = {"temperature": tf.constant([0.0, 1.0, 0.0]), "top_k": tf.constant([0, 0, 2]),
                "top_p": tf.constant([1.0, 0.9, 1.0]), "seed": tf.constant([1, 2, 3], tf.int64),
                "max_length": tf.constant([0, N, N - 1])}  # 0: the export's max_steps
    sampled = loaded.signatures["sample"](image_bytes=images, **settings)
    assert sampled["tokens"].numpy().tolist() == [[word] * N, [word] * N, [word] * (N - 1) + [pad]]
    assert [c.decode() for c in sampled["caption"].numpy()] == [_words(N), _words(N), _words(N - 1)]
    # the cut row scores its N - 1 tokens, as a decoding of N - 1 steps would
    full = loaded.signatures["sample"](image_bytes=images[:1], **{k: v[:1] for k, v in settings.items()})
    np.testing.assert_allclose(sampled["score"].numpy()[2], full["score"].numpy()[0] * (N - 1) / N, rtol=1e-5)


def test_caption_cli_max_steps_n_gives_n_words_from_a_run_and_an_export(run_dir, export_dir, image_file, capsys):
    from tfcaption.cli import caption as caption_cli

    def caption(*flags):
        assert caption_cli.main([image_file, "--json", *flags]) == 0
        return json.loads(capsys.readouterr().out)[0]["caption"]

    assert caption("--model", run_dir) == _words(N)
    assert caption("--model", run_dir, "--max-steps", str(N + 1)) == _words(N + 1)
    assert caption("--model", run_dir, "--sampler", "top_k", "--max-steps", str(N - 1)) == _words(N - 1)
    assert caption("--model", export_dir) == _words(N)
    assert caption("--model", export_dir, "--max-steps", str(N)) == _words(N)
    assert caption("--model", export_dir, "--sampler", "greedy", "--max-steps", str(N - 1)) == _words(N - 1)


@pytest.mark.parametrize("model, flags, message", [
    ("run", ["--max-steps", "0"], "--max-steps must be an integer >= 1, got '0'."),
    ("run", ["--max-steps", "x"], "--max-steps must be an integer >= 1, got 'x'."),
    ("run", ["--max-steps", "99"], f"must be an integer in 1..{TINY_MAX_STEPS + 1} (this model's position table)"),
    ("export", ["--max-steps", str(N + 1), "--sampler", "greedy"], f"this export decodes at most {N} tokens"),
    ("export", ["--max-steps", str(N - 1)], f"serving_default's beam search decodes the export's {N} tokens"),
], ids=["zero", "text", "past-the-table", "export-longer", "export-beam"])
def test_a_caption_length_a_model_cannot_decode_is_one_line_and_exit_2(model, flags, message, run_dir, export_dir,
                                                                        image_file, capsys):
    from tfcaption.cli import caption as caption_cli

    path = run_dir if model == "run" else export_dir
    assert caption_cli.main([image_file, "--model", path, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_evaluate_cli_checks_max_steps_as_caption_does(capsys):
    from tfcaption.cli import evaluate as evaluate_cli

    assert evaluate_cli.main(["--max-steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "tfcaption-evaluate: error: --max-steps must be an integer >= 1, got '0'."


def test_min_length_counts_in_the_same_unit(one_word):
    """min_length N on a captioner whose first choice is always <eos>: N tokens, <eos> the last of them."""
    from tests.helpers.fixed_token import eos_first_captioner
    from tfcaption import samplers
    from tfcaption.decoding import generate

    model, vocab = eos_first_captioner()
    eos = vocab.tokens.index("<eos>")
    images = np.zeros((1, *model.image_encoder.image_size, 3), np.float32)
    tokens = generate(model, images, samplers.GreedySampler(min_length=N), max_steps=N + 2, special_ids=IDS)["tokens"].numpy()[0]
    assert eos not in tokens[:N - 1].tolist() and tokens[N - 1] == eos
