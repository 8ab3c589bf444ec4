"""The attention figure, and whether attention lands on the object a word names."""

import json

import numpy as np
import pytest

from tests.helpers.grounding import grounding_pairs, object_patches
from tfcaption.viz.attention import DPI, attention_figure, upsample

def _fake_result(words=("a", "red", "circle"), rows=4, cols=4, size=(32, 48), levels=2):
    rng = np.random.default_rng(0)
    attention = rng.random((len(words), rows, cols)).astype(np.float32)
    attention /= attention.sum(axis=(1, 2), keepdims=True)
    return {"caption": " ".join(words), "score": -1.0, "words": list(words), "attention": attention,
            "gates": rng.random((len(words), levels)).astype(np.float32),
            "image": rng.integers(0, 255, size + (3,), dtype=np.uint8)}


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


def test_upsample_nearest_repeats_patches_and_bilinear_stays_in_range():
    grid = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(upsample(grid, 4, 6, "nearest"), np.kron(grid, np.ones((2, 2))))
    smooth = upsample(grid, 20, 30)
    assert smooth.shape == (20, 30)
    assert smooth.min() >= grid.min() and smooth.max() <= grid.max()
    assert smooth[0, 0] == grid[0, 0] and smooth[-1, -1] == grid[-1, -1]  # corners clamp to corner patches
    with pytest.raises(ValueError, match="nearest"):
        upsample(grid, 4, 6, "cubic")


def test_figure_has_a_panel_per_word_and_writes_a_png(tmp_path):
    result = _fake_result()
    path = tmp_path / "figure.png"
    figure = attention_figure(result, str(path))
    assert len(figure.axes) == 1 + 3
    assert [ax.get_title() for ax in figure.axes] == ["image", "a", "red", "circle"]
    width, height = _png_size(path)
    inches = figure.get_size_inches()
    assert (width, height) == (round(inches[0] * DPI), round(inches[1] * DPI))
    assert width > height  # one row of four square-ish panels


def test_gates_add_one_chart_per_word_with_the_gate_values(tmp_path):
    result = _fake_result()
    figure = attention_figure(result, str(tmp_path / "gates.png"), show_gates=True)
    assert len(figure.axes) == 1 + 3 + 3
    charts = figure.axes[4:]
    for chart, gates in zip(charts, result["gates"]):
        np.testing.assert_allclose([bar.get_height() for bar in chart.patches], gates)


def test_max_words_caps_the_panels_and_many_words_wrap_onto_rows(tmp_path):
    words = tuple(f"w{i}" for i in range(13))
    figure = attention_figure(_fake_result(words), max_words=8)
    assert len(figure.axes) == 1 + 8
    tall = attention_figure(_fake_result(words), str(tmp_path / "tall.png"))
    width, height = _png_size(tmp_path / "tall.png")
    assert len(tall.axes) == 14 and height > width / 3  # 14 panels wrap onto three rows of six


def test_heatmap_peaks_where_the_attention_does():
    result = _fake_result(words=("red",), rows=4, cols=4, size=(64, 64))
    result["attention"][:] = 0.0
    result["attention"][0, 3, 1] = 1.0  # bottom row, second column
    figure = attention_figure(result, interpolation="nearest")
    heat = figure.axes[1].get_images()[1].get_array()
    assert heat.shape == (64, 64)
    r, c = np.unravel_index(np.argmax(heat), heat.shape)
    assert 48 <= r < 64 and 16 <= c < 32


def test_object_patches_cover_the_disc():
    # 16-px cells; the centre (20, 20) is 4 px from the lines x = 16 and y = 16 and 5.66 px from their crossing.
    mask = object_patches({"x": 20.0, "y": 20.0, "radius": 5.0}, 64, 64, 4, 4)
    expected = np.zeros((4, 4), bool)
    expected[0:2, 1] = expected[1, 0] = True  # crosses both lines but not the corner of cell (0, 0)
    np.testing.assert_array_equal(mask, expected)
    mask = object_patches({"x": 20.0, "y": 20.0, "radius": 6.0}, 64, 64, 4, 4)
    expected[0, 0] = True
    np.testing.assert_array_equal(mask, expected)


