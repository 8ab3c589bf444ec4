"""BlipVisionTower and BertTextDecoder against direct numpy statements of their math, on small random weights."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.numpy_reference import dense, layer_norm, softmax
from tfcaption.layers.bert_text_decoder import BertTextDecoder
from tfcaption.layers.blip_vision_tower import BlipVisionTower, bicubic_resize_matrix

_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _perturb(layer, seed=0):
    """Every weight random (LayerNorm gains and biases included), so a misplaced weight shows."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32") + (1.0 if "gamma" in variable.path else 0))


def _attention(q, k, v, heads, mask=None):
    """q (B, T, d), k / v (B, S, d) already projected; mask (B, T, S) True where allowed."""
    b, t, d = q.shape
    split = lambda x: x.reshape(b, x.shape[1], heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / math.sqrt(d // heads)
    if mask is not None:
        scores = np.where(mask[:, None], scores, -np.inf)
    weights = softmax(scores)
    return (weights @ split(v)).transpose(0, 2, 1, 3).reshape(b, t, d), weights


def _vision_reference(tower, images):
    b, h, w, _ = images.shape
    p, d = tower.patch_size, tower.hidden_dim
    patches = images.reshape(b, h // p, p, w // p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * 3)
    x = patches @ np.asarray(tower.patch_embedding.kernel).reshape(-1, d) + np.asarray(tower.patch_embedding.bias)
    cls = np.broadcast_to(np.asarray(tower.class_embedding), (b, 1, d))
    x = np.concatenate([cls, x], 1) + np.asarray(tower.position_embedding)
    for block in tower.blocks:
        qkv = dense(layer_norm(x, block.layer_norm1), block.qkv)
        attended, _ = _attention(qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:], tower.num_heads)
        x = x + dense(attended, block.projection)
        x = x + dense(_gelu(dense(layer_norm(x, block.layer_norm2), block.fc1)), block.fc2)
    return layer_norm(x, tower.post_layernorm)


def _decoder_reference(decoder, tokens, image):
    """Teacher-forced logits and the last layer's head-averaged cross-attention; image (B, R, d_vision)."""
    b, t = tokens.shape
    real = tokens != decoder.pad_id
    mask = np.tril(np.ones((t, t), bool))[None] & real[:, None, :]
    x = np.asarray(decoder.word_embedding.embeddings)[tokens] + np.asarray(decoder.position_embedding.embeddings)[:t]
    x = layer_norm(x, decoder.embedding_norm)
    heads = decoder.num_heads
    for layer in decoder.decoder_layers:
        attended, _ = _attention(dense(x, layer.self_query), dense(x, layer.self_key), dense(x, layer.self_value),
                                 heads, mask)
        s = layer_norm(x + dense(attended, layer.self_output), layer.self_norm)
        crossed, weights = _attention(dense(s, layer.cross_query), dense(image, layer.cross_key),
                                      dense(image, layer.cross_value), heads)
        m = layer_norm(s + dense(crossed, layer.cross_output), layer.cross_norm)
        x = layer_norm(m + dense(_gelu(dense(m, layer.intermediate)), layer.output_dense), layer.output_norm)
    h = layer_norm(_gelu(dense(x, decoder.head_dense)), decoder.head_norm)
    return h @ np.asarray(decoder.word_embedding.embeddings).T + np.asarray(decoder.head_bias), weights.mean(1)


@pytest.fixture(scope="module")
def tower():
    layer = BlipVisionTower(image_size=16, patch_size=4, hidden_dim=12, num_layers=2, num_heads=3, intermediate_dim=20,
                            layer_norm_epsilon=1e-6)
    layer.build()
    _perturb(layer)
    return layer


@pytest.fixture(scope="module")
def decoder():
    layer = BertTextDecoder(vocab_size=11, num_layers=2, hidden_dim=8, num_heads=2, intermediate_dim=16, encoder_dim=12,
                            max_length=9)
    layer.build()
    _perturb(layer, seed=1)
    return layer


def _tokens():
    return np.array([[9, 4, 5, 6, 2, 0, 0], [9, 7, 7, 3, 1, 8, 2]], np.int32)  # 0: padding


def test_vision_tower_matches_numpy(tower):
    images = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(tower(images), _vision_reference(tower, images), rtol=1e-4, atol=1e-4)


def test_bicubic_resize_matrix_weights_sum_to_one_and_keep_a_ramp_inside():
    matrix = bicubic_resize_matrix(4, 7)
    np.testing.assert_allclose(matrix.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(bicubic_resize_matrix(5, 5), np.eye(5), atol=1e-12)
    ramp, source = matrix @ np.arange(4.0), (np.arange(7) + 0.5) * 4 / 7 - 0.5
    inside = (source >= 1) & (source <= 2)  # all four taps inside: the cubic kernel reproduces straight lines
    np.testing.assert_allclose(ramp[inside], source[inside], atol=1e-12)


def test_bicubic_resize_is_torchs_kernel_not_tf_images():
    grid = np.random.default_rng(3).normal(size=(4, 4)).astype("float32")
    ours = bicubic_resize_matrix(4, 6) @ grid @ bicubic_resize_matrix(4, 6).T
    tf_bicubic = tf.image.resize(grid[None, :, :, None], (6, 6), method="bicubic")[0, :, :, 0].numpy()
    assert np.abs(ours - tf_bicubic).max() > 1e-3  # a = -0.75 against tf's a = -0.5


def test_vision_tower_resizes_positions_for_another_grid(tower):
    """A 24 x 20 image (6 x 5 patches) against numpy with the 4 x 4 patch table resized along each axis."""
    images = np.random.default_rng(4).normal(size=(1, 24, 20, 3)).astype("float32")
    table = np.asarray(tower.position_embedding)[0]
    grid = np.einsum("ip,jq,pqd->ijd", bicubic_resize_matrix(4, 6), bicubic_resize_matrix(4, 5),
                     table[1:].reshape(4, 4, -1))
    resized = np.concatenate([table[:1], grid.reshape(30, -1)])[None]
    reference = _vision_reference(_Resized(tower, resized), images)
    np.testing.assert_allclose(tower(images), reference, rtol=1e-4, atol=1e-4)


class _Resized:
    """`tower` as `_vision_reference` reads it, with another position table."""

    def __init__(self, tower, table):
        self.tower, self.position_embedding = tower, table

    def __getattr__(self, name):
        return getattr(self.tower, name)


def test_teacher_forced_logits_and_attention_match_numpy(decoder):
    image = np.random.default_rng(5).normal(size=(2, 6, 12)).astype("float32")
    logits, weights, gates = decoder(_tokens(), image[:, None], return_attention=True)
    ref_logits, ref_weights = _decoder_reference(decoder, _tokens(), image)
    real = _tokens() != 0
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(weights)[:, 0], ref_weights, rtol=1e-4, atol=1e-5)
    assert gates is None and logits.dtype == "float32"


def test_grouped_sequences_equal_repeated_images(decoder):
    """k sequences per image attend to the image's keys once; the same as k copies of the image."""
    rng = np.random.default_rng(6)
    image = rng.normal(size=(2, 1, 6, 12)).astype("float32")
    tokens = rng.integers(1, 11, size=(6, 5)).astype("int32")  # 3 per image, image by image
    repeated = np.repeat(image, 3, axis=0)
    grouped, grouped_weights, _ = decoder(tokens, image, captions_per_image=3, return_attention=True)
    plain, plain_weights, _ = decoder(tokens, repeated, return_attention=True)
    np.testing.assert_allclose(grouped, plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grouped_weights, plain_weights, rtol=1e-5, atol=1e-6)
    kv, cache = decoder.project_encoder(image), decoder.initial_cache(6, 5)
    for position in range(5):
        logits, cache, weights, gates = decoder.step(tokens[:, position], position, cache, kv, return_attention=True,
                                                     captions_per_image=3)
        np.testing.assert_allclose(logits, np.asarray(plain)[:, position], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(weights, np.asarray(plain_weights)[:, :, position], rtol=1e-5, atol=1e-6)


def test_encoder_mask_hides_image_tokens(decoder):
    rng = np.random.default_rng(7)
    image = rng.normal(size=(2, 1, 6, 12)).astype("float32")
    mask = np.array([[True] * 4 + [False] * 2] * 2)
    masked = decoder(_tokens(), image, mask)
    cut = decoder(_tokens(), image[:, :, :4])
    np.testing.assert_allclose(masked, cut, rtol=1e-5, atol=1e-5)


def test_layers_rebuild_from_their_config(tower, decoder):
    for layer in (tower, decoder):
        config = keras.saving.serialize_keras_object(layer)
        clone = keras.saving.deserialize_keras_object(config)
        if not clone.built:
            clone.build()
        assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in layer.weights]
        assert clone.get_config() == layer.get_config()


def test_user_mistakes_are_one_line_errors(decoder):
    with pytest.raises(ValueError, match="hidden_act 'swish' is not supported"):
        BlipVisionTower(16, 4, 12, 1, 3, 20, hidden_act="swish")
    with pytest.raises(ValueError, match="max_steps 10 exceeds the decoder's 9 positions"):
        decoder.initial_cache(1, 10)
    with pytest.raises(ValueError, match="expects image tokens of width 12"):
        decoder.project_encoder(np.zeros((1, 1, 3, 8), "float32"))
