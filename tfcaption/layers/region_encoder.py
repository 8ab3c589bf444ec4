"""M2's input projection for precomputed region features."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcaption")
class RegionEncoder(keras.layers.Layer):
    """`LN(Dropout(ReLU(I W + b)))` over region features, plus their padding mask.

    Regions are a set, so no positional encoding is added. Rows of all zeros
    in the raw features are padding.

    Args:
        hidden_dim: int. Model width.
        dropout: float. Dropout after the ReLU.
        layer_norm_epsilon: float. LayerNorm epsilon.
        padding_mask: "corrected" masks the rows whose raw features are all
            zero; "released" masks nothing, reproducing the authors' code
            (it tests the LayerNorm output for zeros, which never happens).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> features = keras.ops.ones((2, 50, 2048))
    >>> projected, mask = RegionEncoder(512)(features)
    >>> tuple(projected.shape), tuple(mask.shape)
    ((2, 50, 512), (2, 50))

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(self, hidden_dim, dropout=0.1, layer_norm_epsilon=1e-5, padding_mask="corrected", **kwargs):
        super().__init__(**kwargs)
        if padding_mask not in ("corrected", "released"):
            raise ValueError(f"padding_mask must be 'corrected' or 'released', got {padding_mask!r}.")
        self.hidden_dim = int(hidden_dim)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.padding_mask = padding_mask
        self.projection = keras.layers.Dense(
            hidden_dim, activation="relu", dtype=self.dtype_policy, name="projection"
        )
        self.projection_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.layer_norm.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
        self.built = True

    def call(self, features, training=None):
        projected = self.layer_norm(self.projection_dropout(self.projection(features), training=training))
        if self.padding_mask == "released":
            mask = ops.ones(ops.shape(features)[:2], dtype="bool")
        else:
            mask = ops.any(ops.not_equal(features, 0), axis=-1)
        return projected, mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,), tuple(input_shape[:-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "padding_mask": self.padding_mask,
            }
        )
        return config
