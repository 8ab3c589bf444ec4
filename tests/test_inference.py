"""tfcaption.load(...).caption / caption_with_attention on a tiny trained run directory (the session's
`tiny_run`, tests/conftest.py) and its export.

One epoch without determinism learns different things on different machines: it may caption an image with
no words at all. So the assertions here hold for any valid output (an empty caption included), and the
checks that need words also run on `one_word`, a run directory whose captions are known by construction
(tests/helpers/fixed_token.py: every caption is "a" six times). Empty captions: tests/test_empty_captions.py."""

import io

import numpy as np
import pytest

from tests.helpers.exports import TINY_MAX_STEPS


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run["run"]


@pytest.fixture(scope="module")
def predictor(tiny_predictor):
    """The run directory loaded greedily (beam size 1)."""
    return tiny_predictor


@pytest.fixture(scope="module")
def one_word(tmp_path_factory):
    """A run directory whose greedy captions are "a a a a a a" (`TINY_MAX_STEPS` words), loaded greedily."""
    import tfcaption
    from tests.helpers.fixed_token import one_word_captioner, write_run

    return tfcaption.load(write_run(tmp_path_factory.mktemp("one_word") / "run", *one_word_captioner("a")), 1)


@pytest.fixture(params=["trained", "one_word"])
def any_predictor(request):
    """The trained tiny run (whatever its epoch learnt) and the one-word run (a known number of words)."""
    return request.getfixturevalue("predictor" if request.param == "trained" else "one_word")


@pytest.fixture(scope="module")
def images(tiny_shapes, tmp_path_factory):
    """The same three test images as a path, encoded bytes and a uint8 array."""
    from PIL import Image

    from tfcaption.data.records import read_records

    data = [r["image"] for r in read_records(tiny_shapes, "test").take(3).as_numpy_iterator()]
    path = tmp_path_factory.mktemp("images") / "first.png"
    path.write_bytes(data[0])
    array = np.array(Image.open(io.BytesIO(data[2])).convert("RGB"))
    return {"inputs": [str(path), data[1], array], "bytes": data}


def test_attention_captions_match_greedy_captions_for_every_input_kind(predictor, images):
    plain = predictor.caption(images["inputs"])
    attended = predictor.caption_with_attention(images["inputs"])
    # The same images given as bytes: paths and arrays must not change what the model sees.
    from_bytes = predictor.caption_with_attention(images["bytes"])
    assert [r["caption"] for r in attended] == [r["caption"] for r in plain]
    assert [r["caption"] for r in attended] == [r["caption"] for r in from_bytes]
    for a, b, p in zip(attended, from_bytes, plain):
        np.testing.assert_allclose(a["score"], p["score"], atol=1e-4)
        np.testing.assert_allclose(a["attention"], b["attention"], atol=1e-5)
        np.testing.assert_array_equal(a["image"], b["image"])


@pytest.mark.parametrize("decoding", [{"beam_size": 3}, {"sampler": "top_p"}], ids=["beam3", "top_p"])
def test_caption_with_attention_shows_the_caption_that_caption_returns(tiny_run, images, decoding):
    """Attention is recorded by the sampler `caption` uses (a beam's own ancestry), so both calls agree."""
    import tfcaption
    from tfcaption import samplers

    if "sampler" in decoding:  # a seeded random sampler draws the same caption in both calls
        decoding = {"sampler": samplers.get(decoding["sampler"], p=0.95, seed=4)}
    predictor = tfcaption.load(tiny_run["run"], **decoding)
    plain = predictor.caption(images["bytes"])
    attended = predictor.caption_with_attention(images["bytes"])
    assert [r["caption"] for r in attended] == [r["caption"] for r in plain]
    for a, p in zip(attended, plain):
        np.testing.assert_allclose(a["score"], p["score"], atol=1e-5)
        assert len(a["attention"]) == len(a["words"]) == len(p["caption"].split())
        np.testing.assert_allclose(a["attention"].sum(axis=(1, 2)), 1.0, atol=1e-5)


def test_single_image_gives_one_dict(predictor, images):
    single = predictor.caption_with_attention(images["bytes"][0])
    assert isinstance(single, dict)
    assert single["caption"] == predictor.caption(images["bytes"][0])["caption"]


