"""The captioning model: image encoder, memory-augmented encoder, meshed decoder."""

import keras
from keras import ops

from tfcaption.layers.conv_stem import ConvStem
from tfcaption.layers.decoder import MeshedDecoder
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.patch_encoder import PatchEncoder
from tfcaption.layers.patches import Patches
from tfcaption.layers.region_encoder import RegionEncoder
from tfcaption.models.config import CaptionerConfig


@keras.saving.register_keras_serializable(package="tfcaption")
class Captioner(keras.Model):
    """A Meshed-Memory Transformer captioner built from a `CaptionerConfig`.

    The image side is either raw pixels (`Patches` -> `PatchEncoder`) or
    precomputed region features (`RegionEncoder`, M2's input projection); both
    feed the same memory-augmented encoder, whose every layer output the meshed
    decoder attends to.

    Inputs are a dict: `"images"` (B, H, W, 3) float in [-1, 1] or `"features"`
    (B, R, feature_dim) with all-zero rows as padding, and `"tokens"` (B, T)
    int decoder inputs starting with <bos>. `call` returns (B, T, vocab)
    float32 logits (apply log-softmax for M2's head). Decoding lives in
    `tfcaption.decoding` and uses `encode`, `decoder.project_encoder` and
    `decoder.step`.

    Args:
        config: a `CaptionerConfig` or its dict.
        **kwargs: standard `keras.Model` arguments.

    Example:
    >>> config = CaptionerConfig.from_preset("small", vocab_size=40)
    >>> model = Captioner(config)
    >>> images = keras.ops.zeros((2, 96, 96, 3))
    >>> tokens = keras.ops.ones((2, 5), dtype="int32")
    >>> tuple(model({"images": images, "tokens": tokens}).shape)
    (2, 5, 40)

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = CaptionerConfig.from_dict(config)
        if config.vocab_size <= 4:
            raise ValueError("CaptionerConfig.vocab_size must be set from the vocabulary (> 4).")
        kwargs.setdefault("dtype", config.dtype_policy)
        super().__init__(**kwargs)
        self.config = config
        c = config
        policy = self.dtype_policy
        if c.image_input == "pixels":
            self.stem = ConvStem(c.stem_filters, dtype=policy, name="stem") if c.stem_filters else None
            self.patches = Patches(c.patch_size // c.stem_stride, dtype=policy, name="patches")
            self.image_encoder = PatchEncoder(
                c.num_patches, c.hidden_dim, c.layer_norm_epsilon, dtype=policy, name="patch_encoder"
            )
        elif c.image_input == "regions":
            self.image_encoder = RegionEncoder(
                c.hidden_dim, c.dropout, c.layer_norm_epsilon, c.encoder_padding_mask, dtype=policy,
                name="region_encoder",
            )
        else:
            raise ValueError(f"image_input must be 'pixels' or 'regions', got {c.image_input!r}.")
        self.encoder = MemoryAugmentedEncoder(
            c.num_encoder_layers, c.num_heads, c.key_dim, c.intermediate_dim, c.memory_slots, c.dropout,
            c.layer_norm_epsilon, c.memory_init, dtype=policy, name="encoder",
        )
        self.decoder = MeshedDecoder(
            c.vocab_size, c.num_decoder_layers, c.hidden_dim, c.num_heads, c.key_dim, c.intermediate_dim,
            c.num_encoder_layers, c.max_length, c.pad_id, c.dropout, c.layer_norm_epsilon, c.output_bias,
            dtype=policy, name="decoder",
        )
        self.build_all()

    def build_all(self):
        """Creates every weight now, so checkpoints restore and converters map eagerly."""
        c = self.config
        if c.image_input == "pixels":
            channels = 3
            if self.stem is not None:
                self.stem.build((None, c.image_size, c.image_size, 3))
                channels = c.stem_filters[-1]
            side = c.patch_size // c.stem_stride
            self.image_encoder.build((None, c.num_patches, side * side * channels))
        else:
            self.image_encoder.build((None, None, c.feature_dim))
        self.encoder.build((None, None, c.hidden_dim))
        self.decoder.build((None, None))
        self.built = True

    @property
    def image_key(self):
        return "images" if self.config.image_input == "pixels" else "features"

    def encode(self, image_inputs, training=None):
        """Returns `(encoder_outputs (B, N, R, d), encoder_mask (B, R) bool or None)`."""
        if self.config.image_input == "pixels":
            x = ops.cast(image_inputs, self.compute_dtype)
            if self.stem is not None:
                x = self.stem(x)
            x = self.image_encoder(self.patches(x))
            mask = None
        else:
            x, mask = self.image_encoder(image_inputs, training=training)
        return self.encoder(x, padding_mask=mask, training=training), mask

    def call(self, inputs, training=None):
        encoder_outputs, encoder_mask = self.encode(inputs[self.image_key], training=training)
        return self.decoder(inputs["tokens"], encoder_outputs, encoder_mask, training=training)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
