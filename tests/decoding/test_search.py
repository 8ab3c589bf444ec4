import numpy as np
import pytest
import tensorflow as tf

import keras

from tests.helpers.tiny import word_ids
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.decoding import compiled_generator, decode, generate
from tfcaption.models import CaptionerBackbone, CaptionerConfig
from tfcaption.samplers import BeamSampler, GreedySampler

IDS = word_ids()  # the tokenizer's ids the searches are given (the model knows none)


def greedy_search(model, encoder_outputs, encoder_mask, max_steps, return_attention=False, stop_early=True,
                  special_ids=IDS):
    """The greedy sequence per image as (B, T) arrays (the sampler's k = 1 axis dropped)."""
    out = decode(model, encoder_outputs, encoder_mask, GreedySampler(stop_early=stop_early), max_steps,
                 return_attention=return_attention, special_ids=special_ids)
    return {name: value[:, 0] for name, value in out.items()}


def beam_search(model, encoder_outputs, encoder_mask, beam_size, max_steps, **options):
    return decode(model, encoder_outputs, encoder_mask, BeamSampler(num_beams=beam_size, **options), max_steps,
                  special_ids=IDS)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(11)
    config = CaptionerConfig.from_preset(
        "small", image_size=32, patch_size=8, hidden_dim=32, key_dim=8, intermediate_dim=64, memory_slots=4,
        vocab_size=14, max_length=12, dropout=0.0,
    )
    return CaptionerBackbone.from_model_config(config)


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_uniform((4, 32, 32, 3), seed=(1, 2), minval=0, maxval=255)


def test_greedy_equals_beam_of_one(model, images):
    encoded = model.encode(images)
    greedy = greedy_search(model, *encoded, max_steps=10)
    beam = beam_search(model, *encoded, beam_size=1, max_steps=10)
    np.testing.assert_array_equal(greedy["tokens"].numpy(), beam["tokens"].numpy()[:, 0])
    np.testing.assert_allclose(greedy["scores"].numpy(), beam["scores"].numpy()[:, 0], atol=1e-5)


def test_cached_decoding_equals_uncached(model, images):
    out = greedy_search(model, *model.encode(images), max_steps=10, stop_early=False)
    tokens = out["tokens"].numpy()
    inputs = np.concatenate([np.full((4, 1), IDS.bos_id), tokens[:, :-1]], 1)
    # Recompute every step from scratch (teacher forcing over the whole prefix).
    log_probs = tf.nn.log_softmax(model({"images": images, "tokens": inputs,
                                         "padding_mask": inputs != IDS.pad_id})).numpy()
    chosen = np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    live = out["log_probs"].numpy() != 0
    assert live.any()
    np.testing.assert_allclose(chosen[live], out["log_probs"].numpy()[live], atol=1e-5)
    # The uncached argmax picks the same words while a sequence is live.
    np.testing.assert_array_equal(log_probs.argmax(-1)[live], tokens[live])


def test_beam_search_is_best_first_pads_after_eos_and_never_worse_than_greedy(model, images):
    out = beam_search(model, *model.encode(images), beam_size=3, max_steps=10)
    scores = out["scores"].numpy()
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    np.testing.assert_allclose(out["log_probs"].numpy().sum(-1), scores, atol=1e-4)
    tokens = out["tokens"].numpy()
    eos, pad = IDS.eos_id, IDS.pad_id
    for row, log_probs in zip(tokens.reshape(-1, 10), out["log_probs"].numpy().reshape(-1, 10)):
        if eos in row:
            after = row.tolist().index(eos) + 1
            assert (row[after:] == pad).all() and (log_probs[after:] == 0).all()
    # Beam search never does worse than greedy on its own objective.
    greedy = greedy_search(model, *model.encode(images), max_steps=10)
    assert (scores[:, 0] >= greedy["scores"].numpy() - 1e-4).all()


def test_stop_early_changes_nothing(model, images):
    encoded = model.encode(images)
    early = beam_search(model, *encoded, beam_size=3, max_steps=10, stop_early=True)
    fixed = beam_search(model, *encoded, beam_size=3, max_steps=10, stop_early=False)
    for key in ("tokens", "log_probs", "scores"):
        np.testing.assert_allclose(early[key].numpy(), fixed[key].numpy(), atol=1e-6)


