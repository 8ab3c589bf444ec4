"""`tfcaption.ImageCaptioner`: from_preset (name, run directory, .keras), generate on every input kind,
sampler precedence, fit, and the .keras round trip."""

import io
import os

import numpy as np
import pytest

import tfcaption
from tfcaption.models import PRESETS, CaptionerBackbone, CaptionerPreprocessor, ImageCaptioner
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny import TINY_SIZES

WORDS = ["<unk>", "<pad>", "<bos>", "<eos>", "a", "red", "blue", "circle", "square"]
TINY_SMALL = dict(TINY_SIZES, image_encoder={"image_size": 32, "patch_size": 8}, encoder={"num_layers": 1},
                  decoder={"num_layers": 1})


@pytest.fixture(scope="module")
def images(tiny_shapes, tmp_path_factory):
    """Three test images, as encoded bytes, and as a path, bytes, a uint8 array and a larger uint8 array."""
    from PIL import Image

    from tfcaption.data.records import read_records

    data = [r["image"] for r in read_records(tiny_shapes, "test").take(4).as_numpy_iterator()]
    path = tmp_path_factory.mktemp("images") / "first.png"
    path.write_bytes(data[0])
    array = np.array(Image.open(io.BytesIO(data[2])).convert("RGB"))
    larger = np.array(Image.open(io.BytesIO(data[3])).convert("RGB").resize((48, 48)))
    return {"bytes": data[:3], "inputs": [str(path), data[1], array, larger], "larger": larger}


@pytest.fixture(scope="module")
def run_captioner(tiny_run):
    return ImageCaptioner.from_preset(tiny_run["run"])


def test_presets_list_every_preset_with_metadata():
    presets = ImageCaptioner.presets
    assert set(presets) == set(PRESETS)
    assert presets["m2_regions"]["input"] == "features" and presets["small"]["input"] == "images"
    assert presets["cptr_small"]["decoder"] == "transformer"
    assert all(entry["description"] for entry in presets.values())


def test_from_preset_name_has_the_preset_sizes_and_takes_a_vocabulary_now_or_later():
    captioner = ImageCaptioner.from_preset("small", vocabulary=WORDS, **TINY_SMALL)
    assert isinstance(captioner, tfcaption.ImageCaptioner)
    config = captioner.backbone.config
    assert (config.vocab_size, config.hidden_dim, config.decoder.type) == (len(WORDS), 32, "meshed")
    assert captioner.preprocessor.image_size == 32 and captioner.preprocessor.eos_id == 3
    later = ImageCaptioner.from_preset("small", **TINY_SMALL)
    assert later.backbone is None
    with pytest.raises(ValueError, match="no vocabulary yet"):
        later.generate(np.zeros((32, 32, 3), np.uint8))
    vocab = later.adapt(["A red circle.", "a blue square"])
    assert sorted(vocab.tokens) == sorted(WORDS) and later.backbone.config.vocab_size == len(WORDS)
    regions = ImageCaptioner.from_preset("m2_regions", vocabulary=WORDS, **TINY_SIZES,
                                         image_encoder={"feature_dim": 12})
    assert regions.preprocessor.input_key == "features"
    assert len(regions.generate([np.ones((5, 12)), np.ones((3, 12))], max_length=4)) == 2


def test_from_preset_refuses_unknown_names_and_exports(tiny_run):
    with pytest.raises(ValueError, match="not a preset"):
        ImageCaptioner.from_preset("no_such_preset")
    with pytest.raises(ValueError, match="SavedModel export"):
        ImageCaptioner.from_preset(tiny_run["export"])


