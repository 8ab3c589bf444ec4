"""Vision Transformer (ViT) layers: one pre-norm encoder block and the whole backbone.

The sublayers' weights have the shapes of Google's ViT checkpoints (`Transformer/encoderblock_{i}/...`
in the `.npz` files), so `tfcaption.models.vit.load_npz_weights` copies them without reshaping:
`keras.layers.MultiHeadAttention` keeps its query/key/value kernels as (D, heads, D/heads) and its
output kernel as (heads, D/heads, D), exactly Flax's `MultiHeadDotProductAttention` layout.
"""

import numbers

import keras
from keras import ops

from tfcaption.layers.dropout import Dropout
from tfcaption.layers.image_encoder import TokenGrid

GELU_FORMS = ("tanh", "erf")


def _check_gelu(gelu):
    if gelu not in GELU_FORMS:
        raise ValueError(f"gelu must be one of {GELU_FORMS}, got {gelu!r}.")
    return gelu


def _pair(value, what):
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{what} must be an int or (height, width), got {value!r}.")
    return value


@keras.saving.register_keras_serializable(package="tfcaption")
class VitBlock(keras.layers.Layer):
    """One ViT encoder block: `x + MHA(LN(x))`, then `x + MLP(LN(x))` (pre-norm).

    The MLP is `Dense(mlp_dim) -> GELU -> Dense(hidden_dim)`. Dropout (as in Google's `Encoder1DBlock`)
    follows the attention, the GELU and the MLP's output; attention probabilities are not dropped.

    Args:
        hidden_dim: int. Token width D (a multiple of `num_heads`).
        num_heads: int. Attention heads; each has D / num_heads dimensions.
        mlp_dim: int. The MLP's inner width.
        dropout: float. Dropout rate.
        layer_norm_epsilon: float. LayerNorm epsilon (1e-6 in Google's ViT).
        gelu: "tanh" for the tanh approximation (Flax's `nn.gelu` default, which Google's ViT
            checkpoints were trained with) or "erf" for the exact GELU (what vit-keras uses).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> block = VitBlock(hidden_dim=32, num_heads=4, mlp_dim=64)
    >>> tuple(block(keras.ops.ones((2, 5, 32))).shape)
    (2, 5, 32)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
        Scale", ICLR 2021.
    """

    def __init__(self, hidden_dim, num_heads, mlp_dim, dropout=0.0, layer_norm_epsilon=1e-6, gelu="tanh",
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.mlp_dim = int(mlp_dim)
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu = _check_gelu(gelu)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads}.")
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm")
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads, self.hidden_dim // self.num_heads, dtype=self.dtype_policy, name="attention")
        self.attention_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="mlp_norm")
        self.mlp_inner = keras.layers.Dense(self.mlp_dim, dtype=self.dtype_policy, name="mlp_inner")
        self.mlp_inner_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.mlp_output = keras.layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="mlp_output")
        self.mlp_output_dropout = Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        if input_shape[-1] != self.hidden_dim:
            raise ValueError(f"VitBlock of hidden_dim {self.hidden_dim} got inputs of shape {input_shape}.")
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_inner.build(input_shape)
        self.mlp_output.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
        self.built = True

    def call(self, x, training=None):
        y = self.attention_norm(x)
        y = self.attention(y, y, training=training)
        x = x + self.attention_dropout(y, training=training)
        y = ops.gelu(self.mlp_inner(self.mlp_norm(x)), approximate=self.gelu == "tanh")
        y = self.mlp_output(self.mlp_inner_dropout(y, training=training))
        return x + self.mlp_output_dropout(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_dim": self.hidden_dim, "num_heads": self.num_heads, "mlp_dim": self.mlp_dim,
            "dropout": self.dropout, "layer_norm_epsilon": self.layer_norm_epsilon, "gelu": self.gelu,
        })
        return config


