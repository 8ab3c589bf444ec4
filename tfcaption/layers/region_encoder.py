"""M2's input projection for precomputed region features."""

import keras
from keras import ops

from tfcaption.layers.dropout import Dropout
from tfcaption.layers.image_encoder import ImageEncoderMixin


@keras.saving.register_keras_serializable(package="tfcaption")
class RegionEncoder(ImageEncoderMixin, keras.layers.Layer):
    """The `regions` image encoder: `LN(Dropout(ReLU(I W + b)))` over region features, plus their padding mask.

    Regions are a set, so no positional encoding is added and there is no
    token grid (attention maps are per region). Rows of all zeros in the raw
    features are padding.

    Args:
        hidden_dim: int. Model width.
        feature_dim: int. Values per region (the input width).
        dropout: float. Dropout after the ReLU.
        layer_norm_epsilon: float. LayerNorm epsilon.
        padding_mask: "corrected" masks the rows whose raw features are all
            zero; "released" masks nothing, reproducing the authors' code
            (it tests the LayerNorm output for zeros, which never happens).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> features = keras.ops.ones((2, 50, 2048))
    >>> projected, mask = RegionEncoder(512, 2048)(features)
    >>> tuple(projected.shape), tuple(mask.shape)
    ((2, 50, 512), (2, 50))

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    input_key = "features"

    def __init__(self, hidden_dim, feature_dim=2048, dropout=0.1, layer_norm_epsilon=1e-5, padding_mask="corrected",
                 **kwargs):
        super().__init__(**kwargs)
        if padding_mask not in ("corrected", "released"):
            raise ValueError(f"padding_mask must be 'corrected' or 'released', got {padding_mask!r}.")
        self.hidden_dim = int(hidden_dim)
        self.feature_dim = int(feature_dim)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.padding_mask = padding_mask
        self.projection = keras.layers.Dense(
            hidden_dim, activation="relu", dtype=self.dtype_policy, name="projection"
        )
        self.projection_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    @property
    def example_shape(self):
        return (None, self.feature_dim)

    def build(self, input_shape=None):
        self.projection.build((None, None, self.feature_dim))
        self.layer_norm.build((None, None, self.hidden_dim))
        self.built = True

    def call(self, features, training=None):
        width = features.shape[-1]
        if width is not None and width != self.feature_dim:
            raise ValueError(f"region features have {width} values per region; this model expects {self.feature_dim}.")
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
                "feature_dim": self.feature_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "padding_mask": self.padding_mask,
            }
        )
        return config
