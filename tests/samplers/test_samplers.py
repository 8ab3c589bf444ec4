"""Every sampler on a model: the identities between rules, seeds, logit controls, attention, all under XLA."""

import numpy as np
import pytest
import tensorflow as tf

import keras

from tests.helpers.tiny import word_ids
from tfcaption import samplers
from tfcaption.decoding import compiled_generator, decode, generate
from tfcaption.models import CaptionerBackbone, CaptionerConfig
from tfcaption.samplers import BeamSampler, GreedySampler, RandomSampler, TopKSampler, TopPSampler

STEPS = 10
IDS = word_ids()  # the tokenizer's ids the decoding is given


@pytest.fixture(scope="module")
def model():
    """A small untrained model whose logits are sharpened (x4), so distributions are neither flat nor one-hot."""
    keras.utils.set_random_seed(21)
    config = CaptionerConfig.from_preset(
        "small", image_size=32, patch_size=8, hidden_dim=32, key_dim=8, intermediate_dim=64, memory_slots=4,
        vocab_size=16, max_length=12, dropout=0.0,
    )
    model = CaptionerBackbone.from_model_config(config)
    kernel = model.decoder.output_dense.kernel
    kernel.assign(kernel * 4.0)
    return model


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_uniform((5, 32, 32, 3), seed=(3, 4), minval=0, maxval=255)


def _xla(model, images, sampler, **kwargs):
    return compiled_generator(model, sampler, STEPS, jit_compile=True, special_ids=IDS, **kwargs)(images)


def _tokens(model, images, sampler, **kwargs):
    return _xla(model, images, sampler, **kwargs)["tokens"].numpy()


def _caption(row, eos):
    row = list(row)
    return row[:row.index(eos) + 1] if eos in row else row


def test_greedy_equals_beam_with_one_beam_also_under_logit_controls(model, images):
    for controls in ({}, {"no_repeat_ngram_size": 2, "banned_token_ids": [5], "min_length": 4,
                          "repetition_penalty": 1.5}):
        greedy = _xla(model, images, GreedySampler(**controls))
        beam = _xla(model, images, BeamSampler(num_beams=1, **controls))
        np.testing.assert_array_equal(greedy["tokens"].numpy(), beam["tokens"].numpy())
        np.testing.assert_allclose(greedy["log_probs"].numpy(), beam["log_probs"].numpy(), atol=1e-5)
    assert len({tuple(r) for r in greedy["tokens"].numpy()}) > 1  # the images do get different captions


def test_top_k_of_one_top_p_near_zero_and_temperature_near_zero_equal_greedy(model, images):
    greedy = _tokens(model, images, GreedySampler())
    for sampler in (TopKSampler(k=1, seed=1), TopPSampler(p=1e-6, seed=2), RandomSampler(temperature=1e-4, seed=3),
                    TopKSampler(k=4, temperature=1e-4, seed=4)):
        np.testing.assert_array_equal(_tokens(model, images, sampler), greedy, err_msg=repr(sampler))


@pytest.mark.parametrize("name", ["random", "top_k", "top_p"])
def test_a_seed_gives_the_same_captions_twice_and_other_seeds_differ(model, images, name):
    first = _tokens(model, images, samplers.get(name, seed=7))
    np.testing.assert_array_equal(first, _tokens(model, images, samplers.get(name, seed=7)))
    others = [_tokens(model, images, samplers.get(name, seed=seed)) for seed in (8, 9)]
    assert any(not np.array_equal(first, other) for other in others)
    # Eager decoding draws the same numbers (the draws are a hash, not a device generator).
    eager = generate(model, images, samplers.get(name, seed=7), STEPS, special_ids=IDS)
    np.testing.assert_array_equal(eager["tokens"].numpy(), first)


def test_a_rows_seeded_caption_is_the_same_alone_and_inside_a_bigger_batch(model, images):
    sampler = RandomSampler(seed=11)
    batch = _tokens(model, images, sampler)
    for row in (0, 3):
        alone = _tokens(model, tf.concat([images[row:row + 1], images[row:row + 1]], 0), sampler)
        np.testing.assert_array_equal(alone[0], batch[row])
    # Per-row seeds: a row's caption depends on its own seed only.
    run = compiled_generator(model, sampler, STEPS, jit_compile=True, special_ids=IDS)
    seeds = tf.constant([1, 2, 3, 4, 5], tf.int64)
    mixed = run(images, seeds)["tokens"].numpy()
    swapped = run(tf.gather(images, [3, 1, 2, 0, 4]), tf.constant([4, 2, 3, 1, 5], tf.int64))["tokens"].numpy()
    np.testing.assert_array_equal(swapped[[3, 1, 2, 0, 4]], mixed)
    assert not np.array_equal(run(images, seeds + 10)["tokens"].numpy(), mixed)


