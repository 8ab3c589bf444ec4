"""Position-wise feed-forward sublayer with residual and post-LayerNorm."""

import keras

from tfcaption.layers.dropout import Dropout


@keras.saving.register_keras_serializable(package="tfcaption")
class PositionWiseFeedForward(keras.layers.Layer):
    """`LN(x + Dropout(W2 Dropout(ReLU(W1 x + b1)) + b2))`, as in M2.

    Args:
        intermediate_dim: int. Inner width (d_ff).
        dropout: float. Dropout on the inner activation and on the output.
        layer_norm_epsilon: float. LayerNorm epsilon (M2 uses 1e-5).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> tuple(PositionWiseFeedForward(128)(keras.ops.ones((2, 5, 64))).shape)
    (2, 5, 64)

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Sec. 3.3.
    """

    def __init__(self, intermediate_dim, dropout=0.1, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.inner_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.output_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    def build(self, input_shape):
        self.inner_dense = keras.layers.Dense(
            self.intermediate_dim, activation="relu", dtype=self.dtype_policy, name="inner"
        )
        self.inner_dense.build(input_shape)
        self.output_dense = keras.layers.Dense(input_shape[-1], dtype=self.dtype_policy, name="output")
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.layer_norm.build(input_shape)
        self.built = True

    def call(self, x, training=None):
        hidden = self.inner_dropout(self.inner_dense(x), training=training)
        out = self.output_dropout(self.output_dense(hidden), training=training)
        return self.layer_norm(x + out)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
