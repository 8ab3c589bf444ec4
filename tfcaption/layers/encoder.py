"""The memory-augmented encoder stack, returning every layer's output."""

import keras
from keras import ops

from tfcaption.layers.encoder_layer import MemoryAugmentedEncoderLayer


@keras.saving.register_keras_serializable(package="tfcaption")
class MemoryAugmentedEncoder(keras.layers.Layer):
    """A stack of memory-augmented encoder layers.

    Returns all layer outputs stacked as `(B, num_layers, R, d)`: the meshed
    decoder attends to every encoder level, the transformer decoder to the
    last. With `memory_slots=0` this is a plain (post-LN) transformer encoder;
    with `num_layers=0` the input tokens are the one level, `(B, 1, R, d)`
    (CPTR, where the image encoder already is a transformer).

    Args:
        num_layers: int. Number of encoder layers (N_enc), >= 0.
        num_heads, key_dim, intermediate_dim, memory_slots, dropout,
        layer_norm_epsilon, memory_init, scale: as `MemoryAugmentedEncoderLayer`.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = MemoryAugmentedEncoder(3, 4, 16, 128, memory_slots=8)
    >>> tuple(encoder(keras.ops.ones((2, 10, 64))).shape)
    (2, 3, 10, 64)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(
        self,
        num_layers,
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
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.intermediate_dim = intermediate_dim
        self.memory_slots = memory_slots
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.memory_init = memory_init
        self.scale = scale
        self.encoder_layers = [
            MemoryAugmentedEncoderLayer(
                num_heads,
                key_dim,
                intermediate_dim,
                memory_slots,
                dropout,
                layer_norm_epsilon,
                memory_init,
                scale,
                dtype=self.dtype_policy,
                name=f"layer_{i}",
            )
            for i in range(num_layers)
        ]

    def build(self, input_shape):
        for layer in self.encoder_layers:
            layer.build(input_shape)
        self.built = True

    @property
    def num_levels(self):
        return max(self.num_layers, 1)

    def call(self, x, padding_mask=None, training=None):
        """`padding_mask`: (B, R) bool, True for real regions; None attends all."""
        if not self.encoder_layers:
            return ops.expand_dims(x, 1)
        attention_mask = None if padding_mask is None else ops.expand_dims(padding_mask, 1)
        outputs = []
        for layer in self.encoder_layers:
            x = layer(x, attention_mask=attention_mask, training=training)
            outputs.append(x)
        return ops.stack(outputs, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_levels) + tuple(input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
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
