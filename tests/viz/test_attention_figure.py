"""The attention figure, and whether attention lands on the object a word names."""

import json
import time

import numpy as np
import pytest

from tests.conftest import TINY_MODEL, tiny_train_args
from tests.viz.grounding import grounding_pairs, object_patches, summarise
from tfcaption.viz.attention import DPI, attention_figure, upsample

# A one-object shapes set and a small model: enough for words to find their object in about a minute.
GROUNDING_SHAPES = {"image_size": 64, "num_train": 2000, "num_val": 20, "num_test": 20, "num_novel": 8,
                    "num_shards": 2, "min_objects": 1, "max_objects": 1}
GROUNDING_MODEL = dict(TINY_MODEL, image_size=64, patch_size=8, hidden_dim=64, num_heads=2, key_dim=32,
                       intermediate_dim=128)


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


def test_max_words_and_wrapping(tmp_path):
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


def test_figure_from_a_shapes_image_of_a_trained_model(grounding_run, tmp_path):
    result = grounding_run["predictor"].caption_with_attention(grounding_run["examples"][0]["image"])
    path = tmp_path / "shapes.png"
    figure = attention_figure(result, str(path), show_gates=True)
    assert len(figure.axes) == 1 + 2 * len(result["words"])
    assert _png_size(path)[0] == round(figure.get_size_inches()[0] * DPI)


@pytest.fixture(scope="module")
def grounding_run(tmp_path_factory):
    """A small model trained ~1 minute on one-object scenes (its own dataset, not the session's tiny one)."""
    import tfcaption
    from tfcaption.cli import train as train_cli
    from tfcaption.data.shapes import ShapesConfig, generate_example

    root = tmp_path_factory.mktemp("grounding")
    run = str(root / "run")
    args = tiny_train_args(run, str(root / "data"), str(root / "savedmodel"), epochs=3)
    overrides = [f"model.{k}={v}" for k, v in GROUNDING_MODEL.items()] + [
        f"train.dataset_options={json.dumps(GROUNDING_SHAPES)}", "train.batch_size=32", "train.warmup_steps=100",
        "train.steps_per_epoch=150", "train.eval_beam_size=1", "train.export=false",
    ]
    for o in overrides:
        args += ["--set", o]
    start = time.time()
    assert train_cli.main(args) == 0
    seconds = time.time() - start
    config = ShapesConfig(**GROUNDING_SHAPES)
    examples = [generate_example(config, "test", i) for i in range(20)]
    return {"predictor": tfcaption.load(run, beam_size=1), "examples": examples, "train_seconds": seconds}


def test_words_attend_to_the_object_they_name(grounding_run):
    """Colour and shape words look at their object's patches more than at the background.

    Measured on 20 one-object test scenes: the mean attention on the object's patches against
    the mean on patches no object touches, averaged over every colour/shape word generated.
    """
    predictor, examples = grounding_run["predictor"], grounding_run["examples"]
    results = predictor.caption_with_attention([e["image"] for e in examples])
    pairs = [p for r, e in zip(results, examples) for p in grounding_pairs(r, e["scene"])]
    stats = summarise(pairs)
    print(json.dumps(dict(stats, train_seconds=grounding_run["train_seconds"])))
    assert stats["pairs"] >= 20
    assert stats["ratio"] > 2.0
    assert stats["fraction_object_beats_background"] > 0.8