def test_random_samples_of_one_image_differ_and_report_the_models_log_probs(model, images):
    # <pad> and <bos> banned: teacher forcing reads a <pad> inside a caption as padding.
    sampler = RandomSampler(seed=5, banned_token_ids=[IDS.pad_id, IDS.bos_id])
    out = decode(model, *model.encode(images), sampler, STEPS, num_samples=6, special_ids=IDS)
    tokens = out["tokens"].numpy()
    assert tokens.shape == (5, 6, STEPS)
    assert len({tuple(r) for r in tokens[0]}) > 1
    # log_probs are the model's: teacher forcing gives the same on the live steps.
    flat = tokens.reshape(-1, STEPS)
    inputs = np.concatenate([np.full((len(flat), 1), IDS.bos_id), flat[:, :-1]], 1)
    repeated = tf.repeat(images, 6, axis=0)
    log_probs = tf.nn.log_softmax(model({"images": repeated, "tokens": inputs,
                                         "padding_mask": inputs != IDS.pad_id})).numpy()
    chosen = np.take_along_axis(log_probs, flat[..., None], -1)[..., 0]
    live = out["log_probs"].numpy().reshape(-1, STEPS) != 0
    np.testing.assert_allclose(chosen[live], out["log_probs"].numpy().reshape(-1, STEPS)[live], atol=1e-4)


@pytest.mark.parametrize("name, options", [("greedy", {}), ("beam", {}), ("random", {"seed": 1})],
                         ids=["greedy", "beam", "random"])
def test_no_repeat_ngram_size_2_never_repeats_a_bigram(model, images, name, options):
    eos = IDS.eos_id
    plain = _tokens(model, images, samplers.get("beam" if name == "beam" else "greedy"))
    sampler = samplers.get(name, no_repeat_ngram_size=2, **options)
    out = _xla(model, images, sampler)
    rows = out.get("beam_tokens", out["tokens"][:, None]).numpy().reshape(-1, STEPS)
    for row in rows:
        words = _caption(row, eos)
        bigrams = list(zip(words, words[1:]))
        assert len(bigrams) == len(set(bigrams)), words
    # Without the control this model does repeat bigrams, so the test checks something.
    assert any(len(list(zip(c, c[1:]))) > len(set(zip(c, c[1:]))) for c in (_caption(r, eos) for r in plain))


@pytest.mark.parametrize("name", ["greedy", "beam", "random", "top_p"])
def test_banned_tokens_never_appear(model, images, name):
    common = np.bincount(_tokens(model, images, GreedySampler()).ravel(), minlength=16)
    banned = [int(t) for t in np.argsort(-common)[:2] if t != IDS.eos_id][:1] + [IDS.pad_id]
    assert common[banned[0]] > 0  # greedy does use the first one
    seed = {} if name in ("greedy", "beam") else {"seed": 3}
    out = _xla(model, images, samplers.get(name, banned_token_ids=banned, **seed))
    rows = out.get("beam_tokens", out["tokens"][:, None]).numpy().reshape(-1, STEPS)
    for row in rows:
        caption = _caption(row, IDS.eos_id)
        assert not set(caption) & set(banned), caption


@pytest.mark.parametrize("name", ["greedy", "beam", "top_k"])
def test_min_length_holds(images, name):
    keras.utils.set_random_seed(3)
    config = CaptionerConfig.from_preset("small", image_size=32, patch_size=8, hidden_dim=32, key_dim=8,
                                         intermediate_dim=64, memory_slots=4, vocab_size=16, max_length=12,
                                         dropout=0.0, output_bias=True)
    model = CaptionerBackbone.from_model_config(config)
    bias = np.zeros(16, np.float32)
    bias[IDS.eos_id] = 30.0  # <eos> first, everywhere
    model.decoder.output_dense.bias.assign(bias)
    eos = IDS.eos_id
    assert (_tokens(model, images, GreedySampler())[:, 0] == eos).all()
    out = _xla(model, images, samplers.get(name, min_length=5, **({"seed": 1} if name == "top_k" else {})))
    rows = out.get("beam_tokens", out["tokens"][:, None]).numpy().reshape(-1, STEPS)
    for row in rows:
        assert list(row).index(eos) == 4  # four words, then <eos>: five tokens


def test_repetition_penalty_lowers_repeats(model, images):
    eos = IDS.eos_id

    def repeats(tokens):
        return sum(len(c) - len(set(c)) for c in (_caption(r, eos) for r in tokens))

    assert repeats(_tokens(model, images, GreedySampler(repetition_penalty=3.0))) < repeats(
        _tokens(model, images, GreedySampler()))


@pytest.mark.parametrize("sampler", [GreedySampler(), BeamSampler(num_beams=3), TopPSampler(p=0.8, seed=2)],
                         ids=["greedy", "beam", "top_p"])
