"""One layer of CLIP's vision encoder, as transformers' `CLIPEncoderLayer` computes it."""

import keras
from keras import ops

# config.json's `hidden_act` values a CLIP vision tower may name, and the GELU each one is.
CLIP_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh")


def check_activation(hidden_act):
    if hidden_act not in CLIP_ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {CLIP_ACTIVATIONS}, got {hidden_act!r}.")
    return hidden_act


def activation(x, hidden_act):
    if hidden_act == "quick_gelu":
        return x * ops.sigmoid(1.702 * x)
    return ops.gelu(x, approximate=hidden_act != "gelu")  # "gelu" is the exact erf form


@keras.saving.register_keras_serializable(package="tfcaption")
class ClipEncoderLayer(keras.layers.Layer):
    """`x + attention(LN1(x))`, then `x + MLP(LN2(x))` (pre-norm, no dropout: CLIP trains without it).

    The attention has separate query / key / value / output projections, each with a bias, scaled by
    `1 / sqrt(hidden_dim / num_heads)`; it is `keras.layers.MultiHeadAttention`, whose kernels are
    transformers' `(out, in)` matrices transposed and split by head. The MLP is
    `Dense(intermediate_dim) -> hidden_act -> Dense(hidden_dim)`.

    Args:
        hidden_dim: int. Token width D (a multiple of `num_heads`).
        num_heads: int. Attention heads.
        intermediate_dim: int. The MLP's inner width.
        hidden_act: "quick_gelu" (`x * sigmoid(1.702 x)`, OpenAI's CLIP), "gelu" (exact erf), or
            "gelu_new" / "gelu_pytorch_tanh" (the tanh approximation).
        layer_norm_epsilon: float. LayerNorm epsilon.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = ClipEncoderLayer(hidden_dim=16, num_heads=2, intermediate_dim=32)
    >>> tuple(layer(keras.ops.ones((2, 5, 16))).shape)
    (2, 5, 16)

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    """

    def __init__(self, hidden_dim, num_heads, intermediate_dim, hidden_act="quick_gelu", layer_norm_epsilon=1e-5,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.hidden_act = check_activation(hidden_act)
        self.layer_norm_epsilon = layer_norm_epsilon
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads}.")
        self.layer_norm1 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm1")
        self.self_attn = keras.layers.MultiHeadAttention(
            self.num_heads, self.hidden_dim // self.num_heads, dtype=self.dtype_policy, name="self_attn")
        self.layer_norm2 = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm2")
        self.fc1 = keras.layers.Dense(self.intermediate_dim, dtype=self.dtype_policy, name="fc1")
        self.fc2 = keras.layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="fc2")

    def build(self, input_shape):
        if input_shape[-1] != self.hidden_dim:
            raise ValueError(f"ClipEncoderLayer of hidden_dim {self.hidden_dim} got inputs of shape {input_shape}.")
        self.layer_norm1.build(input_shape)
        self.self_attn.build(input_shape, input_shape)
        self.layer_norm2.build(input_shape)
        self.fc1.build(input_shape)
        self.fc2.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x, training=None):
        y = self.layer_norm1(x)  # (b, n, d)
        x = x + self.self_attn(y, y, training=training)
        y = activation(self.fc1(self.layer_norm2(x)), self.hidden_act)  # (b, n, intermediate_dim)
        return x + self.fc2(y)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({
            "hidden_dim": self.hidden_dim, "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim,
            "hidden_act": self.hidden_act, "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config
