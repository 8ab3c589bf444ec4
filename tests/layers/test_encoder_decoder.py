import numpy as np

import keras

from tests.helpers.numpy_reference import dense, layer_norm, memory_attention
from tfcaption.layers.decoder import MeshedDecoder
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.feed_forward import PositionWiseFeedForward
from tfcaption.layers.patch_encoder import PatchEncoder
from tfcaption.layers.patches import Patches
from tfcaption.layers.positions import sinusoid_table
from tfcaption.layers.region_encoder import RegionEncoder


def _ffn(layer, x):
    hidden = np.maximum(dense(x, layer.inner_dense), 0)
    return layer_norm(x + dense(hidden, layer.output_dense), layer.layer_norm)


def test_encoder_returns_every_level_matching_numpy():
    rng = np.random.default_rng(0)
    encoder = MemoryAugmentedEncoder(3, 2, 4, 16, memory_slots=4, dropout=0.0)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = np.ones((2, 6), bool)
    mask[1, 5:] = False
    out = np.asarray(encoder(x, padding_mask=mask))
    assert out.shape == (2, 3, 6, 8)
    h = x
    attention_mask = np.broadcast_to(mask[:, None, :], (2, 6, 6))
    for i, layer in enumerate(encoder.encoder_layers):
        att = memory_attention(layer.attention, h, h, h, attention_mask)
        h = _ffn(layer.feed_forward, layer_norm(h + att, layer.attention_norm))
        np.testing.assert_allclose(out[:, i], h, atol=1e-4)


def test_feed_forward_matches_numpy_and_keeps_the_layer_norm_epsilon():
    layer = PositionWiseFeedForward(12, dropout=0.0, layer_norm_epsilon=1e-5)
    x = np.random.default_rng(1).normal(size=(2, 3, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(layer(x)), _ffn(layer, x), atol=1e-5)
    assert layer.layer_norm.epsilon == 1e-5


def test_patches_are_row_major_blocks():
    images = np.arange(2 * 8 * 8 * 3, dtype="float32").reshape(2, 8, 8, 3)
    patches = np.asarray(Patches(4)(images))
    assert patches.shape == (2, 4, 48)
    np.testing.assert_array_equal(patches[1, 1], images[1, 0:4, 4:8].reshape(-1))
    np.testing.assert_array_equal(patches[0, 2], images[0, 4:8, 0:4].reshape(-1))
    encoded = PatchEncoder(4, 16)(patches)
    assert encoded.shape == (2, 4, 16)


def test_region_encoder_corrected_mask_hides_zero_rows_and_released_mask_none():
    features = np.ones((2, 4, 6), "float32")
    features[0, 2:] = 0.0
    _, corrected = RegionEncoder(8, 6, padding_mask="corrected")(features)
    _, released = RegionEncoder(8, 6, padding_mask="released")(features)
    np.testing.assert_array_equal(np.asarray(corrected), [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert np.asarray(released).all()


def _decoder():
    keras.utils.set_random_seed(3)
    decoder = MeshedDecoder(20, 2, 8, 2, 4, 16, num_levels=3, max_length=10, dropout=0.0)
    decoder.build((None, None))
    return decoder


def test_decoder_is_causal_and_padding_is_inert():
    decoder = _decoder()
    enc = np.random.default_rng(4).normal(size=(1, 3, 5, 8)).astype("float32")
    tokens = np.array([[2, 7, 8, 9, 1, 1]])
    mask = np.array([[True] * 4 + [False] * 2])
    logits = np.asarray(decoder(tokens, enc, padding_mask=mask))
    changed = tokens.copy()
    changed[0, 3] = 12  # a later token must not change earlier positions
    logits2 = np.asarray(decoder(changed, enc, padding_mask=mask))
    np.testing.assert_allclose(logits[0, :3], logits2[0, :3], atol=1e-5)
    assert np.abs(logits[0, 3] - logits2[0, 3]).max() > 1e-4
    # Padding positions: every sublayer output is zeroed, so the head sees zeros.
    np.testing.assert_allclose(logits[0, 4:], 0.0, atol=1e-6)
    # The mask, not the ids, says what padding is: other ids there change nothing.
    other = tokens.copy()
    other[0, 4:] = [0, 13]
    np.testing.assert_array_equal(np.asarray(decoder(other, enc, padding_mask=mask)), logits)
    # Without a mask every token is real: the same row read in full differs at the former padding.
    unmasked = np.asarray(decoder(tokens, enc))
    np.testing.assert_allclose(unmasked[0, :4], logits[0, :4], atol=1e-6)
    assert np.abs(unmasked[0, 4:]).max() > 1e-3


def test_decoder_padding_inside_a_row_is_read_by_no_token():
    decoder = _decoder()
    enc = np.random.default_rng(6).normal(size=(1, 3, 5, 8)).astype("float32")
    tokens = np.array([[2, 1, 7, 8]])  # a padded slot inside the row
    mask = tokens != 1
    logits = np.asarray(decoder(tokens, enc, padding_mask=mask))
    changed = np.asarray(decoder(np.array([[2, 9, 7, 8]]), enc, padding_mask=mask))
    np.testing.assert_allclose(changed, logits, atol=1e-6)
    np.testing.assert_allclose(logits[0, 1], 0.0, atol=1e-6)
    assert np.abs(np.asarray(decoder(tokens, enc))[0, 2:] - logits[0, 2:]).max() > 1e-4


def test_decoder_configs_saved_with_a_pad_id_still_load():
    decoder = _decoder()
    config = decoder.get_config()
    assert "pad_id" not in config
    old = MeshedDecoder.from_config({**config, "pad_id": 1})
    assert old.get_config() == config


def test_step_with_cache_equals_teacher_forcing():
    decoder = _decoder()
    enc = np.random.default_rng(5).normal(size=(2, 3, 5, 8)).astype("float32")
    tokens = np.array([[2, 7, 8, 9], [2, 5, 5, 11]])
    full = np.asarray(decoder(tokens, enc))
    cache = decoder.initial_cache(2, 6)
    kv = decoder.project_encoder(enc)
    for t in range(4):
        step_logits, cache = decoder.step(tokens[:, t], t, cache, kv)
        np.testing.assert_allclose(np.asarray(step_logits), full[:, t], atol=1e-5)


def test_position_table_is_frozen_sinusoid_with_zero_padding_row():
    decoder = _decoder()
    table = np.asarray(decoder.position_table)
    assert not decoder.position_table.trainable
    np.testing.assert_allclose(table, sinusoid_table(11, 8))
    np.testing.assert_array_equal(table[0], 0.0)
    np.testing.assert_allclose(table[3, 0], np.sin(3.0), atol=1e-6)
    np.testing.assert_allclose(table[3, 1], np.cos(3.0), atol=1e-6)
    assert decoder.position_table.path not in [w.path for w in decoder.trainable_weights]
