import numpy as np

from tests.helpers.numpy_reference import dense, layer_norm, memory_attention, sigmoid
from tfcaption.layers.meshed_attention import MeshedCrossAttention


def test_gates_and_mesh_match_numpy():
    rng = np.random.default_rng(0)
    layer = MeshedCrossAttention(num_heads=2, key_dim=4, num_levels=3, dropout=0.0)
    s = rng.normal(size=(2, 5, 8)).astype("float32")
    enc = rng.normal(size=(2, 3, 6, 8)).astype("float32")
    enc_mask = np.ones((2, 6), bool)
    enc_mask[1, 4:] = False
    token_mask = np.ones((2, 5, 1), "float32")
    token_mask[0, 3:] = 0.0
    k, v = layer.project_encoder(enc)
    out, weights, gates = layer(s, k, v, encoder_mask=enc_mask, token_mask=token_mask, return_attention=True)

    attention_mask = np.broadcast_to(enc_mask[:, None, :], (2, 5, 6))
    levels, expected_gates = [], []
    for i in range(3):
        attended = memory_attention(layer.attention, s, enc[:, i], enc[:, i], attention_mask)
        c = layer_norm(s + attended, layer.layer_norm) * token_mask
        a = sigmoid(dense(np.concatenate([s, c], -1), layer.gates[i]))
        levels.append(a * c)
        expected_gates.append(a.mean(-1))
    expected = sum(levels) / np.sqrt(3) * token_mask
    np.testing.assert_allclose(np.asarray(out), expected, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out)[0, 3:], 0.0)
    np.testing.assert_allclose(np.asarray(gates), np.stack(expected_gates, 1), atol=1e-5)
    weights = np.asarray(weights)
    assert weights.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(weights[1, :, :, 4:], 0.0)


def test_gates_are_separate_per_level_and_attention_shared():
    layer = MeshedCrossAttention(num_heads=2, key_dim=4, num_levels=3)
    layer.build((None, None, 8))
    names = sorted(w.path for w in layer.weights)
    assert sum("gate_" in n and n.endswith("kernel") for n in names) == 3
    assert sum("attention/query/kernel" in n for n in names) == 1
    assert layer.gates[0].kernel.shape == (16, 8)
