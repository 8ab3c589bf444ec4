"""tfcaption's Dropout: Keras's layer semantics, its mask drawn by ThreeFry under XLA and Philox elsewhere."""

import keras
import numpy as np
import tensorflow as tf

from tfcaption.layers.dropout import Dropout


def test_training_keeps_about_one_minus_rate_and_scales_the_kept_values_by_its_inverse():
    x = np.random.default_rng(0).standard_normal((200, 500)).astype(np.float32)
    out = keras.ops.convert_to_numpy(Dropout(0.3, seed=4)(x, training=True))
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.005
    np.testing.assert_allclose(out[kept], x[kept] / 0.7, rtol=1e-6)


def test_inference_and_rate_zero_return_the_input_unchanged():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dropout(0.5)(x, training=False)), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(Dropout(0.0)(x, training=True)), x)


def _eager(layer):
    return lambda t: layer(t, training=True)


def _xla(layer):
    return tf.function(lambda t: layer(t, training=True), jit_compile=True)


def test_masks_follow_the_seed_and_change_every_call_eager_and_under_xla():
    x = tf.ones((64, 64))
    for wrap in (_eager, _xla):
        first, second = wrap(Dropout(0.5, seed=7)), wrap(Dropout(0.5, seed=7))
        a1, a2 = first(x).numpy(), first(x).numpy()
        b1, b2 = second(x).numpy(), second(x).numpy()
        assert not np.array_equal(a1, a2)  # a new mask each step
        np.testing.assert_array_equal(a1, b1)  # the same seed, the same masks: deterministic runs
        np.testing.assert_array_equal(a2, b2)


def test_bfloat16_inputs_stay_bfloat16():
    out = Dropout(0.1, seed=1, dtype="mixed_bfloat16")(tf.ones((8, 8), tf.bfloat16), training=True)
    assert out.dtype == tf.bfloat16


def test_the_mask_is_threefry_under_xla_and_philox_elsewhere():
    x = tf.ones((32, 48))
    seed = tf.cast(Dropout(0.5, seed=3).seed_generator.next(), tf.int64)  # a fresh layer's first seed
    for wrap, algorithm in ((_eager, "philox"), (_xla, "threefry")):
        # each drawn where the layer draws it (ThreeFry has only an XLA kernel; XLA's Philox stream is its own)
        draw = wrap(lambda t, training: tf.random.stateless_uniform(t.shape, seed, alg=algorithm))
        expected = (draw(x) >= 0.5).numpy()
        np.testing.assert_array_equal(wrap(Dropout(0.5, seed=3))(x).numpy() != 0, expected)
