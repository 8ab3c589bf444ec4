import numpy as np
import tensorflow as tf

from tfcaption.layers import ConvStem


def test_each_convolution_halves_the_side_and_matches_a_direct_convolution():
    stem = ConvStem((4, 6))
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    out = np.asarray(stem(images))
    assert out.shape == (2, 4, 4, 6) and stem.stride == 4
    conv = stem.convolutions[0]
    kernel, bias = np.asarray(conv.kernel), np.asarray(conv.bias)
    padded = np.pad(images, ((0, 0), (0, 1), (0, 1), (0, 0)))  # "same" padding for stride 2, even size
    first = np.asarray(conv(images))
    for i, j in [(0, 0), (3, 5), (7, 7)]:
        patch = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
        expected = np.maximum(np.einsum("bhwc,hwcf->bf", patch, kernel) + bias, 0)
        np.testing.assert_allclose(first[:, i, j], expected, atol=1e-5)
    assert ConvStem.from_config(stem.get_config()).filters == (4, 6)


def _stem_outputs_and_gradients(stem, images, jit_compile):
    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = stem(x)
            loss = tf.reduce_sum(y * tf.cos(y))
        return y, tape.gradient(loss, [x] + stem.trainable_variables)
    return tf.function(run, jit_compile=jit_compile), run


def test_under_xla_the_stem_is_matmuls_with_the_outputs_and_gradients_of_the_convolutions():
    for side in (16, 15):  # "same" padding differs for odd sizes
        stem = ConvStem((4, 6))
        images = tf.constant(np.random.default_rng(side).normal(size=(2, side, side + 2, 3)).astype("float32"))
        compiled, eager = _stem_outputs_and_gradients(stem, images, jit_compile=True)
        (y_xla, g_xla), (y_ref, g_ref) = compiled(images), eager(images)
        np.testing.assert_allclose(y_xla.numpy(), y_ref.numpy(), atol=1e-5)
        for a, b in zip(g_xla, g_ref):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
        xla_ops = {op.type for op in compiled.get_concrete_function(images).graph.get_operations()}
        plain = tf.function(lambda x: stem(x)).get_concrete_function(images).graph.get_operations()
        assert not any("Conv2D" in t for t in xla_ops) and any(op.type == "Conv2D" for op in plain)


def test_under_xla_a_mixed_bfloat16_stem_computes_in_bfloat16_with_float32_weights():
    stem = ConvStem((4, 6), dtype="mixed_bfloat16")
    images = tf.random.uniform((2, 16, 16, 3), dtype=tf.bfloat16)
    out = tf.function(stem, jit_compile=True)(images)
    assert out.dtype == tf.bfloat16 and out.shape == (2, 4, 4, 6)
    assert all(v.dtype == tf.float32 for v in stem.trainable_variables)
    np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), tf.cast(stem(images), tf.float32).numpy(),
                               atol=0.05, rtol=0.05)
