"""BLIP's text decoder: BERT layers with causal self-attention and cross-attention to every image token.

It speaks tfcaption's decoder interface (`tfcaption.layers.decoder`), so the samplers and
`tfcaption.decoding.captioning` run it with a key/value cache: `project_encoder`, `initial_cache`, `step`,
teacher-forced `call`, `attention_levels` and `has_gates`. Its weights have the shapes of transformers'
`BlipTextLMHeadModel` (`text_decoder.*`) up to transposition (`tfcaption.interop.hf.blip_weights`).
"""

import keras
from keras import ops

from tfcaption.layers.hf_activations import check_hf_activation, hf_activation
from tfcaption.layers.large_negative import large_negative
from tfcaption.layers.xla import write_position


def _attend(query, keys, values, mask):
    """Scaled dot-product attention over heads.

    query (B, T, h, d_h), keys / values (B, S, h, d_h), mask broadcastable to (B, T, S), True where allowed
    (or None). Returns the context (B, T, h * d_h) and the weights (B, h, T, S).
    """
    scores = ops.einsum("bthd,bshd->bhts", query, keys) * (query.shape[-1] ** -0.5)  # (B, h, T, S)
    if mask is not None:
        scores = ops.where(ops.expand_dims(mask, 1), scores, ops.cast(large_negative(), scores.dtype))
    weights = ops.softmax(scores, axis=-1)
    context = ops.einsum("bhts,bshd->bthd", weights, values)  # (B, T, h, d_h)
    shape = ops.shape(context)
    return ops.reshape(context, (shape[0], shape[1], -1)), weights


class _BertDecoderLayer(keras.layers.Layer):
    """```
    S   = LN(Y + Dense(CausalSelfAttn(Y)))
    M   = LN(S + Dense(CrossAttn(S, image tokens)))
    out = LN(M + Dense(act(Dense(M))))
    ```
    post-norm, as BERT; `step` caches this position's self-attention keys and values.
    """

    def __init__(self, hidden_dim, num_heads, intermediate_dim, layer_norm_epsilon, hidden_act, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.num_heads, self.intermediate_dim = hidden_dim, num_heads, intermediate_dim
        self.head_dim = hidden_dim // num_heads
        self.hidden_act = hidden_act

        def dense(units, name):
            return keras.layers.Dense(units, dtype=self.dtype_policy, name=name)

        def norm(name):
            return keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name=name)

        self.self_query, self.self_key, self.self_value = (
            dense(hidden_dim, f"self_{n}") for n in ("query", "key", "value"))
        self.self_output, self.self_norm = dense(hidden_dim, "self_output"), norm("self_norm")
        self.cross_query, self.cross_key, self.cross_value = (
            dense(hidden_dim, f"cross_{n}") for n in ("query", "key", "value"))
        self.cross_output, self.cross_norm = dense(hidden_dim, "cross_output"), norm("cross_norm")
        self.intermediate = dense(intermediate_dim, "intermediate")
        self.output_dense, self.output_norm = dense(hidden_dim, "output"), norm("output_norm")

    def build(self, input_shape, encoder_dim):
        for layer in (self.self_query, self.self_key, self.self_value, self.self_output, self.self_norm,
                      self.cross_query, self.cross_output, self.cross_norm, self.intermediate, self.output_norm):
            layer.build(input_shape)
        self.cross_key.build((None, None, encoder_dim))
        self.cross_value.build((None, None, encoder_dim))
        self.output_dense.build((None, None, self.intermediate_dim))
        self.built = True

    def _heads(self, x):
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, self.head_dim))  # (B, T, h, d_h)

    def project_encoder(self, image_tokens):
        """Cross-attention keys and values (B, R, h, d_h) of (B, R, d_vision) image tokens."""
        return self._heads(self.cross_key(image_tokens)), self._heads(self.cross_value(image_tokens))

    def _finish(self, y, attended, keys, values, encoder_mask, captions_per_image):
        """Everything after self-attention; returns the output and the cross-attention weights (B, T, R)."""
        s = self.self_norm(y + self.self_output(attended))  # (B * k, T, d)
        shape = ops.shape(s)
        # An image's k sequences attend as one query sequence of k * T tokens to its keys and values.
        query = ops.reshape(self.cross_query(s), (-1, captions_per_image * shape[1], self.num_heads, self.head_dim))
        mask = None if encoder_mask is None else ops.expand_dims(encoder_mask, 1)  # (B, 1, R)
        crossed, weights = _attend(query, keys, values, mask)  # (B, k * T, d), (B, h, k * T, R)
        m = self.cross_norm(s + self.cross_output(ops.reshape(crossed, shape)))
        out = self.output_norm(m + self.output_dense(hf_activation(self.hidden_act, self.intermediate(m))))
        weights = ops.reshape(ops.mean(weights, axis=1), (shape[0], shape[1], -1))  # heads averaged, (B * k, T, R)
        return out, weights

    def call(self, y, self_mask, keys, values, encoder_mask=None, captions_per_image=1):
        """Teacher forcing: y (B * k, T, d), self_mask (B * k, T, T) bool; keys / values of the B images."""
        attended, _ = _attend(self._heads(self.self_query(y)), self._heads(self.self_key(y)),
                              self._heads(self.self_value(y)), self_mask)
        return self._finish(y, attended, keys, values, encoder_mask, captions_per_image)

    def step(self, y, position, cache_keys, cache_values, keys, values, encoder_mask=None, captions_per_image=1):
        """One token per sequence: y (B * k, 1, d); caches (B * k, L, h, d_h) get this position written."""
        cache_keys = write_position(cache_keys, position, self._heads(self.self_key(y)))
        cache_values = write_position(cache_values, position, self._heads(self.self_value(y)))
        filled = ops.reshape(ops.arange(ops.shape(cache_keys)[1]) <= position, (1, 1, -1))  # (1, 1, L)
        attended, _ = _attend(self._heads(self.self_query(y)), cache_keys, cache_values, filled)
        out, weights = self._finish(y, attended, keys, values, encoder_mask, captions_per_image)
        return out, cache_keys, cache_values, weights


