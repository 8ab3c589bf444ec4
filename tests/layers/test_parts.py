"""The math the composable parts add, against direct numpy: the sqrt(d_len + d_k) temperature, the plain
decoder's cross-attention, 2-D sinusoidal positions, and the patches encoder's own pixel scaling."""

import numpy as np
import pytest

import keras

from tests.helpers.numpy_reference import dense, layer_norm, memory_attention, softmax
from tfcaption.layers.cross_attention import CrossAttention
from tfcaption.layers.decoder import TransformerDecoder
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.memory_attention import MemoryAugmentedAttention
from tfcaption.layers.patch_image_encoder import PatchImageEncoder
from tfcaption.layers.positions import sinusoid_2d


@pytest.mark.parametrize("memory_slots", [0, 3])
def test_len_plus_dk_temperature_matches_numpy_with_padding(memory_slots):
    rng = np.random.default_rng(0)
    layer = MemoryAugmentedAttention(2, 4, memory_slots=memory_slots, scale="sqrt_len_plus_dk")
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = np.ones((2, 1, 6), bool)
    mask[1, :, 4:] = False  # the second image has 4 real tokens: d_len = 4 + m there
    out = np.asarray(layer(x, x, x, attention_mask=mask))
    np.testing.assert_allclose(out, memory_attention(layer, x, x, x, mask), atol=1e-5)
    plain = MemoryAugmentedAttention(2, 4, memory_slots=memory_slots)
    plain(x, x, x)
    plain.set_weights(layer.get_weights())
    assert np.abs(np.asarray(plain(x, x, x, attention_mask=mask)) - out).max() > 1e-4


def test_len_plus_dk_temperature_by_hand():
    # One head, d_k = 2, two keys: scores / sqrt(2 + 2) = scores / 2.
    layer = MemoryAugmentedAttention(1, 2, scale="sqrt_len_plus_dk")
    q = np.array([[[1.0, 0.0]]], "float32")
    kv = np.array([[[4.0, 0.0], [0.0, 0.0]]], "float32")
    layer(q, kv, kv)
    identity = [np.eye(2, dtype="float32"), np.zeros(2, "float32")]
    layer.set_weights(identity * 4)
    _, weights = layer.attend(q, *layer.project_key_value(kv, kv), return_attention_scores=True)
    np.testing.assert_allclose(np.asarray(weights)[0, 0, 0], softmax(np.array([4.0, 0.0]) / 2.0), atol=1e-6)


def test_encoder_layers_use_the_configured_temperature():
    encoder = MemoryAugmentedEncoder(2, 2, 4, 16, memory_slots=0, dropout=0.0, scale="sqrt_len_plus_dk")
    encoder(np.zeros((1, 3, 8), "float32"))
    assert all(layer.attention.scale == "sqrt_len_plus_dk" for layer in encoder.encoder_layers)
    assert MemoryAugmentedEncoder.from_config(encoder.get_config()).scale == "sqrt_len_plus_dk"


def test_plain_cross_attention_attends_the_last_level_only_matching_numpy():
    rng = np.random.default_rng(1)
    layer = CrossAttention(2, 4, dropout=0.0)
    s = rng.normal(size=(2, 5, 8)).astype("float32")
    levels = rng.normal(size=(2, 3, 6, 8)).astype("float32")
    encoder_mask = np.ones((2, 6), bool)
    encoder_mask[0, 4:] = False
    layer.build(s.shape)
    k, v = layer.project_encoder(levels)
    out, weights, gates = layer(s, k, v, encoder_mask, return_attention=True)
    mask = np.broadcast_to(encoder_mask[:, None], (2, 5, 6))
    last = levels[:, -1]
    expected = layer_norm(s + memory_attention(layer.attention, s, last, last, mask), layer.layer_norm)
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    assert gates is None and tuple(weights.shape) == (2, 1, 5, 6)
    np.testing.assert_allclose(np.asarray(weights)[0, 0, :, 4:], 0.0)
    changed = levels.copy()
    changed[:, :2] += 10.0  # the lower levels do not matter
    k2, v2 = layer.project_encoder(changed)
    np.testing.assert_allclose(np.asarray(layer(s, k2, v2, encoder_mask)), np.asarray(out), atol=1e-6)


