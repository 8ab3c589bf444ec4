"""Dropout with its mask drawn by an explicitly named generator: ThreeFry under XLA, Philox elsewhere."""

import keras
import tensorflow as tf

from tfcaption.layers.xla import compiling_for_xla


@keras.saving.register_keras_serializable(package="tfcaption")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` (same seeds from the layer's `SeedGenerator`, same keep probability and
    1 / (1 - rate) scaling) with the mask drawn by `tf.random.stateless_uniform` with a named algorithm:
    ThreeFry when the step is XLA-compiled, Philox otherwise.

    Why: Keras draws masks with TensorFlow's default stateless algorithm ("auto_select"), which under XLA
    on a CPU is far slower than Philox named explicitly, and Philox slower than ThreeFry: enough to be a
    large share of an XE step at M2's paper sizes with dropout 0.1 (the timings, with their machine, are
    in docs/results.md, "Where the XE time went"). ThreeFry has no kernel outside XLA, so an
    uncompiled step (`--no-xla`, eager) draws with Philox, which is what "auto_select" runs there: the
    same seed gives different masks compiled and uncompiled, each deterministic. With `noise_shape` set
    the Keras layer runs as it is.

    Example:
    >>> layer = Dropout(0.5, seed=1)
    >>> kept = keras.ops.convert_to_numpy(layer(keras.ops.ones((4, 1000)), training=True))
    >>> sorted(set(kept.ravel().tolist()))
    [0.0, 2.0]
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        seed = tf.cast(self.seed_generator.next(), tf.int64)
        algorithm = "threefry" if compiling_for_xla() else "philox"
        keep = tf.random.stateless_uniform(tf.shape(inputs), seed, alg=algorithm) >= self.rate
        return tf.where(keep, inputs * tf.cast(1.0 / (1.0 - self.rate), inputs.dtype), tf.zeros_like(inputs))