def test_attention_is_recorded_along_the_returned_caption(model, images, sampler):
    """The recorded per-level attention and gates equal teacher forcing's on the tokens returned (for a beam,
    its own ancestry)."""
    out = decode(model, *model.encode(images), sampler, STEPS, return_attention=True, special_ids=IDS)
    tokens = out["tokens"].numpy()
    k = tokens.shape[1]
    flat = tokens.reshape(-1, STEPS)
    inputs = np.concatenate([np.full((len(flat), 1), IDS.bos_id), flat[:, :-1]], 1)
    encoder_outputs, mask = model.encode(tf.repeat(images, k, axis=0))
    _, weights, gates = model.decoder(inputs, encoder_outputs, mask, return_attention=True,
                                      padding_mask=inputs != IDS.pad_id)
    expected = np.transpose(weights.numpy(), (0, 2, 1, 3))  # (B k, T, levels, R)
    live = np.cumsum(flat == IDS.eos_id, axis=1) - (flat == IDS.eos_id) == 0
    np.testing.assert_allclose(out["attention"].numpy().reshape(expected.shape)[live], expected[live], atol=1e-5)
    np.testing.assert_allclose(out["gates"].numpy().reshape(-1, STEPS, expected.shape[2])[live],
                               np.transpose(gates.numpy(), (0, 2, 1))[live], atol=1e-5)


def test_beam_attention_of_generate_belongs_to_the_best_beam(model, images):
    out = _xla(model, images, BeamSampler(num_beams=3), return_attention=True)
    plain = _xla(model, images, BeamSampler(num_beams=3))
    np.testing.assert_array_equal(out["tokens"].numpy(), plain["tokens"].numpy())
    assert out["attention"].shape == (5, STEPS, model.token_grid.cells)


def test_length_normalization_prefers_longer_beams(model, images):
    eos = IDS.eos_id
    plain = _xla(model, images, BeamSampler(num_beams=4))
    normalized = _xla(model, images, BeamSampler(num_beams=4, length_normalization=1.0))

    def length(tokens):
        return np.mean([len(_caption(r, eos)) for r in tokens.numpy()])

    assert length(normalized["tokens"]) >= length(plain["tokens"])
    # Beams come back in the order of their normalised score.
    scores = normalized["beam_scores"].numpy()
    lengths = np.array([[len(_caption(r, eos)) for r in beams] for beams in normalized["beam_tokens"].numpy()])
    assert (np.diff(scores / lengths, axis=1) <= 1e-5).all()


def test_names_configs_and_objects_give_the_same_sampler():
    for name, cls in samplers.NAMES.items():
        sampler = samplers.get(name)
        assert type(sampler) is cls
        again = samplers.deserialize(samplers.serialize(sampler))
        assert type(again) is cls and again.get_config() == sampler.get_config()
    sampler = samplers.get("top_p", p=0.5, k=10, temperature=0.7, seed=3, no_repeat_ngram_size=3)
    assert samplers.get({"class_name": "top_p", "config": sampler.get_config()}).get_config() == sampler.get_config()
    assert samplers.get(sampler) is sampler and samplers.get(None) is None
    with pytest.raises(ValueError, match="unknown sampler 'nucleus'"):
        samplers.get("nucleus")
    for bad in ({"temperature": 0}, {"repetition_penalty": -1.0}, {"min_length": -2}, {"banned_token_ids": ["a"]}):
        with pytest.raises(ValueError):
            samplers.RandomSampler(**bad)
    with pytest.raises(ValueError, match="p must"):
        samplers.TopPSampler(p=1.5)


def test_on_a_trained_run_a_seed_repeats_its_captions_and_other_seeds_differ(tiny_run, tiny_shapes):
    from tfcaption.data.records import read_records
    from tfcaption.data.pipeline import decode_image
    from tfcaption.training.run_directory import load_run

    captioner = load_run(tiny_run["run"])[0]
    model, vocab = captioner.backbone, captioner.preprocessor.vocabulary
    size = model.image_encoder.image_size
    images = tf.stack([decode_image(tf.constant(r["image"]), size)
                       for r in read_records(tiny_shapes, "test").as_numpy_iterator()])

    def sample(seed):
        return compiled_generator(model, RandomSampler(seed=seed), STEPS, jit_compile=True,
                                  special_ids=vocab)(images)["tokens"].numpy()

    first = sample(1)
    np.testing.assert_array_equal(first, sample(1))
    assert not np.array_equal(first, sample(2)) or not np.array_equal(first, sample(3))
    # Near zero temperature, sampling is the trained model's greedy decoding.
    cold = compiled_generator(model, RandomSampler(temperature=1e-4, seed=1), STEPS, jit_compile=True,
                              special_ids=vocab)(images)
    greedy = compiled_generator(model, GreedySampler(), STEPS, jit_compile=True, special_ids=vocab)(images)
    np.testing.assert_array_equal(cold["tokens"].numpy(), greedy["tokens"].numpy())
