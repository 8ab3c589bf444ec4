"""Plain cross-attention to the last encoder level (Vaswani et al.'s decoder sublayer)."""

import keras
from keras import ops

from tfcaption.layers.dropout import Dropout
from tfcaption.layers.memory_attention import MemoryAugmentedAttention


@keras.saving.register_keras_serializable(package="tfcaption")
class CrossAttention(keras.layers.Layer):
    """`LN(S + Dropout(CrossAttn(S, X_N)))` over the last encoder level only.

    The same interface as `MeshedCrossAttention`, so one decoder layer and one
    decoding loop serve both: `project_encoder` takes every level (B, N, R, d)
    and keeps the last, keys and values carry a level axis of size 1, and the
    attention it reports has one level and no gates.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Per-head size d_k (= d_v).
        dropout: float. Dropout on the attention output.
        layer_norm_epsilon: float. LayerNorm epsilon.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = CrossAttention(4, 16)
    >>> s = keras.ops.ones((2, 7, 64)); enc = keras.ops.ones((2, 3, 10, 64))
    >>> k, v = layer.project_encoder(enc)
    >>> tuple(k.shape), tuple(layer(s, k, v).shape)
    ((2, 1, 10, 4, 16), (2, 7, 64))

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Sec. 3.1.
    """

    has_gates = False

    def __init__(self, num_heads, key_dim, dropout=0.1, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention = MemoryAugmentedAttention(num_heads, key_dim, memory_slots=0, dtype=self.dtype_policy,
                                                  name="attention")
        self.attention_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    @property
    def num_levels(self):
        """Encoder levels attended (and reported in attention maps)."""
        return 1

    def build(self, query_shape):
        self.attention.build(query_shape)
        self.layer_norm.build(query_shape)
        self.built = True

    def project_encoder(self, encoder_outputs):
        """Keys and values of the last level, (B, 1, R, heads, d_k), computed once per image."""
        if not self.built:
            self.build((None, None, encoder_outputs.shape[-1]))
        last = encoder_outputs[:, -1]
        k, v = self.attention.project_key_value(last, last)
        return ops.expand_dims(k, 1), ops.expand_dims(v, 1)

    def call(self, query, encoder_keys, encoder_values, encoder_mask=None, token_mask=None, training=None,
             return_attention=False):
        """As `MeshedCrossAttention.call`; with `return_attention`, weights (B, 1, T, R) and gates None."""
        mask = None
        if encoder_mask is not None:
            mask = ops.expand_dims(encoder_mask, 1)  # (B, 1, R)
        attended, weights = self.attention.attend(
            query, encoder_keys[:, 0], encoder_values[:, 0], mask, return_attention_scores=True
        )
        out = self.layer_norm(query + self.attention_dropout(attended, training=training))
        if token_mask is not None:
            out = out * token_mask
        if return_attention:
            return out, ops.expand_dims(ops.mean(weights, axis=1), 1), None  # heads averaged
        return out

    def compute_output_shape(self, query_shape, *args, **kwargs):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "key_dim": self.key_dim, "dropout": self.dropout,
                       "layer_norm_epsilon": self.layer_norm_epsilon})
        return config