@keras.saving.register_keras_serializable(package="tfcaption")
class BertTextDecoder(keras.layers.Layer):
    """BLIP's caption decoder: word + learned absolute position embeddings and a LayerNorm, `num_layers` BERT
    layers (causal self-attention, cross-attention to every image token, FFN, post-norm), and the LM head
    (dense, activation, LayerNorm, then the word embedding transposed plus a bias: the tied decoder).

    Positions count from 0 at the first token (`[DEC]`) whatever the padding, as BERT's do; padding tokens
    are masked as self-attention keys in teacher forcing. The image's tokens may be wider than the text
    (`encoder_dim`): cross-attention keys and values are projected from that width. Encoder outputs are
    tfcaption's (B, N, R, d_vision) levels, of which the last is attended (BLIP has one: N = 1), or
    (B, R, d_vision) tokens. Logits are float32. There is no dropout: BLIP's configs set every dropout to 0.

    Args:
        vocab_size: int. Vocabulary size (config `vocab_size`, `[DEC]` and `[ENC]` included).
        num_layers: int. BERT layers.
        hidden_dim: int. Text width d.
        num_heads: int. Attention heads.
        intermediate_dim: int. FFN inner width.
        encoder_dim: int. Width of the image tokens (the vision tower's hidden size).
        max_length: int. Position table rows (config `max_position_embeddings`).
        pad_id: int. The padding token id; None: every token is real unless `call`'s `padding_mask` says
            otherwise (a `CaptionerBackbone`'s decoder, which knows no token id).
        layer_norm_epsilon: float. LayerNorm epsilon (config `layer_norm_eps`).
        hidden_act: str. FFN and head activation as transformers names it (config `hidden_act`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> decoder = BertTextDecoder(30, 2, 16, 2, 32, encoder_dim=24, max_length=12)
    >>> image = keras.ops.ones((2, 1, 5, 24))  # (B, levels, R, d_vision)
    >>> tuple(decoder(keras.ops.ones((2, 7), dtype="int32"), image).shape)
    (2, 7, 30)

    Reference:
        Li et al., "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language
        Understanding and Generation", ICML 2022; Devlin et al., "BERT", NAACL 2019.
    """

    attention_levels = 1
    has_gates = False

    def __init__(self, vocab_size, num_layers, hidden_dim, num_heads, intermediate_dim, encoder_dim, max_length,
                 pad_id=0, layer_norm_epsilon=1e-12, hidden_act="gelu", **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.num_layers = int(num_layers)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.encoder_dim = int(encoder_dim)
        self.max_length = int(max_length)
        self.pad_id = None if pad_id is None else int(pad_id)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.hidden_act = check_hf_activation(hidden_act)
        if self.hidden_dim % self.num_heads:
            raise ValueError(f"hidden_dim {hidden_dim} must be a multiple of num_heads {num_heads}.")
        self.head_dim = self.hidden_dim // self.num_heads
        norm = dict(epsilon=layer_norm_epsilon, dtype=self.dtype_policy)
        self.word_embedding = keras.layers.Embedding(self.vocab_size, self.hidden_dim, dtype=self.dtype_policy,
                                                     name="word_embedding")
        self.position_embedding = keras.layers.Embedding(self.max_length, self.hidden_dim, dtype=self.dtype_policy,
                                                         name="position_embedding")
        self.embedding_norm = keras.layers.LayerNormalization(name="embedding_norm", **norm)
        self.decoder_layers = [
            _BertDecoderLayer(self.hidden_dim, self.num_heads, self.intermediate_dim, layer_norm_epsilon,
                              self.hidden_act, dtype=self.dtype_policy, name=f"layer_{i}")
            for i in range(self.num_layers)
        ]
        self.head_dense = keras.layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="head_dense")
        self.head_norm = keras.layers.LayerNormalization(name="head_norm", **norm)

    def build(self, tokens_shape=None, encoder_outputs_shape=None):
        hidden = (None, None, self.hidden_dim)
        self.word_embedding.build(None)
        self.position_embedding.build(None)
        self.embedding_norm.build(hidden)
        for layer in self.decoder_layers:
            layer.build(hidden, self.encoder_dim)
        self.head_dense.build(hidden)
        self.head_norm.build(hidden)
        self.head_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="head_bias")
        self.built = True

    def _embed(self, tokens, positions):
        """tokens (B, T), positions (T,) -> (B, T, d)."""
        return self.embedding_norm(self.word_embedding(tokens) + self.position_embedding(positions)[None])

    def _logits(self, y):
        """The LM head: (B, T, d) -> (B, T, vocab) float32, the decoder tied to the word embedding."""
        h = self.head_norm(hf_activation(self.hidden_act, self.head_dense(y)))
        table = ops.cast(self.word_embedding.embeddings, "float32")
        return ops.einsum("btd,vd->btv", ops.cast(h, "float32"), table) + ops.cast(self.head_bias, "float32")

    def project_encoder(self, encoder_outputs):
        """Per layer, cross-attention (keys, values) (B, R, h, d_h) of the last encoder level."""
        if not self.built:
            self.build()
        image_tokens = encoder_outputs[:, -1] if len(encoder_outputs.shape) == 4 else encoder_outputs
        if image_tokens.shape[-1] != self.encoder_dim:
            raise ValueError(f"BertTextDecoder expects image tokens of width {self.encoder_dim}, got encoder outputs "
                             f"of shape {tuple(encoder_outputs.shape)}.")
        return [layer.project_encoder(image_tokens) for layer in self.decoder_layers]

    def call(self, tokens, encoder_outputs, encoder_mask=None, training=None, return_attention=False,
             captions_per_image=1, padding_mask=None):
        """Teacher-forced logits.

        Args:
            tokens: (B * k, T) int, starting with `[DEC]`, right-padded with `pad_id`.
            encoder_outputs: (B, N, R, d_vision) or (B, R, d_vision) image tokens.
            encoder_mask: (B, R) bool, True for real image tokens, or None.
            return_attention: also return the last layer's cross-attention (B * k, 1, T, R), heads averaged,
                and None for gates, as `TransformerDecoder` does.
            captions_per_image: k captions of each image, image by image.
            padding_mask: (B * k, T) bool, False at padding; None: the tokens equal to `pad_id` (none when it
                is None).

        Returns:
            (B * k, T, vocab) float32 logits.
        """
        length = ops.shape(tokens)[1]
        if padding_mask is not None:
            real = ops.cast(padding_mask, "bool")
        elif self.pad_id is None:
            real = ops.ones_like(tokens, dtype="bool")
        else:
            real = ops.not_equal(tokens, self.pad_id)
        causal = ops.tril(ops.ones((length, length), dtype="bool"))
        self_mask = ops.logical_and(causal[None], ops.expand_dims(real, 1))  # (B * k, T, T)
        y = self._embed(tokens, ops.arange(length))
        for layer, (keys, values) in zip(self.decoder_layers, self.project_encoder(encoder_outputs)):
            y, weights = layer(y, self_mask, keys, values, encoder_mask, captions_per_image=captions_per_image)
        logits = self._logits(y)
        return (logits, ops.expand_dims(weights, 1), None) if return_attention else logits

    def initial_cache(self, batch_size, max_steps):
        """Zero self-attention caches, one (keys, values) pair (B, max_steps, h, d_h) per layer."""
        if isinstance(max_steps, int) and max_steps > self.max_length:
            raise ValueError(f"max_steps {max_steps} exceeds the decoder's {self.max_length} positions "
                             f"(config max_position_embeddings).")
        shape = (batch_size, max_steps, self.num_heads, self.head_dim)
        return [(ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype))
                for _ in self.decoder_layers]

    def step(self, tokens, position, cache, encoder_kv, encoder_mask=None, return_attention=False,
             captions_per_image=1):
        """Logits for one new token per sequence, reusing the cached keys and values.

        Args:
            tokens: (B * k,) int, the token fed at this step.
            position: scalar int, its 0-based position (0 for `[DEC]`).
            cache: from `initial_cache` or a previous step.
            encoder_kv: from `project_encoder` (once per image).
            encoder_mask: (B, R) bool or None.
            captions_per_image: k sequences per image, image by image.

        Returns:
            `(logits (B * k, vocab) float32, new_cache)`, plus the last layer's cross-attention (B * k, 1, R)
            and None for gates when `return_attention`.
        """
        y = self._embed(ops.expand_dims(tokens, 1), ops.reshape(position, (1,)))  # (B * k, 1, d)
        new_cache = []
        for layer, (cache_keys, cache_values), (keys, values) in zip(self.decoder_layers, cache, encoder_kv):
            y, cache_keys, cache_values, weights = layer.step(y, position, cache_keys, cache_values, keys, values,
                                                              encoder_mask, captions_per_image)
            new_cache.append((cache_keys, cache_values))
        logits = self._logits(y)[:, 0]
        return (logits, new_cache, weights[:, None, 0], None) if return_attention else (logits, new_cache)

    def compute_output_shape(self, tokens_shape, *args, **kwargs):
        return tuple(tokens_shape) + (self.vocab_size,)

    def get_config(self):
        config = super().get_config()
        config.update({
            "vocab_size": self.vocab_size, "num_layers": self.num_layers, "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads, "intermediate_dim": self.intermediate_dim, "encoder_dim": self.encoder_dim,
            "max_length": self.max_length, "pad_id": self.pad_id, "layer_norm_epsilon": self.layer_norm_epsilon,
            "hidden_act": self.hidden_act,
        })
        return config
