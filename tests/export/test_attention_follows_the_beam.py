"""An export's `caption_with_attention` decodes with the export's own beam search and records the attention
along the best beam, so it returns exactly the caption, score and tokens of `serving_default` (issue 29):
checked on the trained tiny run's export (`tiny_run`, beam size 2) in a TensorFlow-only process and through
`tfcaption.load`. Exports written before (serving config `"attention_decoding": "greedy"`) keep their greedy
attention signature."""

import json
import os

import pytest

from tests.helpers.paths import REPO_ROOT

LEGACY_EXPORT = f"{REPO_ROOT}/tests/fixtures/legacy_v1/export/pixels/1"
IMAGES = 8


@pytest.fixture(scope="module")
def images():
    from tests.serving.servers import shapes_png

    return [shapes_png(i, size=32) for i in range(IMAGES)]


def serving_config(export):
    with open(os.path.join(export, "assets", "config.json")) as f:
        return json.load(f)["serving"]


def test_the_tiny_runs_export_searches_with_more_than_one_beam_and_says_the_attention_follows_it(tiny_run):
    serving = serving_config(tiny_run["export"])
    assert serving["beam_size"] == 2
    assert serving["attention_decoding"] == "serving_default"


def test_caption_with_attention_returns_serving_defaults_caption_score_and_tokens_in_a_tensorflow_only_process(
        tiny_run, tensorflow_only, images):
    best = tensorflow_only.predict(tiny_run["export"], images, "serving_default")
    attended = tensorflow_only.predict(tiny_run["export"], images, "caption_with_attention")
    assert attended["modules"] == []
    assert attended["captions"] == best["captions"]
    assert attended["scores"] == best["scores"]  # bit for bit: the same search, attention recorded beside it
    assert attended["tokens"] == best["tokens"]


def test_load_of_the_export_caption_with_attention_returns_the_caption_and_score_that_caption_returns(
        tiny_run, images):
    import numpy as np

    import tfcaption

    predictor = tfcaption.load(tiny_run["export"])
    captioned = predictor.caption(images)
    attended = predictor.caption_with_attention(images)
    assert [r["caption"] for r in attended] == [r["caption"] for r in captioned]
    assert [r["score"] for r in attended] == [r["score"] for r in captioned]
    for result in attended:  # one map per word of that caption, over the 4 x 4 patch grid
        assert result["attention"].shape == (len(result["words"]), 4, 4)
        np.testing.assert_allclose(result["attention"].sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_an_export_with_the_greedy_attention_signature_still_loads_and_decodes_it_greedily():
    import tfcaption

    assert serving_config(LEGACY_EXPORT)["attention_decoding"] == "greedy"
    assert serving_config(LEGACY_EXPORT)["beam_size"] == 2
    with open(f"{REPO_ROOT}/tests/fixtures/legacy_v1/image.png", "rb") as f:
        image = f.read()
    attended = tfcaption.load(LEGACY_EXPORT).caption_with_attention(image)
    greedy = tfcaption.load(f"{REPO_ROOT}/tests/fixtures/legacy_v1/run_pixels", beam_size=1).caption(image)
    assert attended["caption"] == greedy["caption"]
    assert attended["score"] == pytest.approx(greedy["score"], rel=1e-4, abs=1e-4)


def test_tfcaption_caption_with_attention_on_the_export_prints_the_caption_it_prints_without(
        tiny_run, images, tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli

    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(str(tmp_path / f"scene{i}.png"))
        with open(paths[-1], "wb") as f:
            f.write(image)
    printed = []
    for extra in ([], ["--attention", str(tmp_path / "att.png")]):
        assert caption_cli.main(paths + ["--model", tiny_run["export"], "--json"] + extra) == 0
        printed.append(json.loads(capsys.readouterr().out))
    plain, attended = printed
    assert [(r["caption"], r["score"]) for r in attended] == [(r["caption"], r["score"]) for r in plain]
    assert all(os.path.exists(r["attention_figure"]) for r in attended)
