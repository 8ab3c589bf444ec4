"""Linear patch projection plus a learned position embedding."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcaption")
class PatchEncoder(keras.layers.Layer):
    """Projects flattened patches to `hidden_dim` and adds learned positions.

    The output is layer-normalised so the first memory-augmented encoder layer
    (post-LN, as in M2) receives inputs on the same scale as region features
    after M2's input projection.

    Args:
        num_patches: int. Number of patches per image (the position table size).
        hidden_dim: int. Model width.
        layer_norm_epsilon: float. Epsilon of the output LayerNorm.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> patches = keras.ops.zeros((2, 64, 432))
    >>> tuple(PatchEncoder(64, 128)(patches).shape)
    (2, 64, 128)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.
    """

    def __init__(self, num_patches, hidden_dim, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_patches = int(num_patches)
        self.hidden_dim = int(hidden_dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.projection = keras.layers.Dense(
            hidden_dim, kernel_initializer="glorot_uniform", dtype=self.dtype_policy, name="projection"
        )
        self.position_embedding = keras.layers.Embedding(
            num_patches,
            hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="position_embedding",
        )
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.position_embedding.build((None,))
        self.layer_norm.build(tuple(input_shape[:-1]) + (self.hidden_dim,))

    def call(self, patches):
        positions = self.position_embedding(ops.arange(self.num_patches))
        return self.layer_norm(self.projection(patches) + positions[None])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_patches": self.num_patches,
                "hidden_dim": self.hidden_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
