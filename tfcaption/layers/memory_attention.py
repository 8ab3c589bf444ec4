"""Multi-head scaled dot-product attention with learnable memory slots (M2)."""

import math

import keras
from keras import ops

from tfcaption.layers.large_negative import large_negative


def masked_softmax(scores, mask):
    """Softmax over the last axis in float32; `mask` is True where allowed."""
    scores = ops.cast(scores, "float32")
    if mask is not None:
        scores = ops.where(mask, scores, large_negative())
    return ops.softmax(scores, axis=-1)


@keras.saving.register_keras_serializable(package="tfcaption")
class MemoryAugmentedAttention(keras.layers.Layer):
    """Multi-head attention whose keys and values are extended by memory slots.

    Computes, per head, `softmax(Q K^T / sqrt(d_k)) V` with
    `K = [X W_k + b_k ; sqrt(d_k) * M_k]` and `V = [X W_v + b_v ; sqrt(m) * M_v]`:
    the memory slots `M_k, M_v` of shape `(1, m, heads * d)` are appended
    after the projections (not projected themselves), shared over the batch,
    never masked, and one softmax runs over real and memory keys together.
    Queries are not augmented. With `memory_slots=0` this is plain multi-head
    attention, which the decoders use for self- and cross-attention.

    The temperature is `sqrt(d_k)` (Vaswani et al.; M2), or with
    `scale="sqrt_len_plus_dk"` it is `sqrt(d_len + d_k)`, where `d_len` is the
    number of keys a query may attend (real keys after masking, plus the memory
    slots), as in Springenberg et al.'s eq. 2: longer inputs get a softer
    softmax.

    The computation is split into `project_key_value` and `attend` so decoding
    can project the keys and values of the encoder output (or of past tokens)
    once and reuse them at every step.

    Args:
        num_heads: int. Number of attention heads.
        key_dim: int. Size of each head for queries and keys (d_k).
        value_dim: int. Size of each head for values (d_v); defaults to key_dim.
        memory_slots: int. Number of memory slots m (0 disables them).
        memory_init: "paper" (normal, std 1/d_k for keys and 1/m for values,
            as the paper intends) or "released" (Glorot-uniform with
            fan_in = m * d, fan_out = d, as the authors' code executes).
        scale: "sqrt_dk" or "sqrt_len_plus_dk", the softmax temperature.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> layer = MemoryAugmentedAttention(num_heads=4, key_dim=16, memory_slots=8)
    >>> x = keras.ops.ones((2, 10, 64))
    >>> tuple(layer(x, x, x).shape)
    (2, 10, 64)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning",
        CVPR 2020, Sec. 3.1. Springenberg et al., "Image Captioning with
        Spatial Self-Attention", ESANN 2018 (the `sqrt_len_plus_dk` scale).
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        memory_slots=0,
        memory_init="paper",
        scale="sqrt_dk",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if memory_init not in ("paper", "released"):
            raise ValueError(f"memory_init must be 'paper' or 'released', got {memory_init!r}.")
        if scale not in ("sqrt_dk", "sqrt_len_plus_dk"):
            raise ValueError(f"scale must be 'sqrt_dk' or 'sqrt_len_plus_dk', got {scale!r}.")
        self.scale = scale
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.value_dim = int(value_dim or key_dim)
        self.memory_slots = int(memory_slots)
        self.memory_init = memory_init

        def dense(units, name):
            return keras.layers.Dense(
                units,
                kernel_initializer="glorot_uniform",
                bias_initializer="zeros",
                dtype=self.dtype_policy,
                name=name,
            )

        self.query_dense = dense(self.num_heads * self.key_dim, "query")
        self.key_dense = dense(self.num_heads * self.key_dim, "key")
        self.value_dense = dense(self.num_heads * self.value_dim, "value")

    def build(self, query_shape, key_shape=None, value_shape=None):
        key_shape = key_shape or query_shape
        value_shape = value_shape or key_shape
        hidden_dim = query_shape[-1]
        # The output projection's width is the query's, known only here.
        self.query_dense.build(query_shape)
        self.key_dense.build(key_shape)
        self.value_dense.build(value_shape)
        self.output_dense = keras.layers.Dense(
            hidden_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="output",
        )
        self.output_dense.build(tuple(query_shape[:-1]) + (self.num_heads * self.value_dim,))
        if self.memory_slots:
            m = self.memory_slots
            if self.memory_init == "paper":
                key_init = keras.initializers.RandomNormal(stddev=1.0 / self.key_dim)
                value_init = keras.initializers.RandomNormal(stddev=1.0 / m)
            else:
                width = self.num_heads * self.key_dim
                bound = math.sqrt(6.0 / (m * width + width))
                key_init = value_init = keras.initializers.RandomUniform(-bound, bound)
            self.memory_keys = self.add_weight(
                name="memory_keys", shape=(1, m, self.num_heads * self.key_dim), initializer=key_init
            )
            self.memory_values = self.add_weight(
                name="memory_values", shape=(1, m, self.num_heads * self.value_dim), initializer=value_init
            )
        self.built = True

    def _split_heads(self, x, head_dim):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, head_dim))

    def project_key_value(self, key, value):
        """Projects keys and values into heads, appending the memory slots.

        Returns `(k, v)` of shapes `(B, Tk + m, heads, d_k)` and
        `(B, Tk + m, heads, d_v)`.
        """
        k = self.key_dense(key)
        v = self.value_dense(value)
        if self.memory_slots:
            batch = ops.shape(key)[0]
            m_k = ops.cast(self.memory_keys, k.dtype) * math.sqrt(self.key_dim)
            m_v = ops.cast(self.memory_values, v.dtype) * math.sqrt(self.memory_slots)
            k = ops.concatenate([k, ops.repeat(m_k, batch, axis=0)], axis=1)
            v = ops.concatenate([v, ops.repeat(m_v, batch, axis=0)], axis=1)
        return self._split_heads(k, self.key_dim), self._split_heads(v, self.value_dim)

    def extend_mask(self, attention_mask):
        """Appends always-allowed memory columns to a `(B, Tq, Tk)` mask."""
        if attention_mask is None or not self.memory_slots:
            return attention_mask
        shape = ops.shape(attention_mask)
        memory = ops.ones((shape[0], shape[1], self.memory_slots), dtype="bool")
        return ops.concatenate([ops.cast(attention_mask, "bool"), memory], axis=-1)

    def attend(self, query, k, v, attention_mask=None, return_attention_scores=False):
        """Attends projected heads.

        Args:
            query: (B, Tq, d) un-projected queries.
            k, v: from `project_key_value`, (B, Tk, heads, d_k) -- or with an
                extra level axis, (B, N, Tk, heads, d_k), to attend N key sets
                (the meshed decoder's encoder levels) with one query projection.
            attention_mask: bool, True where allowed, broadcastable to
                (B, Tq, Tk), or (B, 1, Tq, Tk) with a level axis.
            return_attention_scores: also return the softmax weights,
                (B, heads, Tq, Tk) or (B, N, heads, Tq, Tk).

        Returns:
            (B, Tq, d), or (B, N, Tq, d) with a level axis.
        """
        q = self._split_heads(self.query_dense(query), self.key_dim)
        levels = len(k.shape) == 5
        if levels:
            scores = ops.einsum("bqhd,bnkhd->bnhqk", q, k)
        else:
            scores = ops.einsum("bqhd,bkhd->bhqk", q, k)
        mask = None
        if attention_mask is not None:
            # Insert the head axis just before (Tq, Tk).
            mask = ops.expand_dims(ops.cast(attention_mask, "bool"), -3)
        weights = masked_softmax(scores / self._temperature(k, mask), mask)
        weights_v = ops.cast(weights, v.dtype)
        if levels:
            context = ops.einsum("bnhqk,bnkhd->bnqhd", weights_v, v)
        else:
            context = ops.einsum("bhqk,bkhd->bqhd", weights_v, v)
        shape = ops.shape(context)
        context = ops.reshape(context, tuple(shape[:-2]) + (self.num_heads * self.value_dim,))
        output = self.output_dense(context)
        if return_attention_scores:
            return output, weights
        return output

    def _temperature(self, k, mask):
        """sqrt(d_k), or sqrt(d_len + d_k) with d_len the attendable keys per query (broadcasts on scores)."""
        if self.scale == "sqrt_dk":
            return math.sqrt(self.key_dim)
        keys = ops.shape(k)[-3]
        if mask is None:
            length = ops.cast(keys, "float32")
        else:
            length = ops.sum(ops.cast(ops.broadcast_to(mask, ops.shape(mask)[:-1] + (keys,)), "float32"),
                             axis=-1, keepdims=True)
        return ops.cast(ops.sqrt(length + self.key_dim), k.dtype)

    def call(self, query, key, value, attention_mask=None, return_attention_scores=False):
        k, v = self.project_key_value(key, value)
        return self.attend(
            query, k, v, self.extend_mask(attention_mask), return_attention_scores
        )

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "memory_slots": self.memory_slots,
                "memory_init": self.memory_init,
                "scale": self.scale,
            }
        )
        return config