def test_run_weights_are_the_best_the_latest_checkpoint_or_a_given_file(run_captioner, tiny_run, tmp_path):
    import tensorflow as tf

    from tfcaption.training.run_directory import load_run

    def arrays(captioner):
        return [np.asarray(w) for w in captioner.backbone.weights]

    other = ImageCaptioner.from_preset(tiny_run["run"])
    for weight in other.backbone.weights:
        weight.assign(weight + 1.0)
    path = str(tmp_path / "other.weights.h5")
    other.backbone.save_weights(path)
    given = ImageCaptioner.from_preset(tiny_run["run"], weights=path)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(given), arrays(other)))
    assert not np.array_equal(arrays(given)[0], arrays(run_captioner)[0])
    latest, run_config = load_run(tiny_run["run"], weights="latest")
    assert isinstance(latest, ImageCaptioner) and latest.beam_size == run_config.decode.beam_size
    checkpoints = os.path.join(tiny_run["run"], "checkpoints")
    for weights in (checkpoints, tf.train.latest_checkpoint(checkpoints)):
        same = ImageCaptioner.from_preset(tiny_run["run"], weights=weights)
        assert all(np.array_equal(a, b) for a, b in zip(arrays(same), arrays(latest)))
    with pytest.raises(FileNotFoundError, match="is not 'best', 'latest', a .weights.h5 file"):
        load_run(tiny_run["run"], weights=str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="weights applies to run directories"):
        ImageCaptioner.from_preset("small", weights="latest")


def test_generate_on_every_input_kind_matches_tfcaption_load(run_captioner, tiny_run, images):
    import tensorflow as tf

    from tfcaption.data.pipeline import decode_image
    from tfcaption.decoding.captioning import caption_batches
    from tfcaption.training.run_directory import load_run

    # The run's own decode settings (beam 2 in the tiny run) on every side.
    predictor = tfcaption.load(tiny_run["run"])
    assert isinstance(predictor.captioner, ImageCaptioner)
    expected = [r["caption"] for r in predictor.caption(images["inputs"])]
    assert run_captioner.generate(images["inputs"]) == expected
    # The decoding module on the run's network, each image given as PNG bytes (how tfcaption.load read arrays).
    loaded, run_config = load_run(tiny_run["run"])
    assert isinstance(loaded, ImageCaptioner)
    model, vocab = loaded.backbone, loaded.preprocessor.vocabulary
    encoded = images["bytes"][:2] + [tf.io.encode_png(a).numpy() for a in images["inputs"][2:]]
    batch = {"images": np.stack([decode_image(tf.constant(b), 32).numpy() for b in encoded]), "image_id": list("abcd")}
    direct = caption_batches(model, vocab, [batch], beam_size=run_config.decode.beam_size,
                             max_steps=run_config.data.max_decode_steps)
    assert [r["caption"] for r in direct] == expected
    # One uint8 batch tensor of the three 32 px images: the same captions as the same images one by one.
    pixels = np.stack([np.round(decode_image(tf.constant(b), 32).numpy()).astype(np.uint8) for b in images["bytes"]])
    assert run_captioner.generate(tf.constant(pixels)) == expected[:3]
    assert run_captioner.generate(images["inputs"][0]) == expected[0]  # one image: one string


def test_generate_details_give_scores_every_beam_and_tokens(run_captioner, images):
    details = run_captioner.generate(images["bytes"], sampler="beam", return_details=True)
    for result in details:
        assert len(result["beams"]) == 2  # the tiny run's decode.beam_size
        assert result["beams"][0]["caption"] == result["caption"]
        assert result["beams"][0]["score"] == pytest.approx(result["score"])
        assert run_captioner.preprocessor.detokenize([result["tokens"]]) == [result["caption"]]
        assert len(result["tokens"]) <= run_captioner.max_length


def test_max_length_counts_generated_tokens_eos_included(run_captioner, images):
    for result in run_captioner.generate(images["bytes"], sampler="greedy", max_length=2, return_details=True):
        assert len(result["tokens"]) == 2 and len(result["caption"].split()) <= 2


def test_a_call_sampler_wins_over_compile_which_wins_over_the_runs_settings(tiny_run, images):
    from tfcaption import samplers

    captioner = ImageCaptioner.from_preset(tiny_run["run"])
    beams = lambda **kw: len(captioner.generate(images["bytes"][0], return_details=True, **kw)["beams"])  # noqa: E731
    assert captioner.beam_size == 2 and beams() == 2  # the run's decode.beam_size
    captioner.compile(sampler="greedy")
    assert beams() == 1
    assert beams(sampler=samplers.BeamSampler(num_beams=3)) == 3 and beams(sampler="beam") == 2
    assert beams(sampler=samplers.GreedySampler()) == 1
    captioner.compile(sampler=samplers.BeamSampler(num_beams=4))
    assert beams() == 4 and beams(sampler="greedy") == 1
    with pytest.raises(ValueError, match="unknown sampler"):
        captioner.generate(images["bytes"][0], sampler="nucleus")
    with pytest.raises(ValueError, match="unknown sampler"):
        captioner.compile(sampler="nucleus")