def test_xla_compiled_generate_matches_eager(model, images):
    eager = generate(model, images, beam_size=3, max_steps=10, special_ids=IDS)
    compiled = compiled_generator(model, beam_size=3, max_steps=10, jit_compile=True, special_ids=IDS)(images)
    np.testing.assert_array_equal(eager["beam_tokens"].numpy(), compiled["beam_tokens"].numpy())
    np.testing.assert_allclose(eager["beam_scores"].numpy(), compiled["beam_scores"].numpy(), atol=1e-4)


def test_greedy_attention_is_a_distribution_over_patches(model, images):
    out = greedy_search(model, *model.encode(images), max_steps=6, return_attention=True, stop_early=False)
    attention = out["attention"].numpy()
    assert attention.shape == (4, 6, model.config.encoder.num_layers, model.token_grid.cells)
    np.testing.assert_allclose(attention.sum(-1), 1.0, atol=1e-5)
    gates = out["gates"].numpy()
    assert ((gates > 0) & (gates < 1)).all()


def test_the_transformer_decoder_searches_through_the_same_interface(images):
    from tests.helpers.tiny import tiny_preset

    keras.utils.set_random_seed(12)
    model = CaptionerBackbone.from_model_config(tiny_preset("cptr_small"))
    encoded = model.encode(images)
    greedy = greedy_search(model, *encoded, max_steps=6, return_attention=True, stop_early=False)
    beam = beam_search(model, *encoded, beam_size=1, max_steps=6, stop_early=False)
    np.testing.assert_array_equal(greedy["tokens"].numpy(), beam["tokens"].numpy()[:, 0])
    assert greedy["attention"].shape == (4, 6, 1, model.token_grid.cells) and "gates" not in greedy
    mixed = generate(model, images, max_steps=6, return_attention=True, special_ids=IDS)
    assert "gates" not in mixed and mixed["attention"].shape == (4, 6, model.token_grid.cells)
    assert generate(model, images, beam_size=3, max_steps=6, special_ids=IDS)["beam_tokens"].shape == (4, 3, 6)


def test_length_penalty_reranks_but_keeps_beams(model, images):
    encoded = model.encode(images)
    plain = beam_search(model, *encoded, beam_size=3, max_steps=10)
    penalised = beam_search(model, *encoded, beam_size=3, max_steps=10, length_penalty=1.0)
    for b in range(4):
        assert sorted(map(tuple, plain["tokens"].numpy()[b])) == sorted(map(tuple, penalised["tokens"].numpy()[b]))


def test_decoding_starts_ends_and_pads_with_the_tokenizers_ids(model, images):
    """A tokenizer whose ids are not the word vocabulary's (as BERT-style tokenizers have): the searches
    start, stop and pad with the ids they are given, and the log-probabilities are those teacher forcing
    gives from that start token."""
    first = greedy_search(model, *model.encode(images), max_steps=1, special_ids=SpecialIds(12, 5, 13))["tokens"]
    other = SpecialIds(pad_id=12, bos_id=5, eos_id=int(first.numpy()[0, 0]))  # image 0 ends at once
    assert other.eos_id not in (1, 2, 3, 5, 12)
    out = greedy_search(model, *model.encode(images), max_steps=10, special_ids=other)
    tokens = out["tokens"].numpy()
    assert tokens[0, 0] == other.eos_id and (tokens[0, 1:] == other.pad_id).all()
    inputs = np.concatenate([np.full((4, 1), other.bos_id), tokens[:, :-1]], 1)
    log_probs = tf.nn.log_softmax(model({"images": images, "tokens": inputs,
                                         "padding_mask": inputs != other.pad_id})).numpy()
    first = log_probs[:, 0].argmax(-1)
    np.testing.assert_array_equal(tokens[:, 0], first)
    np.testing.assert_allclose(out["log_probs"].numpy()[:, 0], log_probs[np.arange(4), 0, first], atol=1e-5)
    for row in tokens:
        if other.eos_id in row:
            assert (row[row.tolist().index(other.eos_id) + 1:] == other.pad_id).all()
    # The same images from the word vocabulary's <bos> start elsewhere.
    assert not np.array_equal(tokens, greedy_search(model, *model.encode(images), max_steps=10)["tokens"].numpy())
    with pytest.raises(TypeError, match="special ids come from a tokenizer"):
        generate(model, images, max_steps=3, special_ids=model.config)