def test_attention_maps_are_distributions_one_per_caption_word(any_predictor, images):
    predictor = any_predictor
    model = predictor.backend.model
    side = model.config.image_encoder.image_size // model.config.image_encoder.patch_size
    levels = model.config.encoder.num_levels
    for result in predictor.caption_with_attention(images["bytes"]):
        words = result["words"]
        if "one_word" in predictor.path:
            assert words == ["a"] * TINY_MAX_STEPS
        assert " ".join(words) == result["caption"]
        assert "<eos>" not in words and "<pad>" not in words
        assert result["attention"].shape == (len(words), side, side)
        assert result["gates"].shape == (len(words), levels)
        np.testing.assert_allclose(result["attention"].sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert (result["attention"] >= 0).all()
        assert ((result["gates"] >= 0) & (result["gates"] <= 1)).all()  # sigmoid gates
        assert result["image"].shape == model.image_encoder.example_shape
        assert result["image"].dtype == np.uint8


def test_combined_map_is_the_gate_weighted_level_mix(any_predictor, images):
    """Recompute from the raw greedy search's per-level maps: sum_n gate_n * attention_n, renormalised (for
    every word; a caption may have none)."""
    import tensorflow as tf

    from tfcaption.data.pipeline import decode_image
    from tfcaption.decoding import decode
    from tfcaption.samplers import GreedySampler

    predictor = any_predictor
    model = predictor.backend.model
    batch = tf.stack([decode_image(tf.constant(b), model.image_encoder.image_size) for b in images["bytes"]])
    raw = decode(model, *model.encode(batch), GreedySampler(), predictor.backend.max_steps, return_attention=True,
                 special_ids=predictor.backend.vocab)
    level, gates = raw["attention"].numpy()[:, 0], raw["gates"].numpy()[:, 0]
    for i, result in enumerate(predictor.caption_with_attention(images["bytes"])):
        n = len(result["words"])
        if "one_word" in predictor.path:  # the known captions: the check is never vacuous
            assert n == TINY_MAX_STEPS
        expected = np.einsum("tnp,tn->tp", level[i, :n], gates[i, :n])
        expected /= expected.sum(-1, keepdims=True)
        # (n, P): n may be 0, so the shape is spelled out, not inferred with -1
        np.testing.assert_allclose(result["attention"].reshape(expected.shape), expected, atol=1e-4)
        np.testing.assert_allclose(result["gates"], gates[i, :n], atol=1e-5)


def test_decoded_image_is_the_input_at_model_size(predictor, tiny_shapes):
    """Shapes images are already at the model's size, so the drawn image is the file's pixels."""
    from PIL import Image

    from tfcaption.data.records import read_records

    data = next(read_records(tiny_shapes, "test").as_numpy_iterator())["image"]
    pixels = np.array(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    result = predictor.caption_with_attention(data)
    assert np.abs(result["image"].astype(int) - pixels).max() <= 1


def test_bad_input_is_named(predictor, tmp_path):
    from tfcaption.inference import ImageError

    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="notes.txt"):
        predictor.caption_with_attention([str(bad)])


def test_saved_model_without_the_signature_says_it_predates_attention(run_dir, tmp_path):
    """A SavedModel with only serving_default (what exports wrote before attention) fails in one clear line."""
    import tensorflow as tf

    from tfcaption.inference import AttentionUnavailableError, CaptionPredictor

    class OldExport(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            n = tf.shape(image_bytes)[0]
            return {"caption": tf.fill([n], "x"), "score": tf.zeros([n]), "tokens": tf.zeros([n, 1], tf.int32)}

    module = OldExport()
    path = str(tmp_path / "old" / "1")
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    predictor = CaptionPredictor(path)
    png = tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy()
    assert predictor.caption(png)["caption"] == "x"
    with pytest.raises(AttentionUnavailableError, match="predates attention"):
        predictor.caption_with_attention(png)


def test_saved_model_attention_matches_the_run_directory(tiny_run, predictor, images):
    import json
    import os

    import tensorflow as tf

    # The run's own export (tfcaption-train wrote it from the same weights), decoding as far as the run does,
    # with its beam search (beam size 2), which the export's attention signature follows.
    path = tiny_run["export"]
    with open(os.path.join(path, "assets", "config.json")) as f:
        serving = json.load(f)["serving"]
    assert serving["max_steps"] == predictor.backend.max_steps and serving["beam_size"] == 2
    assert "caption_with_attention" in tf.saved_model.load(path).signatures  # every export has it
    import tfcaption

    served = tfcaption.load(path).caption_with_attention(images["bytes"])
    local = tfcaption.load(tiny_run["run"], beam_size=serving["beam_size"]).caption_with_attention(images["bytes"])
    for s, loc in zip(served, local):
        assert s["words"] == loc["words"] and s["caption"] == loc["caption"]
        np.testing.assert_allclose(s["attention"], loc["attention"], atol=1e-4)
        np.testing.assert_allclose(s["gates"], loc["gates"], atol=1e-4)
        np.testing.assert_array_equal(s["image"], loc["image"])


def test_attention_over_a_grid_with_a_class_token_drops_it_and_renormalises_the_patches():
    from tfcaption.decoding.captioning import attention_results

    rng = np.random.default_rng(0)
    weights = rng.random((1, 4, 1 + 2 * 3)).astype(np.float32)  # 4 steps over [class] + a 2 x 3 grid
    weights /= weights.sum(-1, keepdims=True)
    tokens = np.array([[5, 6, 3, 0]])  # two words, then <eos> (id 3)
    vocab = ["<pad>", "<unk>", "<bos>", "<eos>", "x", "a", "b"]
    (result,) = attention_results(["a b"], [0.0], tokens, weights, None, None, (2, 3, 1), vocab, eos_id=3)
    assert result["words"] == ["a", "b"] and result["gates"] is None
    patches = weights[0, :2, 1:]
    np.testing.assert_allclose(result["attention"], (patches / patches.sum(-1, keepdims=True)).reshape(2, 2, 3),
                               rtol=1e-6)