def test_every_sampler_name_and_object_decodes_as_the_decoding_module(run_captioner, images):
    from tfcaption import samplers
    from tfcaption.decoding.captioning import generate

    inputs = run_captioner.preprocessor.preprocess_images(images["bytes"])[1]
    for sampler in ("greedy", "random", "top_k", "top_p", samplers.TopPSampler(p=0.9, seed=1),
                    samplers.TopKSampler(k=3, temperature=0.7, seed=4), samplers.RandomSampler(seed=2)):
        resolved = run_captioner.resolve_sampler(sampler)
        details = run_captioner.generate(images["bytes"], sampler=sampler, max_length=6, return_details=True)
        assert len(details) == 3 and all(len(r["beams"]) == 1 and len(r["tokens"]) == 6 for r in details)
        if resolved.seed is not None:  # a seeded sampler: the same captions again, and as the module gives them
            again = run_captioner.generate(images["bytes"], sampler=sampler, max_length=6)
            assert again == [r["caption"] for r in details]
            tokens = generate(run_captioner.backbone, inputs, resolved, 6,
                              special_ids=run_captioner.preprocessor)["tokens"].numpy()
            assert [r["tokens"] for r in details] == tokens.tolist()
    # top-k with k = 1 is greedy, whatever the seed
    assert run_captioner.generate(images["bytes"], sampler=samplers.TopKSampler(k=1, seed=9)) == \
        run_captioner.generate(images["bytes"], sampler="greedy")


def test_one_compiled_function_per_sampler_config_and_shape(run_captioner, images):
    from tfcaption import samplers
    from tfcaption.decoding.captioning import GENERATORS_ATTRIBUTE

    run_captioner.generate(images["bytes"], sampler=samplers.TopPSampler(p=0.8, seed=3), max_length=5)
    count = len(getattr(run_captioner.backbone, GENERATORS_ATTRIBUTE))
    run_captioner.generate(images["bytes"], sampler=samplers.TopPSampler(p=0.8, seed=3), max_length=5)
    run_captioner.generate(images["bytes"][:1], sampler=samplers.TopPSampler(p=0.8, seed=3), max_length=5)
    assert len(getattr(run_captioner.backbone, GENERATORS_ATTRIBUTE)) == count


def test_keras_file_round_trip_gives_identical_captions(run_captioner, images, tmp_path):
    import keras

    path = str(tmp_path / "captioner.keras")
    run_captioner.save(path)
    for clone in (keras.models.load_model(path), ImageCaptioner.from_preset(path)):
        assert isinstance(clone, ImageCaptioner) and clone.beam_size == run_captioner.beam_size
        assert clone.preprocessor.vocabulary == run_captioner.preprocessor.vocabulary
        for sampler in ("greedy", "beam"):
            assert clone.generate(images["inputs"], sampler=sampler) == \
                run_captioner.generate(images["inputs"], sampler=sampler)
    # compile's sampler is saved with the model: generate() decodes the same way after loading.
    from tfcaption import samplers

    clone = keras.models.load_model(path)
    clone.compile(sampler=samplers.TopPSampler(p=0.8, seed=5))
    clone.save(str(tmp_path / "compiled.keras"))
    again = keras.models.load_model(str(tmp_path / "compiled.keras"))
    assert isinstance(again.resolve_sampler(), samplers.TopPSampler) and again.resolve_sampler().seed == 5
    assert again.generate(images["inputs"]) == clone.generate(images["inputs"])


