"""One memory-augmented encoder layer."""

import keras

from tfcaption.layers.dropout import Dropout
from tfcaption.layers.feed_forward import PositionWiseFeedForward
from tfcaption.layers.memory_attention import MemoryAugmentedAttention


@keras.saving.register_keras_serializable(package="tfcaption")
class MemoryAugmentedEncoderLayer(keras.layers.Layer):
    """`FFN(LN(X + Dropout(MemoryAttention(X, X, X))))`.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Per-head size d_k (= d_v).
        intermediate_dim: int. Feed-forward inner width.
        memory_slots: int. Memory slots per attention layer.
        dropout: float. Dropout on sublayer outputs and inside the FFN.
        layer_norm_epsilon: float. LayerNorm epsilon.
        memory_init: "paper" or "released", see `MemoryAugmentedAttention`.
        scale: "sqrt_dk" or "sqrt_len_plus_dk", see `MemoryAugmentedAttention`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = MemoryAugmentedEncoderLayer(4, 16, 128, memory_slots=8)
    >>> tuple(layer(keras.ops.ones((2, 10, 64))).shape)
    (2, 10, 64)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        intermediate_dim,
        memory_slots=40,
        dropout=0.1,
        layer_norm_epsilon=1e-5,
        memory_init="paper",
        scale="sqrt_dk",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.memory_slots = memory_slots
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.memory_init = memory_init
        self.scale = scale
        self.attention = MemoryAugmentedAttention(
            num_heads,
            key_dim,
            memory_slots=memory_slots,
            memory_init=memory_init,
            scale=scale,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="attention_norm"
        )
        self.feed_forward = PositionWiseFeedForward(
            intermediate_dim, dropout, layer_norm_epsilon, dtype=self.dtype_policy, name="feed_forward"
        )

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape, input_shape)
        self.attention_norm.build(input_shape)
        self.feed_forward.build(input_shape)
        self.built = True

    def call(self, x, attention_mask=None, training=None):
        """`attention_mask`: (B, 1 or R, R) bool, True where a key may be attended."""
        attended = self.attention(x, x, x, attention_mask=attention_mask)
        x = self.attention_norm(x + self.attention_dropout(attended, training=training))
        return self.feed_forward(x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "intermediate_dim": self.intermediate_dim,
                "memory_slots": self.memory_slots,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "memory_init": self.memory_init,
                "scale": self.scale,
            }
        )
        return config
