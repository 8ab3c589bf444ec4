"""Linear projection of grid tokens (patches, CNN cells) plus positions, layer-normalised."""

import keras
from keras import ops

from tfcaption.layers.positions import sinusoid_2d

POSITIONS = ("learned", "sinusoid_2d")


@keras.saving.register_keras_serializable(package="tfcaption")
class PatchEncoder(keras.layers.Layer):
    """Projects flattened patches (or feature-map cells) to `hidden_dim` and adds positions.

    Positions are a learned table (ViT) or fixed 2-D sinusoids over the `grid`
    (Springenberg et al.: the CNN grid keeps its geometry without learning it).
    The output is layer-normalised so the first memory-augmented encoder layer
    (post-LN, as in M2) receives inputs on the same scale as region features
    after M2's input projection.

    Args:
        num_patches: int. Tokens per image (the position table size).
        hidden_dim: int. Model width.
        layer_norm_epsilon: float. Epsilon of the output LayerNorm.
        positions: "learned" or "sinusoid_2d".
        grid: (rows, cols) of the tokens, row-major; needed for "sinusoid_2d".
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> patches = keras.ops.zeros((2, 64, 432))
    >>> tuple(PatchEncoder(64, 128)(patches).shape)
    (2, 64, 128)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.
    """

    def __init__(self, num_patches, hidden_dim, layer_norm_epsilon=1e-5, positions="learned", grid=None, **kwargs):
        super().__init__(**kwargs)
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}.")
        self.num_patches = int(num_patches)
        self.hidden_dim = int(hidden_dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.positions = positions
        self.grid = None if grid is None else tuple(int(g) for g in grid)
        if positions == "sinusoid_2d" and (self.grid is None or self.grid[0] * self.grid[1] != self.num_patches):
            raise ValueError(f"sinusoid_2d positions need grid=(rows, cols) with rows * cols = {num_patches}.")
        self.projection = keras.layers.Dense(
            hidden_dim, kernel_initializer="glorot_uniform", dtype=self.dtype_policy, name="projection"
        )
        if positions == "learned":
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
        if self.positions == "learned":
            self.position_embedding.build((None,))
        self.layer_norm.build(tuple(input_shape[:-1]) + (self.hidden_dim,))
        self.built = True

    def position_table(self):
        """(num_patches, hidden_dim) positions added to the projected tokens."""
        if self.positions == "learned":
            return self.position_embedding(ops.arange(self.num_patches))
        return ops.cast(sinusoid_2d(*self.grid, self.hidden_dim), self.compute_dtype)

    def call(self, patches):
        return self.layer_norm(self.projection(patches) + self.position_table()[None])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_patches": self.num_patches,
                "hidden_dim": self.hidden_dim,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "positions": self.positions,
                "grid": None if self.grid is None else list(self.grid),
            }
        )
        return config