# `tiny_predictor` (tests/conftest.py): the session's tiny run (one epoch, seconds), loaded greedily: enough
# for real captions, gates and maps, not for grounding.


def test_figure_of_a_trained_model_on_a_shapes_image_has_a_panel_per_word(tiny_predictor, tiny_shapes, tmp_path):
    from tfcaption.data.records import read_records

    record = next(read_records(tiny_shapes, "test").as_numpy_iterator())
    result = tiny_predictor.caption_with_attention(record["image"])
    path = tmp_path / "shapes.png"
    figure = attention_figure(result, str(path), show_gates=True)
    words = result["words"]
    assert len(figure.axes) == 1 + 2 * len(words)
    assert [ax.get_title() for ax in figure.axes[:1 + len(words)]] == ["image"] + words
    width, height = _png_size(path)
    inches = figure.get_size_inches()
    assert (width, height) == (round(inches[0] * DPI), round(inches[1] * DPI))
    np.testing.assert_array_equal(figure.axes[0].get_images()[0].get_array(), result["image"])
    # Each grounding statistic the issue note reports is computable on this scene.
    scene = json.loads(record["scene"])
    masks = [object_patches(o, scene["width"], scene["height"], *result["attention"].shape[1:])
             for o in scene["objects"]]
    assert all(m.any() for m in masks)  # every object touches at least one patch
    for inside, background, mass, share in grounding_pairs(result, scene):
        assert 0.0 <= mass <= 1.0 and 0.0 < share < 1.0


# Grounding ("the object a word names gets more attention than the background") is NOT asserted
# here: a model trained for a couple of minutes on two CPU cores has not learned to look yet (a
# tiny model trained 110 s on one-object scenes captioned every image "a purple hexagon" with
# uniform attention, object/background ratio 1.00). It is measured on the default 12-minute run
# instead (see tests/viz/grounding.py and the issue note): ratio 8.9, 99.8% of words.


def test_caption_cli_draws_one_figure_per_image_and_skips_bad_files(tiny_predictor, tiny_shapes, tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli
    from tfcaption.data.records import read_records

    records = list(read_records(tiny_shapes, "test").take(2).as_numpy_iterator())
    first, second, bad = tmp_path / "first.png", tmp_path / "second.png", tmp_path / "notes.txt"
    first.write_bytes(records[0]["image"])
    second.write_bytes(records[1]["image"])
    bad.write_text("not an image")
    out = tmp_path / "figs" / "att.png"
    out.parent.mkdir()
    code = caption_cli.main([str(first), str(bad), str(second), "--model", tiny_predictor.path,
                             "--attention", str(out), "--gates", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.txt" in captured.err and captured.err.count("\n") == 1
    results = json.loads(captured.out)
    expected = [str(tmp_path / "figs" / "att-first.png"), str(tmp_path / "figs" / "att-second.png")]
    assert [r["attention_figure"] for r in results] == expected
    # The figures show the captions the command prints without --attention: the run's own decoding (its
    # beam size), which records the attention along the caption it returns.
    import tfcaption

    plain = tfcaption.load(tiny_predictor.path).caption([str(first), str(second)])
    assert [r["caption"] for r in results] == [p["caption"] for p in plain]
    for path in expected:
        width, height = _png_size(path)
        assert width > 0 and height > 0


def test_caption_cli_single_image_writes_the_given_path(tiny_predictor, tiny_shapes, tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli
    from tfcaption.data.records import read_records

    image = tmp_path / "one.png"
    image.write_bytes(next(read_records(tiny_shapes, "test").as_numpy_iterator())["image"])
    out = tmp_path / "one-attention.png"
    assert caption_cli.main([str(image), "--model", tiny_predictor.path, "--attention", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(str(image) + ": ")
    assert lines[1] == f"  attention figure: {out}"
    assert out.exists()


def test_caption_cli_attention_flag_errors_are_one_line(tmp_path, capsys):
    from tfcaption.cli import caption as caption_cli

    assert caption_cli.main(["x.png", "--gates"]) == 2
    assert caption_cli.main(["x.png", "--attention", "a.png", "--features", "f.h5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--attention" in err[0] and "--features" in err[1]
