"""CLIP's vision transformer (transformers' `CLIPVisionTransformer`), every token out of a chosen layer."""

import keras
from keras import ops

from tfcaption.layers.clip_encoder_layer import ClipEncoderLayer, check_activation
from tfcaption.layers.image_encoder import TokenGrid

OUTPUT_LAYER_NAMES = {"last": -1, "penultimate": -2}


def _output_layer(output_layer, num_layers):
    index = OUTPUT_LAYER_NAMES.get(output_layer, output_layer)
    if isinstance(index, bool) or not isinstance(index, int) or not -num_layers <= index <= -1:
        raise ValueError(f"output_layer must be 'last', 'penultimate' or an int from -{num_layers} to -1, "
                         f"got {output_layer!r}.")
    return index


@keras.saving.register_keras_serializable(package="tfcaption")
class ClipVisionTower(keras.layers.Layer):
    """CLIP's image tower: normalised pixels to every token of one encoder layer.

    A bias-free `Conv2D(hidden_dim, patch_size, strides=patch_size)` embeds the patches (row by row), a
    learned class embedding is prepended and a learned position embedding added, then `pre_layrnorm` and
    `num_layers` `ClipEncoderLayer`s. `call` returns the output of the layer `output_layer` names, as
    transformers' `hidden_states[output_layer]`: -1 the last layer (transformers' `last_hidden_state`,
    without the post-LayerNorm), -2 the penultimate (what LLaVA-style captioners take). Layers past it are
    not run. `post_layernorm` only normalises the class token for `pooled_output` (`encode`), as CLIP does.
    Inputs are `(B, image_size, image_size, num_channels)` pixels already rescaled and normalised with
    the checkpoint's mean and std (`ClipImageProcessor`).

    Args:
        image_size: int. Square input side in pixels, a multiple of `patch_size` (config.json's `image_size`).
        patch_size: int. Patch side in pixels.
        hidden_dim: int. Token width D (`hidden_size`).
        num_heads: int. Attention heads (`num_attention_heads`).
        num_layers: int. Encoder layers (`num_hidden_layers`).
        intermediate_dim: int. MLP inner width (`intermediate_size`).
        hidden_act: str. The MLP's activation (`hidden_act`), see `ClipEncoderLayer`.
        layer_norm_epsilon: float. LayerNorm epsilon (`layer_norm_eps`).
        output_layer: "last", "penultimate", or an int from -num_layers to -1 (stored as the int).
        num_channels: int. Input channels (`num_channels`).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> tower = ClipVisionTower(image_size=32, patch_size=8, hidden_dim=16, num_heads=2, num_layers=2,
    ...                         intermediate_dim=32, output_layer="penultimate")
    >>> tuple(tower(keras.ops.zeros((2, 32, 32, 3))).shape), tower.token_grid
    ((2, 17, 16), TokenGrid(rows=4, cols=4, prefix=1))

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    """

    def __init__(self, image_size, patch_size, hidden_dim, num_heads, num_layers, intermediate_dim,
                 hidden_act="quick_gelu", layer_norm_epsilon=1e-5, output_layer=-1, num_channels=3, **kwargs):
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.intermediate_dim = int(intermediate_dim)
        self.hidden_act = check_activation(hidden_act)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.output_layer = _output_layer(output_layer, self.num_layers)
        self.num_channels = int(num_channels)
        if self.image_size <= 0 or self.image_size % self.patch_size:
            raise ValueError(f"image_size {image_size} must be a positive multiple of patch_size {patch_size}.")
        self.patch_embedding = keras.layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size, padding="valid", use_bias=False,
            dtype=self.dtype_policy, name="patch_embedding")
        self.pre_layrnorm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="pre_layrnorm")
        self.encoder_layers = [
            ClipEncoderLayer(self.hidden_dim, self.num_heads, self.intermediate_dim, self.hidden_act,
                             layer_norm_epsilon, dtype=self.dtype_policy, name=f"layer_{i}")
            for i in range(self.num_layers)
        ]
        self.post_layernorm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="post_layernorm")

    @property
    def token_grid(self):
        side = self.image_size // self.patch_size
        return TokenGrid(side, side, prefix=1)

    @property
    def num_tokens(self):
        return 1 + self.token_grid.cells

    def build(self, input_shape=None):
        expected = (self.image_size, self.image_size, self.num_channels)
        if input_shape is not None and tuple(input_shape[1:]) != expected:
            raise ValueError(f"ClipVisionTower built for images of {expected} got inputs of shape "
                             f"{tuple(input_shape)}.")
        self.patch_embedding.build((None,) + expected)
        self.class_embedding = self.add_weight(
            shape=(self.hidden_dim,), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="class_embedding")
        self.position_embedding = self.add_weight(
            shape=(self.num_tokens, self.hidden_dim), initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="position_embedding")
        tokens = (None, self.num_tokens, self.hidden_dim)
        self.pre_layrnorm.build(tokens)
        for layer in self.encoder_layers:
            layer.build(tokens)
        self.post_layernorm.build((None, self.hidden_dim))
        self.built = True

    def embed(self, pixels):
        """Pixels `(B, S, S, C)` to the encoder's input `(B, 1 + N, D)` (pre_layrnorm applied)."""
        x = self.patch_embedding(ops.cast(pixels, self.compute_dtype))  # (b, s/p, s/p, d)
        x = ops.reshape(x, (-1, self.num_tokens - 1, self.hidden_dim))  # (b, n, d), patches row by row
        cls = ops.cast(self.class_embedding, x.dtype)[None, None, :]
        cls = ops.broadcast_to(cls, (ops.shape(x)[0], 1, self.hidden_dim))  # (b, 1, d)
        x = ops.concatenate([cls, x], axis=1) + ops.cast(self.position_embedding, x.dtype)  # (b, 1 + n, d)
        return self.pre_layrnorm(x)

    def encode(self, pixels, training=None):
        """Everything transformers' `CLIPVisionTransformer` returns: a dict with `hidden_states` (the list of
        `num_layers + 1` tensors `(B, 1 + N, D)`: the embeddings, then each layer's output),
        `last_hidden_state` (= `hidden_states[-1]`, no post-LayerNorm) and `pooled_output` (`(B, D)`:
        `post_layernorm` of the last layer's class token)."""
        hidden_states = [self.embed(pixels)]
        for layer in self.encoder_layers:
            hidden_states.append(layer(hidden_states[-1], training=training))
        return {"hidden_states": hidden_states, "last_hidden_state": hidden_states[-1],
                "pooled_output": self.post_layernorm(hidden_states[-1][:, 0, :])}

    def call(self, pixels, training=None):
        x = self.embed(pixels)
        for layer in self.encoder_layers[:self.num_layers + 1 + self.output_layer]:
            x = layer(x, training=training)
        return x  # (b, 1 + n, d)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_size": self.image_size, "patch_size": self.patch_size, "hidden_dim": self.hidden_dim,
            "num_heads": self.num_heads, "num_layers": self.num_layers, "intermediate_dim": self.intermediate_dim,
            "hidden_act": self.hidden_act, "layer_norm_epsilon": self.layer_norm_epsilon,
            "output_layer": self.output_layer, "num_channels": self.num_channels,
        })
        return config
