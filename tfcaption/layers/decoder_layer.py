"""Decoder layers: masked self-attention, cross-attention to the encoder, FFN.

`MeshedDecoderLayer` crosses into every encoder level through `MeshedCrossAttention` (M2);
`TransformerDecoderLayer` into the last level through `CrossAttention` (Vaswani). Everything else,
incremental decoding included, is `DecoderLayer`'s.
"""

import keras
from keras import ops

from tfcaption.layers.cross_attention import CrossAttention
from tfcaption.layers.dropout import Dropout
from tfcaption.layers.xla import write_position
from tfcaption.layers.feed_forward import PositionWiseFeedForward
from tfcaption.layers.memory_attention import MemoryAugmentedAttention
from tfcaption.layers.meshed_attention import MeshedCrossAttention


def _ungroup(value, captions_per_image):
    """Attention weights (B, N, k * T, R) or gates (B, N, k * T) of grouped queries -> per caption,
    (B * k, N, T, R) or (B * k, N, T)."""
    if value is None:
        return None
    k, shape = captions_per_image, ops.shape(value)
    split = ops.reshape(value, (shape[0], shape[1], k, shape[2] // k) + tuple(shape[3:]))
    moved = ops.moveaxis(split, 2, 1)  # (B, k, N, T[, R])
    return ops.reshape(moved, (shape[0] * k, shape[1], shape[2] // k) + tuple(shape[3:]))


class DecoderLayer(keras.layers.Layer):
    """```
    S   = LN(Y + Dropout(SelfAttn(Y)))       masked, times the token mask
    M   = CrossAttention(S, encoder levels)  the subclass's kind (meshed, or last level)
    out = FFN(M)                             times the token mask
    ```
    Decoding calls `step`, which writes this position's self-attention keys
    and values into a fixed-size cache and attends over the filled part, so a
    step costs O(t) rather than recomputing the prefix, with static shapes that
    XLA can compile.

    Args:
        num_heads: int. Attention heads.
        key_dim: int. Per-head size d_k (= d_v).
        intermediate_dim: int. Feed-forward inner width.
        dropout: float. Dropout on sublayer outputs and inside the FFN.
        layer_norm_epsilon: float. LayerNorm epsilon.
        num_levels: int. Encoder levels the cross-attention sees (meshed only).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, num_heads, key_dim, intermediate_dim, dropout=0.1, layer_norm_epsilon=1e-5, num_levels=1,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.num_levels = num_levels
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.self_attention = MemoryAugmentedAttention(
            num_heads, key_dim, memory_slots=0, dtype=self.dtype_policy, name="self_attention"
        )
        self.self_dropout = Dropout(dropout, dtype=self.dtype_policy)
        self.self_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="self_norm"
        )
        self.cross_attention = self.make_cross_attention()
        self.feed_forward = PositionWiseFeedForward(
            intermediate_dim, dropout, layer_norm_epsilon, dtype=self.dtype_policy, name="feed_forward"
        )

    def make_cross_attention(self):
        raise NotImplementedError

    def build(self, input_shape):
        self.self_attention.build(input_shape)
        self.self_norm.build(input_shape)
        self.cross_attention.build(input_shape)
        self.feed_forward.build(input_shape)
        self.built = True

    def _finish(self, y, attended, encoder_keys, encoder_values, encoder_mask, token_mask, training, return_attention,
                captions_per_image=1):
        s = self.self_norm(y + self.self_dropout(attended, training=training))
        if token_mask is not None:
            s = s * token_mask
        if captions_per_image > 1:
            # The k captions of an image attend to its keys and values as one longer query sequence
            # (B, k * T, d): cross-attention treats every query on its own, so this equals attending from
            # (B * k, T, d) to k copies of the image, without making them.
            shape = ops.shape(s)
            grouped = (-1, captions_per_image * shape[1], shape[2])
            s = ops.reshape(s, grouped)
            token_mask = None if token_mask is None else ops.reshape(token_mask, grouped[:2] + (1,))
        mixed = self.cross_attention(
            s, encoder_keys, encoder_values, encoder_mask, token_mask, training=training,
            return_attention=return_attention,
        )
        extras = ()
        if return_attention:
            mixed, *extras = mixed
        if captions_per_image > 1:
            mixed = ops.reshape(mixed, shape)
            token_mask = None if token_mask is None else ops.reshape(token_mask, (shape[0], shape[1], 1))
            extras = tuple(_ungroup(extra, captions_per_image) for extra in extras)
        out = self.feed_forward(mixed, training=training)
        if token_mask is not None:
            out = out * token_mask
        return (out, *extras) if return_attention else out

    def call(
        self,
        y,
        encoder_keys,
        encoder_values,
        self_attention_mask=None,
        encoder_mask=None,
        token_mask=None,
        training=None,
        return_attention=False,
        captions_per_image=1,
    ):
        """Teacher-forced pass over a whole sequence.

        Args:
            y: (B, T, d) token embeddings (or the previous layer's output).
            encoder_keys, encoder_values: from `cross_attention.project_encoder`.
            self_attention_mask: (B, T, T) bool, True where allowed (causal and
                not padding).
            encoder_mask: (B, R) bool, True for real regions, or None.
            token_mask: (B, T, 1) float, 1 for real tokens, or None.
            captions_per_image: k; `y` then holds k captions per image, image by
                image (B = k x the images of `encoder_keys`).
        """
        attended = self.self_attention(y, y, y, attention_mask=self_attention_mask)
        return self._finish(
            y, attended, encoder_keys, encoder_values, encoder_mask, token_mask, training, return_attention,
            captions_per_image,
        )

    def step(self, y, position, cache_keys, cache_values, encoder_keys, encoder_values, encoder_mask=None,
             return_attention=False, captions_per_image=1):
        """One incremental step.

        Args:
            y: (B, 1, d) this step's input.
            position: scalar int, the 0-based step index written into the cache.
            cache_keys, cache_values: (B, L, heads, d_k) caches of past steps.
            captions_per_image: k; `y` holds k sequences per image (a beam search's beams, SCST's samples),
                image by image, and `encoder_keys` / `encoder_values` / `encoder_mask` one entry per image.

        Returns:
            `(out, cache_keys, cache_values)`, plus the attention weights and
            gates (None without gates) when `return_attention`.
        """
        k, v = self.self_attention.project_key_value(y, y)
        cache_keys = write_position(cache_keys, position, k)
        cache_values = write_position(cache_values, position, v)
        length = ops.shape(cache_keys)[1]
        filled = ops.reshape(ops.arange(length) <= position, (1, 1, length))
        attended = self.self_attention.attend(y, cache_keys, cache_values, filled)
        result = self._finish(
            y, attended, encoder_keys, encoder_values, encoder_mask, None, False, return_attention, captions_per_image
        )
        if return_attention:
            out, weights, gates = result
            return out, cache_keys, cache_values, weights, gates
        return result, cache_keys, cache_values

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfcaption")
class MeshedDecoderLayer(DecoderLayer):
    """A `DecoderLayer` with meshed cross-attention over every encoder level.

    There is no extra Add&Norm after the mesh, as in the authors' code.

    Example:
    >>> layer = MeshedDecoderLayer(4, 16, 128, num_levels=3)
    >>> layer.build((None, None, 64))  # before project_encoder, which needs the built cross-attention
    >>> y = keras.ops.ones((2, 7, 64)); enc = keras.ops.ones((2, 3, 10, 64))
    >>> k, v = layer.cross_attention.project_encoder(enc)
    >>> tuple(layer(y, k, v).shape)
    (2, 7, 64)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(self, num_heads, key_dim, intermediate_dim, num_levels, dropout=0.1, layer_norm_epsilon=1e-5,
                 **kwargs):
        super().__init__(num_heads, key_dim, intermediate_dim, dropout, layer_norm_epsilon, num_levels, **kwargs)

    def make_cross_attention(self):
        return MeshedCrossAttention(self.num_heads, self.key_dim, self.num_levels, self.dropout,
                                    self.layer_norm_epsilon, dtype=self.dtype_policy, name="cross_attention")

    def get_config(self):
        return {**super().get_config(), "num_levels": self.num_levels}


@keras.saving.register_keras_serializable(package="tfcaption")
class TransformerDecoderLayer(DecoderLayer):
    """A `DecoderLayer` with plain cross-attention to the last encoder level (Vaswani; CPTR; Springenberg).

    Example:
    >>> layer = TransformerDecoderLayer(4, 16, 128)
    >>> layer.build((None, None, 64))
    >>> y = keras.ops.ones((2, 7, 64)); enc = keras.ops.ones((2, 3, 10, 64))
    >>> k, v = layer.cross_attention.project_encoder(enc)
    >>> tuple(layer(y, k, v).shape)
    (2, 7, 64)

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
    """

    def make_cross_attention(self):
        return CrossAttention(self.num_heads, self.key_dim, self.dropout, self.layer_norm_epsilon,
                              dtype=self.dtype_policy, name="cross_attention")
