"""Caption decoders: embeddings, a stack of decoder layers, and the word head.

The decoder interface every search, the attention recording and the export use:

```
keys_values = decoder.project_encoder(encoder_outputs)        once per image, (B, N, R, d) levels in
cache       = decoder.initial_cache(batch, max_steps)
logits, cache[, attention (B, levels, R), gates (B, levels) or None] =
              decoder.step(tokens (B,), position, cache, keys_values, encoder_mask, return_attention)
logits      = decoder(tokens (B, T), encoder_outputs, encoder_mask, padding_mask=(B, T) bool)   teacher forcing
decoder.attention_levels, decoder.has_gates                   what the attention output holds
```
`MeshedDecoder` (M2) meshes every encoder level with gates; `TransformerDecoder` (Vaswani, CPTR,
Springenberg) attends to the last level, so its attention has one level and no gates.
"""

import keras
from keras import ops

from tfcaption.layers.decoder_layer import MeshedDecoderLayer, TransformerDecoderLayer
from tfcaption.layers.positions import sinusoid_table


class CaptionDecoder(keras.layers.Layer):
    """Word + position embeddings, N decoder layers (`layer_class`), and a linear head.

    Positions are 1..L for real tokens and 0 for padding (the caller's `padding_mask`: the decoder knows
    no token id, the tokenizer does). The positional table
    is a non-trainable weight: a sinusoid for new models, and a slot that a
    converted checkpoint fills (the released M2 checkpoint carries a frozen
    random table there). There is no sqrt(d) embedding scale, no embedding
    dropout and no weight tying, as in M2. The head returns float32 logits so
    mixed precision never reaches the softmax.

    Subclasses choose the layer (`layer_class`), hence the cross-attention.

    Args:
        vocab_size: int. Output vocabulary size.
        num_layers: int. Decoder layers.
        hidden_dim: int. Model width d.
        num_heads: int. Attention heads.
        key_dim: int. Per-head size.
        intermediate_dim: int. Feed-forward inner width.
        num_levels: int. Encoder levels the decoder receives (the meshed one attends to all).
        max_length: int. Longest token sequence; the table has max_length + 1 rows.
        dropout: float. Dropout rate.
        layer_norm_epsilon: float. LayerNorm epsilon.
        output_bias: bool. Whether the word head has a bias (M2: no).
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(
        self,
        vocab_size,
        num_layers,
        hidden_dim,
        num_heads,
        key_dim,
        intermediate_dim,
        num_levels,
        max_length,
        dropout=0.1,
        layer_norm_epsilon=1e-5,
        output_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.num_levels = num_levels
        self.max_length = max_length
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.output_bias = output_bias
        self.word_embedding = keras.layers.Embedding(
            vocab_size, hidden_dim, embeddings_initializer="glorot_uniform", dtype=self.dtype_policy,
            name="word_embedding",
        )
        self.decoder_layers = [self.make_layer(f"layer_{i}") for i in range(num_layers)]
        self.output_dense = keras.layers.Dense(
            vocab_size, use_bias=output_bias, kernel_initializer="glorot_uniform", dtype="float32", name="logits"
        )

    layer_class = None

    def make_layer(self, name):
        return self.layer_class(self.num_heads, self.key_dim, self.intermediate_dim, dropout=self.dropout,
                                layer_norm_epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)

    @property
    def attention_levels(self):
        """Levels in the attention this decoder reports (`step(..., return_attention=True)`)."""
        return self.decoder_layers[-1].cross_attention.num_levels

    @property
    def has_gates(self):
        return self.decoder_layers[-1].cross_attention.has_gates

    def build(self, tokens_shape=None, encoder_shape=None):
        self.word_embedding.build(tokens_shape)
        self.position_table = self.add_weight(
            name="position_table", shape=(self.max_length + 1, self.hidden_dim), initializer="zeros",
            trainable=False,
        )
        self.position_table.assign(sinusoid_table(self.max_length + 1, self.hidden_dim))
        hidden_shape = (None, None, self.hidden_dim)
        for layer in self.decoder_layers:
            layer.build(hidden_shape)
        self.output_dense.build(hidden_shape)
        self.built = True

    def _embed(self, tokens, positions):
        table = ops.cast(self.position_table, self.compute_dtype)
        return self.word_embedding(tokens) + ops.take(table, positions, axis=0)

    def project_encoder(self, encoder_outputs):
        """Per layer, the cross-attention keys and values of every encoder level."""
        return [layer.cross_attention.project_encoder(encoder_outputs) for layer in self.decoder_layers]

    def call(self, tokens, encoder_outputs, encoder_mask=None, training=None, return_attention=False,
             captions_per_image=1, padding_mask=None):
        """Teacher-forced logits.

        Args:
            tokens: (B, T) int, input tokens (starting with the start token).
            encoder_outputs: (B, N, R, d) from the encoder.
            encoder_mask: (B, R) bool, True for real regions, or None.
            return_attention: also return the last layer's cross-attention
                weights (B, levels, T, R) and gates (B, levels, T), or None
                for a decoder without gates.
            captions_per_image: k: `tokens` holds k captions of each image,
                image by image ((B * k, T) against (B, N, R, d) encoder outputs);
                the encoder's keys and values are projected once per image and
                shared by its captions.
            padding_mask: (B, T) bool, True for real tokens, or None (every token is real). Padding
                tokens take position 0, are masked as keys and their outputs are zeroed.

        Returns:
            (B, T, vocab) float32 logits.
        """
        length = ops.shape(tokens)[1]
        real = ops.ones_like(tokens, "bool") if padding_mask is None else ops.cast(padding_mask, "bool")
        positions = ops.where(real, ops.arange(1, length + 1)[None, :], 0)
        y = self._embed(tokens, positions)
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        self_mask = ops.logical_and(causal[None], ops.expand_dims(real, 1))
        token_mask = ops.cast(ops.expand_dims(real, -1), y.dtype)
        extras = ()
        for layer, (keys, values) in zip(self.decoder_layers, self.project_encoder(encoder_outputs)):
            y = layer(y, keys, values, self_mask, encoder_mask, token_mask, training=training,
                      return_attention=return_attention, captions_per_image=captions_per_image)
            if return_attention:
                y, *extras = y
        logits = self.output_dense(y)
        return (logits, *extras) if return_attention else logits

    def initial_cache(self, batch_size, max_steps):
        """Zero self-attention caches, one (keys, values) pair per layer."""
        shape = (batch_size, max_steps, self.num_heads, self.key_dim)
        return [(ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype))
                for _ in self.decoder_layers]

    def step(self, tokens, position, cache, encoder_kv, encoder_mask=None, return_attention=False,
             captions_per_image=1):
        """Logits for one new token per sequence, reusing cached keys/values.

        Args:
            tokens: (B,) int, the token fed at this step.
            position: scalar int, 0-based step index (the token's position is
                position + 1, as in teacher forcing).
            cache: from `initial_cache` or a previous step.
            encoder_kv: from `project_encoder`.
            captions_per_image: k; `tokens` holds k sequences of each image, image by image, and
                `encoder_kv` / `encoder_mask` are the images' own (projected once, not per sequence).

        Returns:
            `(logits (B, vocab) float32, new_cache)`, plus the last layer's
            attention (B, levels, R) and gates (B, levels) (None without
            gates) when `return_attention`.
        """
        y = self._embed(ops.expand_dims(tokens, 1), ops.reshape(position + 1, (1, 1)))
        new_cache = []
        for layer, (cache_k, cache_v), (keys, values) in zip(self.decoder_layers, cache, encoder_kv):
            result = layer.step(y, position, cache_k, cache_v, keys, values, encoder_mask,
                                return_attention=return_attention, captions_per_image=captions_per_image)
            y, cache_k, cache_v = result[:3]
            new_cache.append((cache_k, cache_v))
        logits = self.output_dense(y)[:, 0]
        if return_attention:
            weights, gates = result[3], result[4]
            return logits, new_cache, weights[:, :, 0], None if gates is None else gates[:, :, 0]
        return logits, new_cache

    def compute_output_shape(self, tokens_shape, *args, **kwargs):
        return tuple(tokens_shape) + (self.vocab_size,)

    @classmethod
    def from_config(cls, config):
        # Layer configs saved while the decoder masked padding by id carry `pad_id`; the caller's padding_mask
        # does that now, so it is ignored.
        config = {name: value for name, value in config.items() if name != "pad_id"}
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "num_layers": self.num_layers,
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "intermediate_dim": self.intermediate_dim,
                "num_levels": self.num_levels,
                "max_length": self.max_length,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "output_bias": self.output_bias,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tfcaption")
class MeshedDecoder(CaptionDecoder):
    """The M2 decoder: meshed cross-attention over every encoder level, with learned gates.

    Example:
    >>> decoder = MeshedDecoder(30, 2, 64, 4, 16, 128, num_levels=3, max_length=20)
    >>> decoder.build((None, None))  # (batch, steps) token ids
    >>> tokens = keras.ops.ones((2, 7), dtype="int32")
    >>> tuple(decoder(tokens, keras.ops.ones((2, 3, 10, 64))).shape)
    (2, 7, 30)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    layer_class = MeshedDecoderLayer

    def make_layer(self, name):
        return self.layer_class(self.num_heads, self.key_dim, self.intermediate_dim, self.num_levels, self.dropout,
                                self.layer_norm_epsilon, dtype=self.dtype_policy, name=name)


@keras.saving.register_keras_serializable(package="tfcaption")
class TransformerDecoder(CaptionDecoder):
    """Vaswani et al.'s decoder: each layer attends to the last encoder level only (CPTR, Springenberg et al.).

    Example:
    >>> decoder = TransformerDecoder(30, 2, 64, 4, 16, 128, num_levels=3, max_length=20)
    >>> decoder.build()
    >>> tokens = keras.ops.ones((2, 7), dtype="int32")
    >>> tuple(decoder(tokens, keras.ops.ones((2, 3, 10, 64))).shape), decoder.attention_levels, decoder.has_gates
    ((2, 7, 30), 1, False)

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Liu et al., "CPTR: Full Transformer
        Network for Image Captioning", arXiv 2101.10804.
    """

    layer_class = TransformerDecoderLayer


DECODERS = {"meshed": MeshedDecoder, "transformer": TransformerDecoder}
