"""An empty caption is a valid result: a model may end a caption at its first step (an undertrained one
often does). `caption`, `caption_with_attention` (run directories and exports), the attention figure and
TensorBoard's validation figures all handle it, driven by a model that emits <eos> first by construction
(tests/helpers/fixed_token.py). The REST answers and the page: tests/serving/test_empty_captions.py."""

import os

import numpy as np
import pytest

from tests.helpers.fixed_token import eos_first_captioner, eos_first_export, eos_first_run


@pytest.fixture(scope="module")
def images(tiny_shapes):
    from tfcaption.data.records import read_records

    return [r["image"] for r in read_records(tiny_shapes, "test").take(3).as_numpy_iterator()]


@pytest.fixture(scope="module", params=["run", "export"])
def predictor(request, tmp_path_factory):
    import tfcaption

    root = tmp_path_factory.mktemp("eos_first")
    path = eos_first_run(root / "run") if request.param == "run" else eos_first_export(root / "savedmodel")
    return tfcaption.load(path)


def test_caption_and_caption_with_attention_give_empty_captions(predictor, images):
    model_config_levels, side = 2, 4  # TINY_MODEL: 2 encoder layers, 32 px in 8 px patches
    plain = predictor.caption(images)
    assert [r["caption"] for r in plain] == ["", "", ""]
    assert all(np.isfinite(r["score"]) and r["score"] <= 0.0 for r in plain)
    assert predictor.caption(images[0]) == plain[0]

    attended = predictor.caption_with_attention(images)
    assert [r["caption"] for r in attended] == ["", "", ""]
    for result in attended:
        assert result["words"] == []
        assert result["attention"].shape == (0, side, side) and result["attention"].dtype == np.float32
        assert result["gates"].shape == (0, model_config_levels)
        assert result["image"].shape == (32, 32, 3) and result["image"].dtype == np.uint8
    single = predictor.caption_with_attention(images[0])
    assert single["caption"] == "" and single["words"] == []


def test_attention_figure_of_an_empty_caption_is_the_image_alone(predictor, images, tmp_path):
    from PIL import Image

    from tfcaption.viz.attention import attention_figure

    result = predictor.caption_with_attention(images[0])
    path = tmp_path / "empty.png"
    for show_gates in (False, True):
        figure = attention_figure(result, str(path), show_gates=show_gates, max_words=12)
        assert [ax.get_title() for ax in figure.axes] == ["image"]
        np.testing.assert_array_equal(figure.axes[0].get_images()[0].get_array(), result["image"])
        assert figure._suptitle.get_text() == "(empty caption)"
        with Image.open(path) as png:
            assert min(png.size) > 0


def test_tensorboard_validation_figures_of_empty_captions(tiny_shapes, tmp_path):
    import tensorflow as tf

    from tests.helpers.tensorboard import tensorboard_summaries
    from tfcaption.data import pipeline
    from tfcaption.decoding.captioning import caption_batches
    from tfcaption.training.summaries import validation_examples, write_validation_examples

    model, vocab = eos_first_captioner()
    results = caption_batches(model, vocab, pipeline.eval_dataset(tiny_shapes, "val", 4, 32), max_steps=6,
                              jit_compile=False, limit=4, return_attention=True)
    assert [r["caption"] for r in results] == [""] * 4
    examples = validation_examples(model, vocab, results, tiny_shapes, count=3)
    assert [e["words"] for e in examples] == [[], [], []]
    assert all(e["attention"].shape == (0, 4, 4) and e["references"] for e in examples)
    logs = str(tmp_path / "logs")
    with tf.summary.create_file_writer(logs).as_default():
        write_validation_examples(examples, step=1)
    images, texts = tensorboard_summaries(logs)
    assert sorted(images) == ["val_attention/0", "val_attention/1", "val_attention/2"]
    for png in images.values():
        assert min(tf.io.decode_png(png).numpy().shape[:2]) > 100
    rows = texts["val_examples"].splitlines()
    assert len(rows) == 2 + 3 and all("| *(empty caption)* |" in row for row in rows[2:])
    assert os.listdir(logs)