def _transformer_decoder():
    keras.utils.set_random_seed(7)
    decoder = TransformerDecoder(20, 2, 8, 2, 4, 16, num_levels=3, max_length=10, dropout=0.0)
    decoder.build()
    return decoder


def test_transformer_decoder_layer_matches_numpy():
    decoder = _transformer_decoder()
    rng = np.random.default_rng(2)
    levels = rng.normal(size=(1, 3, 5, 8)).astype("float32")
    tokens = np.array([[2, 7, 8]])
    layer = decoder.decoder_layers[0]
    y = np.asarray(decoder._embed(tokens, np.array([[1, 2, 3]])))
    causal = np.tril(np.ones((3, 3), bool))[None]
    s = layer_norm(y + memory_attention(layer.self_attention, y, y, y, causal), layer.self_norm)
    last = levels[:, -1]
    c = layer_norm(s + memory_attention(layer.cross_attention.attention, s, last, last), layer.cross_attention.layer_norm)
    hidden = np.maximum(dense(c, layer.feed_forward.inner_dense), 0)
    expected = layer_norm(c + dense(hidden, layer.feed_forward.output_dense), layer.feed_forward.layer_norm)
    k, v = layer.cross_attention.project_encoder(levels)
    np.testing.assert_allclose(np.asarray(layer(y, k, v, causal)), expected, atol=1e-5)


def test_transformer_decoder_step_with_cache_equals_teacher_forcing_and_reports_one_level():
    decoder = _transformer_decoder()
    levels = np.random.default_rng(3).normal(size=(2, 3, 5, 8)).astype("float32")
    tokens = np.array([[2, 7, 8, 9], [2, 5, 5, 11]])
    full = np.asarray(decoder(tokens, levels))
    cache, kv = decoder.initial_cache(2, 6), decoder.project_encoder(levels)
    for t in range(4):
        logits, cache, attention, gates = decoder.step(tokens[:, t], t, cache, kv, return_attention=True)
        np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=1e-5)
        assert tuple(attention.shape) == (2, 1, 5) and gates is None
        np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-5)
    assert decoder.attention_levels == 1 and not decoder.has_gates


def test_2d_sinusoids_match_the_formula():
    rows, cols, dim = 3, 4, 8
    table = sinusoid_2d(rows, cols, dim)
    half = dim // 2
    for r in range(rows):
        for c in range(cols):
            for j in range(half):
                rate = 1.0 / 10000 ** (2 * (j // 2) / half)
                trig = np.sin if j % 2 == 0 else np.cos
                np.testing.assert_allclose(table[r * cols + c, j], trig((r + 1) * rate), atol=1e-6)
                np.testing.assert_allclose(table[r * cols + c, half + j], trig((c + 1) * rate), atol=1e-6)
    assert len({tuple(row) for row in table.round(6)}) == rows * cols  # every cell distinct


def test_patches_encoder_scales_pixels_itself_and_adds_2d_positions():
    rng = np.random.default_rng(4)
    encoder = PatchImageEncoder(8, 4, (), hidden_dim=8, positions="sinusoid_2d")
    encoder.build()
    pixels = rng.uniform(0, 255, (1, 8, 8, 3)).astype("float32")
    tokens, mask = encoder(pixels)
    x = pixels / 127.5 - 1.0
    patches = x.reshape(1, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(1, 4, 48)
    pe = encoder.patch_encoder
    expected = layer_norm(dense(patches, pe.projection) + sinusoid_2d(2, 2, 8)[None], pe.layer_norm)
    np.testing.assert_allclose(np.asarray(tokens), expected, atol=1e-5)
    assert mask is None and encoder.token_grid.cells == 4
    assert not pe.trainable_weights or all("position" not in w.path for w in pe.trainable_weights)
