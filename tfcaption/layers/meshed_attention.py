"""Meshed cross-attention: attend every encoder level, gate, and sum."""

import math

import keras
from keras import ops

from tfcaption.layers.dropout import Dropout
from tfcaption.layers.memory_attention import MemoryAugmentedAttention


@keras.saving.register_keras_serializable(package="tfcaption")
class MeshedCrossAttention(keras.layers.Layer):
    """Cross-attention over all encoder levels with learned sigmoid gates.

    ```
    C_i = LN(S + Dropout(CrossAttn(S, X_i)))      one attention + LN shared by all levels
    a_i = sigmoid(W_i [S ; C_i] + b_i)            a separate gate per level
    M   = sum_i a_i * C_i / sqrt(N_enc)
    ```
    As in the authors' code, a per-token padding mask (1 for real tokens)
    multiplies `C_i` and `M`, so padded positions stay exactly zero.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Per-head size d_k (= d_v).
        num_levels: int. Number of encoder levels N_enc.
        dropout: float. Dropout on the attention output.
        layer_norm_epsilon: float. LayerNorm epsilon.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = MeshedCrossAttention(4, 16, num_levels=3)
    >>> s = keras.ops.ones((2, 7, 64)); enc = keras.ops.ones((2, 3, 10, 64))
    >>> k, v = layer.project_encoder(enc)
    >>> tuple(layer(s, k, v).shape)
    (2, 7, 64)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning",
        CVPR 2020, Sec. 3.2.
    """

    has_gates = True

    def __init__(self, num_heads, key_dim, num_levels, dropout=0.1, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.num_levels = num_levels
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.attention = MemoryAugmentedAttention(
            num_heads, key_dim, memory_slots=0, dtype=self.dtype_policy, name="attention"
        )
        self.attention_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )

    def build(self, query_shape):
        hidden_dim = query_shape[-1]
        self.attention.build(query_shape)
        self.layer_norm.build(query_shape)
        self.gates = []
        for i in range(self.num_levels):
            gate = keras.layers.Dense(
                hidden_dim, activation="sigmoid", bias_initializer="zeros", dtype=self.dtype_policy, name=f"gate_{i}"
            )
            gate.build(tuple(query_shape[:-1]) + (2 * hidden_dim,))
            self.gates.append(gate)
        self.built = True

    def project_encoder(self, encoder_outputs):
        """Keys and values of every level, (B, N, R, heads, d_k), computed once per image."""
        if not self.built:
            self.build((None, None, encoder_outputs.shape[-1]))
        shape = ops.shape(encoder_outputs)
        flat = ops.reshape(encoder_outputs, (shape[0] * shape[1], shape[2], shape[3]))
        k, v = self.attention.project_key_value(flat, flat)
        split = (shape[0], shape[1], shape[2], self.num_heads, self.key_dim)
        return ops.reshape(k, split), ops.reshape(v, split)

    def call(
        self,
        query,
        encoder_keys,
        encoder_values,
        encoder_mask=None,
        token_mask=None,
        training=None,
        return_attention=False,
    ):
        """Mixes the levels for each query.

        Args:
            query: (B, T, d), the self-attention output S.
            encoder_keys, encoder_values: from `project_encoder`.
            encoder_mask: (B, R) bool, True for real regions, or None.
            token_mask: (B, T, 1) float, 1 for real tokens, or None.
            return_attention: also return the attention weights averaged over
                heads, (B, N, T, R), and the mean gate value per level, (B, N, T).
        """
        mask = None
        if encoder_mask is not None:
            mask = ops.expand_dims(ops.expand_dims(encoder_mask, 1), 1)  # (B, 1, 1, R)
        attended, weights = self.attention.attend(
            query, encoder_keys, encoder_values, mask, return_attention_scores=True
        )  # (B, N, T, d)
        expanded_query = ops.expand_dims(query, 1)
        levels = self.layer_norm(expanded_query + self.attention_dropout(attended, training=training))
        if token_mask is not None:
            levels = levels * ops.expand_dims(token_mask, 1)
        gates = [
            self.gates[i](ops.concatenate([query, levels[:, i]], axis=-1)) for i in range(self.num_levels)
        ]
        mixed = sum(g * levels[:, i] for i, g in enumerate(gates)) / math.sqrt(self.num_levels)
        if token_mask is not None:
            mixed = mixed * token_mask
        if return_attention:
            mean_weights = ops.mean(weights, axis=2)  # over heads
            mean_gates = ops.stack([ops.mean(g, axis=-1) for g in gates], axis=1)
            return mixed, mean_weights, mean_gates
        return mixed

    def compute_output_shape(self, query_shape, *args, **kwargs):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "num_levels": self.num_levels,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
