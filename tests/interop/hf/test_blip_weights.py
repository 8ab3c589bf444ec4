"""BLIP's vision tower and text decoder loaded from the fixture checkpoints compute what transformers computed.

Tolerance: the issue's |tfcaption - ref| <= 1e-4 * (1 + |ref|) (`assert_close`); inputs are the fixtures'
own pixel values (NCHW in the file, NHWC here) and token ids.
"""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.hf_fixture import BLIP_MODELS, assert_close, config, expected, tensors
from tfcaption import samplers
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.decoding.captioning import decode
from tfcaption.interop.hf.blip_weights import (
    MissingTensorError,
    blip_checkpoint_tensors,
    bert_text_decoder_arguments,
    bert_text_decoder_from_hf,
    blip_vision_tower_from_hf,
)


@functools.lru_cache(maxsize=None)
def _model(name):
    weights = tensors(name)
    return blip_vision_tower_from_hf(config(name), weights), bert_text_decoder_from_hf(config(name), weights)


def _pixels(values):
    return np.transpose(values, (0, 2, 3, 1))  # transformers' NCHW -> NHWC


def _image_tokens(name):
    tower, _ = _model(name)
    return tower(_pixels(expected(name)["pixel_values"]))[:, None]  # (B, 1 level, 1 + P, d_vision)


def _greedy(decoder, image_tokens, sep_id, pad_id, bos_id, max_steps):
    """Greedy search over `decoder.step` with tfcaption's sampler (the key/value cache path)."""
    encoder_kv = decoder.project_encoder(image_tokens)
    cache = decoder.initial_cache(tf.shape(image_tokens)[0], max_steps)

    def next(tokens, step, cache):
        return decoder.step(tokens, step, cache, encoder_kv)

    out = samplers.GreedySampler()(next, cache, tf.shape(image_tokens)[0], max_steps, start_token_id=bos_id,
                                   end_token_id=sep_id, pad_token_id=pad_id)
    return out["tokens"][:, 0]


@pytest.mark.parametrize("name", BLIP_MODELS)
@pytest.mark.parametrize("suffix", ["", "_interpolated"])
def test_vision_last_hidden_state_matches_transformers(name, suffix):
    tower, _ = _model(name)
    reference = expected(name)
    assert_close(tower(_pixels(reference["pixel_values" + suffix])), reference["vision_last_hidden_state" + suffix])


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_teacher_forced_logits_match_transformers(name):
    _, decoder = _model(name)
    reference = expected(name)
    logits = np.asarray(decoder(reference["teacher_input_ids"], _image_tokens(name)))
    real = reference["teacher_attention_mask"].astype(bool)
    assert_close(logits[real], reference["teacher_logits"][real])


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_cached_steps_give_the_teacher_forced_logits(name):
    _, decoder = _model(name)
    ids = expected(name)["teacher_input_ids"]
    image_tokens = _image_tokens(name)
    teacher = np.asarray(decoder(ids, image_tokens))
    encoder_kv = decoder.project_encoder(image_tokens)
    cache = decoder.initial_cache(ids.shape[0], ids.shape[1])
    for position in range(ids.shape[1]):
        logits, cache = decoder.step(ids[:, position], position, cache, encoder_kv)
        real = ids[:, position] != 0
        assert_close(np.asarray(logits)[real], teacher[real, position])


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_greedy_steps_give_generate_greedy_ids(name):
    text = config(name)["text_config"]
    reference = expected(name)["generate_greedy"]  # [DEC] then 8 new tokens, [PAD] after [SEP]
    _, decoder = _model(name)
    tokens = _greedy(decoder, _image_tokens(name), text["sep_token_id"], text["pad_token_id"], text["bos_token_id"],
                     reference.shape[1] - 1)
    np.testing.assert_array_equal(tokens.numpy(), reference[:, 1:])


def test_greedy_search_compiles_with_xla_and_gives_the_same_ids():
    name = "blip_b"
    text = config(name)["text_config"]
    reference = expected(name)["generate_greedy"]
    tower, decoder = _model(name)

    @tf.function(jit_compile=True)
    def caption(pixels):
        return _greedy(decoder, tower(pixels)[:, None], text["sep_token_id"], text["pad_token_id"],
                       text["bos_token_id"], reference.shape[1] - 1)

    np.testing.assert_array_equal(caption(_pixels(expected(name)["pixel_values"])).numpy(), reference[:, 1:])


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_tfcaptions_decode_runs_the_decoder_and_records_its_attention(name):
    """`tfcaption.decoding.captioning.decode`, the loop every caller uses, with the decoder as a model's."""
    text = config(name)["text_config"]
    reference = expected(name)["generate_greedy"]
    _, decoder = _model(name)
    model = SimpleNamespace(decoder=decoder)
    ids = SpecialIds(pad_id=text["pad_token_id"], bos_id=text["bos_token_id"], eos_id=text["sep_token_id"])
    image_tokens = _image_tokens(name)
    out = decode(model, image_tokens, None, samplers.GreedySampler(), reference.shape[1] - 1, return_attention=True,
                 special_ids=ids)
    np.testing.assert_array_equal(out["tokens"][:, 0].numpy(), reference[:, 1:])
    attention = out["attention"].numpy()  # (B, 1 sequence, T, 1 level, 1 + patches)
    assert attention.shape == (3, 1, reference.shape[1] - 1, 1, image_tokens.shape[2])
    live = reference[:, 1:] != text["pad_token_id"]
    np.testing.assert_allclose(attention[:, 0, :, 0].sum(-1)[live], 1.0, rtol=1e-5)


def test_cross_attention_input_width_is_the_vision_width():
    arguments = bert_text_decoder_arguments(config("blip_b"))
    assert (arguments["hidden_dim"], arguments["encoder_dim"]) == (40, 48)


@pytest.mark.parametrize("missing", ["vision_model.encoder.layers.1.self_attn.qkv.weight",
                                     "text_decoder.cls.predictions.bias"])
def test_a_missing_tensor_is_one_line_naming_it(missing):
    weights = dict(tensors("blip_a"))
    del weights[missing]
    load = blip_vision_tower_from_hf if missing.startswith("vision") else bert_text_decoder_from_hf
    with pytest.raises(MissingTensorError) as error:
        load(config("blip_a"), weights)
    assert str(error.value) == f"tensor {missing} is missing from the checkpoint."


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_checkpoint_tensors_written_back_equal_the_file_and_cover_every_weight(name):
    tower, decoder = _model(name)
    written = blip_checkpoint_tensors(tower, decoder)
    weights = tensors(name)
    assert set(written) <= set(weights)
    # Only the tied LM-head decoder (the word embedding) and parts a captioner never runs stay unwritten.
    assert not any(key.startswith(("vision_model.", "text_decoder.bert.")) for key in set(weights) - set(written))
    for key, value in written.items():
        assert value.dtype == np.float32 and value.shape == weights[key].shape, key
        np.testing.assert_array_equal(value, weights[key], err_msg=key)
    rebuilt = blip_vision_tower_from_hf(config(name), written), bert_text_decoder_from_hf(config(name), written)
    for built, again in zip((tower, decoder), rebuilt):
        assert len(built.weights) == len(again.weights)
        for a, b in zip(built.weights, again.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
