"""BLIP's vision tower: a ViT with a biased patch convolution, fused-qkv pre-norm blocks and a post LayerNorm.

Its weights have the shapes of transformers' `BlipVisionModel` (`vision_model.*` in a
`BlipForConditionalGeneration` checkpoint) up to transposition, so `tfcaption.interop.hf.blip_weights`
copies them one to one: the attention keeps the checkpoint's fused `qkv` projection.
"""

import math

import keras
import numpy as np
from keras import ops

from tfcaption.layers.hf_activations import check_hf_activation, hf_activation
from tfcaption.layers.image_encoder import TokenGrid


def _cubic_weights(t, a=-0.75):
    """The four taps of the cubic convolution kernel at fractional offset t (torch's `upsample_bicubic2d`)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return (far(t + 1), near(t), near(1 - t), far(2 - t))


def bicubic_resize_matrix(size_in, size_out):
    """(size_out, size_in) matrix of torch's bicubic resize along one axis (a = -0.75, align_corners=False).

    torch maps output pixel i to source coordinate (i + 0.5) * size_in / size_out - 0.5 without clamping it,
    takes the four neighbours of its floor (indices clamped to the edge) and weighs them with the cubic
    convolution kernel; tf.image.resize's bicubic uses a = -0.5 and so differs.

    Example:
    >>> bicubic_resize_matrix(3, 3).round(6).tolist() == np.eye(3).tolist()
    True
    """
    matrix = np.zeros((size_out, size_in), np.float64)
    scale = size_in / size_out
    for i in range(size_out):
        source = (i + 0.5) * scale - 0.5
        floor = math.floor(source)
        for tap, weight in zip(range(floor - 1, floor + 3), _cubic_weights(source - floor)):
            matrix[i, min(max(tap, 0), size_in - 1)] += weight
    return matrix


class _BlipVisionBlock(keras.layers.Layer):
    """`x + proj(MHA(LN1(x)))`, then `x + fc2(act(fc1(LN2(x))))`, with one fused qkv projection."""

    def __init__(self, hidden_dim, num_heads, intermediate_dim, layer_norm_epsilon, hidden_act, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.intermediate_dim = hidden_dim, num_heads, intermediate_dim
        self.layer_norm_epsilon, self.hidden_act = layer_norm_epsilon, hidden_act
        self.head_dim = hidden_dim // num_heads
        norm = dict(epsilon=layer_norm_epsilon, dtype=self.dtype_policy)
        self.layer_norm1 = keras.layers.LayerNormalization(name="layer_norm1", **norm)
        self.qkv = keras.layers.Dense(3 * hidden_dim, dtype=self.dtype_policy, name="qkv")
        self.projection = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="projection")
        self.layer_norm2 = keras.layers.LayerNormalization(name="layer_norm2", **norm)
        self.fc1 = keras.layers.Dense(intermediate_dim, dtype=self.dtype_policy, name="fc1")
        self.fc2 = keras.layers.Dense(hidden_dim, dtype=self.dtype_policy, name="fc2")

    def build(self, input_shape):
        for layer in (self.layer_norm1, self.qkv, self.projection, self.layer_norm2, self.fc1):
            layer.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x):
        tokens = ops.shape(x)[1]
        qkv = ops.reshape(self.qkv(self.layer_norm1(x)), (-1, tokens, 3, self.num_heads, self.head_dim))
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, h, d_h)
        scores = ops.einsum("bqhd,bkhd->bhqk", query, key) * (self.head_dim ** -0.5)  # (B, h, T, T)
        context = ops.einsum("bhqk,bkhd->bqhd", ops.softmax(scores, axis=-1), value)  # (B, T, h, d_h)
        x = x + self.projection(ops.reshape(context, (-1, tokens, self.hidden_dim)))
        return x + self.fc2(hf_activation(self.hidden_act, self.fc1(self.layer_norm2(x))))


@keras.saving.register_keras_serializable(package="tfcaption")
class BlipVisionTower(keras.layers.Layer):
    """BLIP's ViT: normalised images (B, H, W, 3) to every token after the post LayerNorm, (B, 1 + P, D).

    A biased `Conv2D(hidden_dim, patch_size, strides=patch_size)` embeds the patches (flattened row by row),
    a learned class token is prepended and learned position embeddings added, then `num_layers` pre-norm
    blocks and the post LayerNorm, which BLIP's decoder attends through (transformers' `last_hidden_state`).
    Images of another size (static shape) get the patch position embeddings resized on the grid as
    transformers' `interpolate_pos_encoding=True` does (torch bicubic, a = -0.75, align_corners=False); at
    the model's own grid they are used as they are. Pixels are expected already normalised (BLIP's
    processor: /255, then CLIP's mean and std). There is no dropout (BLIP's `attention_dropout` is 0).

    Args:
        image_size: int. The square input size the position table was trained for.
        patch_size: int. Patch side in pixels.
        hidden_dim: int. Token width D.
        num_layers: int. Encoder blocks.
        num_heads: int. Attention heads per block.
        intermediate_dim: int. Inner width of each block's MLP.
        layer_norm_epsilon: float. LayerNorm epsilon (config `layer_norm_eps`).
        hidden_act: str. The MLP activation as transformers names it (config `hidden_act`; BLIP: "gelu", exact).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> tower = BlipVisionTower(image_size=32, patch_size=8, hidden_dim=16, num_layers=1, num_heads=2,
    ...                         intermediate_dim=32)
    >>> tuple(tower(keras.ops.zeros((2, 32, 32, 3))).shape), tuple(tower(keras.ops.zeros((1, 48, 48, 3))).shape)
    ((2, 17, 16), (1, 37, 16))

    Reference:
        Li et al., "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language
        Understanding and Generation", ICML 2022.
    """

    def __init__(self, image_size, patch_size, hidden_dim, num_layers, num_heads, intermediate_dim,
                 layer_norm_epsilon=1e-5, hidden_act="gelu", **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.hidden_act = check_hf_activation(hidden_act)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads}.")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}.")
        self.patch_embedding = keras.layers.Conv2D(self.hidden_dim, self.patch_size, strides=self.patch_size,
                                                   dtype=self.dtype_policy, name="patch_embedding")
        self.blocks = [
            _BlipVisionBlock(self.hidden_dim, self.num_heads, self.intermediate_dim, layer_norm_epsilon,
                             self.hidden_act, dtype=self.dtype_policy, name=f"layer_{i}")
            for i in range(self.num_layers)
        ]
        self.post_layernorm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy,
                                                              name="post_layernorm")

    @property
    def grid_side(self):
        """Patches per side at the model's own image size."""
        return self.image_size // self.patch_size

    @property
    def token_grid(self):
        return TokenGrid(self.grid_side, self.grid_side, prefix=1)

    def build(self, input_shape=None):
        self.patch_embedding.build((None, self.image_size, self.image_size, 3))
        self.class_embedding = self.add_weight(shape=(1, 1, self.hidden_dim), initializer="zeros",
                                               name="class_embedding")
        self.position_embedding = self.add_weight(
            shape=(1, 1 + self.grid_side ** 2, self.hidden_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="position_embedding")
        tokens = (None, None, self.hidden_dim)
        for block in self.blocks:
            block.build(tokens)
        self.post_layernorm.build(tokens)
        self.built = True

    def _positions(self, rows, cols):
        """(1, 1 + rows * cols, D) position embeddings for a rows x cols patch grid."""
        table = ops.cast(self.position_embedding, self.compute_dtype)
        side = self.grid_side
        if (rows, cols) == (side, side):
            return table
        grid = ops.reshape(table[0, 1:], (side, side, self.hidden_dim))
        along_rows = ops.cast(bicubic_resize_matrix(side, rows), self.compute_dtype)  # (rows, side)
        along_cols = ops.cast(bicubic_resize_matrix(side, cols), self.compute_dtype)  # (cols, side)
        grid = ops.einsum("ip,pqd->iqd", along_rows, grid)  # (rows, side, D)
        grid = ops.einsum("jq,iqd->ijd", along_cols, grid)  # (rows, cols, D)
        return ops.concatenate([table[:, :1], ops.reshape(grid, (1, rows * cols, self.hidden_dim))], axis=1)

    def call(self, images):
        x = self.patch_embedding(ops.cast(images, self.compute_dtype))  # (B, rows, cols, D)
        rows, cols = x.shape[1], x.shape[2]
        if rows is None or cols is None:
            raise ValueError(f"BlipVisionTower needs images of a static height and width, got shape {images.shape}.")
        x = ops.reshape(x, (-1, rows * cols, self.hidden_dim))
        cls = ops.broadcast_to(ops.cast(self.class_embedding, x.dtype), (ops.shape(x)[0], 1, self.hidden_dim))
        x = ops.concatenate([cls, x], axis=1) + self._positions(rows, cols)  # (B, 1 + P, D)
        for block in self.blocks:
            x = block(x)
        return self.post_layernorm(x)

    def compute_output_shape(self, input_shape):
        rows, cols = (None if side is None else side // self.patch_size for side in input_shape[1:3])
        return (input_shape[0], None if rows is None or cols is None else 1 + rows * cols, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_size": self.image_size, "patch_size": self.patch_size, "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers, "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
            "layer_norm_epsilon": self.layer_norm_epsilon, "hidden_act": self.hidden_act,
        })
        return config