def test_fit_lowers_the_loss_on_tfcaption_batches(tiny_shapes):
    import keras

    from tfcaption.data.pipeline import train_dataset
    from tfcaption.data.tokenizer import Vocabulary

    keras.utils.set_random_seed(1)
    vocab = Vocabulary.build(_captions(tiny_shapes))
    captioner = ImageCaptioner.from_preset("small", vocabulary=vocab, **TINY_SMALL)
    data = train_dataset(tiny_shapes, "train", vocab, 16, 20, 32, seed=0).take(2).cache()
    captioner.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = captioner.fit(data, validation_data=data, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.85 * history.history["loss"][0]
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert captioner.evaluate(data, verbose=0) == pytest.approx(history.history["val_loss"][-1], rel=1e-4)


def test_fit_on_images_and_caption_strings_builds_the_vocabulary_and_lowers_the_loss(tiny_shapes):
    import keras
    import tensorflow as tf

    from tfcaption.data.records import read_records

    keras.utils.set_random_seed(2)
    pairs = [(r["image"], r["captions"][0]) for r in read_records(tiny_shapes, "train").take(32).as_numpy_iterator()]
    data = tf.data.Dataset.from_tensor_slices(([p[0] for p in pairs], [p[1] for p in pairs])).batch(16).cache()
    captioner = ImageCaptioner.from_preset("small", **TINY_SMALL)
    captioner.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = captioner.fit(data, epochs=8, verbose=0)
    assert captioner.preprocessor.vocabulary.size > 4
    assert history.history["loss"][-1] < 0.85 * history.history["loss"][0]
    assert isinstance(captioner.generate(pairs[0][0]), str)


def _captions(data_dir):
    from tfcaption.data.records import read_records

    return [c.decode() for r in read_records(data_dir, "train").as_numpy_iterator() for c in r["captions"]]


def test_legacy_run_directories_load_and_caption_as_tfcaption_load():
    legacy = os.path.join(REPO_ROOT, "tests", "fixtures", "legacy_v1")
    image = os.path.join(legacy, "image.png")
    captioner = ImageCaptioner.from_preset(os.path.join(legacy, "run_pixels"))
    assert captioner.generate([image]) == [r["caption"] for r in tfcaption.load(os.path.join(legacy, "run_pixels"))
                                           .caption([image])]
    features = np.load(os.path.join(legacy, "features.npy"))
    regions = os.path.join(legacy, "run_regions")
    assert ImageCaptioner.from_preset(regions).generate(features) == \
        [r["caption"] for r in tfcaption.load(regions).caption(features)]


def test_converted_m2_run_loads_and_captions_as_tfcaption_load(converted):
    from tests.helpers.m2_fixture import FIXTURE

    features = np.load(FIXTURE / "inputs.npz")["features"]
    captioner = ImageCaptioner.from_preset(converted["run"])
    assert captioner.generate(features) == [r["caption"] for r in tfcaption.load(converted["run"]).caption(features)]


def test_a_preset_with_encoder_weights_loads_them_unless_told_not_to(tmp_path):
    from tests.helpers.vit_checkpoint import write_checkpoint

    npz = write_checkpoint(tmp_path / "vit_tiny.npz", patch=8, hidden=48, heads=3, layers=2, mlp=96, grid=4)
    sizes = dict(TINY_SIZES, max_length=12, encoder={"num_layers": 1, "memory_slots": 4}, decoder={"num_layers": 1},
                 image_encoder={"image_size": 32, "weights": npz})
    loaded = ImageCaptioner.from_preset("vit_m2", vocabulary=WORDS, **sizes)
    kernel = np.load(npz)["embedding/kernel"]
    embedding = [w for w in loaded.backbone.image_encoder.weights if w.shape == kernel.shape]
    np.testing.assert_array_equal(np.asarray(embedding[0]), kernel)
    random = ImageCaptioner.from_preset("vit_m2", vocabulary=WORDS, load_weights=False,
                                        **dict(sizes, image_encoder={"image_size": 32, "weights": npz,
                                                                     "patch_size": 8, "width": 48, "num_heads": 3,
                                                                     "num_layers": 2, "mlp_dim": 96}))
    same = [w for w in random.backbone.image_encoder.weights if w.shape == kernel.shape]
    assert not np.array_equal(np.asarray(same[0]), kernel)