@keras.saving.register_keras_serializable(package="tfcaption")
class VisionTransformer(keras.layers.Layer):
    """The ViT encoder: images in [-1, 1] to all its tokens after the final LayerNorm.

    `Conv2D(hidden_dim, patch_size, strides=patch_size, "valid")` embeds the patches, which are flattened
    row by row; a learned class token is prepended and a learned position embedding `(1, 1 + N, D)`
    added, then dropout, `num_layers` `VitBlock`s and a final LayerNorm (`encoder_norm`). The output is
    `(B, 1 + (H / P) * (W / P), D)`: the class token first, then the patch grid row by row
    (`token_grid`). Inputs are not rescaled here: pixels in [0, 255] must be mapped with
    `x / 127.5 - 1` first.

    Args:
        patch_size: int. Patch side P in pixels.
        hidden_dim: int. Token width D.
        num_heads: int. Attention heads per block.
        num_layers: int. Number of `VitBlock`s.
        mlp_dim: int. Inner width of each block's MLP.
        image_size: int or (height, width). Input size in pixels, multiples of `patch_size`; it fixes
            the number of position embeddings.
        dropout: float. Dropout on the embeddings and inside the blocks.
        layer_norm_epsilon: float. LayerNorm epsilon.
        gelu: "tanh" or "erf", see `VitBlock`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> vit = VisionTransformer(patch_size=8, hidden_dim=32, num_heads=4, num_layers=2, mlp_dim=64,
    ...                         image_size=(32, 48))
    >>> tuple(vit(keras.ops.zeros((2, 32, 48, 3))).shape), vit.token_grid
    ((2, 25, 32), TokenGrid(rows=4, cols=6, prefix=1))

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
        Scale", ICLR 2021.
    """

    def __init__(self, patch_size, hidden_dim, num_heads, num_layers, mlp_dim, image_size, dropout=0.0,
                 layer_norm_epsilon=1e-6, gelu="tanh", **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.mlp_dim = int(mlp_dim)
        self.image_size = _pair(image_size, "image_size")
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu = _check_gelu(gelu)
        if any(side <= 0 or side % self.patch_size for side in self.image_size):
            raise ValueError(f"image_size {self.image_size} must be positive multiples of patch_size "
                             f"{self.patch_size}.")
        self.patch_embedding = keras.layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size, padding="valid",
            dtype=self.dtype_policy, name="patch_embedding")
        self.embedding_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.blocks = [
            VitBlock(self.hidden_dim, self.num_heads, self.mlp_dim, dropout, layer_norm_epsilon, self.gelu,
                     dtype=self.dtype_policy, name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        self.encoder_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="encoder_norm")

    @property
    def grid(self):
        """(rows, cols) of the patch grid."""
        return (self.image_size[0] // self.patch_size, self.image_size[1] // self.patch_size)

    @property
    def token_grid(self):
        return TokenGrid(*self.grid, prefix=1)

    @property
    def num_tokens(self):
        rows, cols = self.grid
        return 1 + rows * cols

    def build(self, input_shape=None):
        if input_shape is not None and tuple(input_shape[1:3]) != self.image_size:
            raise ValueError(f"VisionTransformer built for images of {self.image_size} got inputs of shape "
                             f"{tuple(input_shape)}.")
        self.patch_embedding.build((None,) + self.image_size + (3,))
        self.class_token = self.add_weight(
            shape=(1, 1, self.hidden_dim), initializer="zeros", name="class_token")
        self.position_embedding = self.add_weight(
            shape=(1, self.num_tokens, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02), name="position_embedding")
        tokens = (None, self.num_tokens, self.hidden_dim)
        for block in self.blocks:
            block.build(tokens)
        self.encoder_norm.build(tokens)
        self.built = True

    def call(self, images, training=None):
        x = self.patch_embedding(ops.cast(images, self.compute_dtype))
        x = ops.reshape(x, (-1, self.num_tokens - 1, self.hidden_dim))
        cls = ops.cast(self.class_token, x.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(x)[0], 1, self.hidden_dim))
        x = ops.concatenate([cls, x], axis=1) + ops.cast(self.position_embedding, x.dtype)
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, training=training)
        return self.encoder_norm(x)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "patch_size": self.patch_size, "hidden_dim": self.hidden_dim, "num_heads": self.num_heads,
            "num_layers": self.num_layers, "mlp_dim": self.mlp_dim, "image_size": list(self.image_size),
            "dropout": self.dropout, "layer_norm_epsilon": self.layer_norm_epsilon, "gelu": self.gelu,
        })
        return config
