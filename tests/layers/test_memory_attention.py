import numpy as np
import pytest

import keras

from tests.helpers.numpy_reference import memory_attention
from tfcaption.layers.memory_attention import MemoryAugmentedAttention


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("memory_slots", [0, 5])
def test_matches_numpy_equations(memory_slots):
    layer = MemoryAugmentedAttention(num_heads=2, key_dim=4, memory_slots=memory_slots)
    q, kv = _random((3, 4, 8), 0), _random((3, 6, 8), 1)
    out = np.asarray(layer(q, kv, kv))
    np.testing.assert_allclose(out, memory_attention(layer, q, kv, kv), atol=1e-5)


def test_masked_keys_get_no_weight_but_memory_is_never_masked():
    layer = MemoryAugmentedAttention(num_heads=2, key_dim=4, memory_slots=3)
    x = _random((2, 5, 8), 2)
    mask = np.ones((2, 1, 5), bool)
    mask[0, 0, 3:] = False
    full_mask = np.broadcast_to(mask, (2, 5, 5))
    out, weights = layer(x, x, x, attention_mask=mask, return_attention_scores=True)
    weights = np.asarray(weights)
    assert weights.shape == (2, 2, 5, 8)  # 5 keys + 3 memory slots
    np.testing.assert_array_equal(weights[0, :, :, 3:5], 0.0)
    assert (weights[0, :, :, 5:] > 0).all()
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), memory_attention(layer, x, x, x, full_mask), atol=1e-5)
    # Changing a masked key must not change the output.
    changed = x.copy()
    changed[0, 4] += 10.0
    out2 = layer(x, changed, changed, attention_mask=mask)
    np.testing.assert_allclose(np.asarray(out2)[0], np.asarray(out)[0], atol=1e-5)


def test_memory_slots_are_scaled_and_released_init_stays_within_its_bound():
    layer = MemoryAugmentedAttention(num_heads=2, key_dim=4, memory_slots=10, memory_init="released")
    layer(_random((1, 2, 8), 3), _random((1, 2, 8), 3), _random((1, 2, 8), 3))
    bound = np.sqrt(6.0 / (10 * 8 + 8))
    assert np.abs(np.asarray(layer.memory_keys)).max() <= bound
    k, v = layer.project_key_value(_random((1, 2, 8), 4), _random((1, 2, 8), 4))
    np.testing.assert_allclose(
        np.asarray(k)[0, 2:].reshape(10, 8), np.sqrt(4) * np.asarray(layer.memory_keys)[0], atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(v)[0, 2:].reshape(10, 8), np.sqrt(10) * np.asarray(layer.memory_values)[0], atol=1e-6
    )


def test_paper_init_gives_memory_std_one_over_key_dim_and_slots():
    layer = MemoryAugmentedAttention(num_heads=8, key_dim=64, memory_slots=40)
    x = np.zeros((1, 1, 512), "float32")
    layer(x, x, x)
    assert abs(np.asarray(layer.memory_keys).std() - 1 / 64) < 0.003
    assert abs(np.asarray(layer.memory_values).std() - 1 / 40) < 0.003


def test_get_config_round_trips_and_the_layer_is_registered():
    layer = MemoryAugmentedAttention(num_heads=2, key_dim=4, value_dim=6, memory_slots=3, memory_init="released")
    clone = MemoryAugmentedAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_object("tfcaption>MemoryAugmentedAttention") is MemoryAugmentedAttention
