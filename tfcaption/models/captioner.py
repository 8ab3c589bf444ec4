"""The captioning model: an image encoder, a visual encoder and a decoder, each chosen by its config."""

import keras
from keras import ops

from tfcaption.layers.cnn_image_encoder import CnnImageEncoder
from tfcaption.layers.decoder import DECODERS
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.patch_image_encoder import PatchImageEncoder
from tfcaption.layers.region_encoder import RegionEncoder
from tfcaption.layers.vit_image_encoder import VitImageEncoder
from tfcaption.models.config import PRESETS, CaptionerConfig, preset_input


def build_image_encoder(config, dtype):
    """The `config.image_encoder` part (see `tfcaption.layers.image_encoder` for its interface)."""
    part, c = config.image_encoder, config
    if part.type == "patches":
        return PatchImageEncoder(part.image_size, part.patch_size, part.stem_filters, c.hidden_dim, part.positions,
                                 c.layer_norm_epsilon, dtype=dtype, name="image_encoder")
    if part.type == "regions":
        return RegionEncoder(c.hidden_dim, part.feature_dim, c.dropout, c.layer_norm_epsilon, part.padding_mask,
                             dtype=dtype, name="image_encoder")
    if part.type == "vit":
        return VitImageEncoder(part.image_size, **part.sizes(), hidden_dim=c.hidden_dim, gelu=part.gelu,
                               dropout=part.dropout, train_backbone=part.train_backbone,
                               trainable_blocks=part.trainable_blocks, dtype=dtype, name="image_encoder")
    if part.type == "cnn":
        return CnnImageEncoder(part.backbone, part.layer, part.image_size, c.hidden_dim, part.positions,
                               c.layer_norm_epsilon, weights=part.weights, train_backbone=part.train_backbone,
                               trainable_blocks=part.trainable_blocks, dtype=dtype, name="image_encoder")
    raise ValueError(f"no image encoder layer for type {part.type!r}")


def build_encoder(config, dtype):
    part, c = config.encoder, config
    return MemoryAugmentedEncoder(part.num_layers, c.num_heads, c.key_dim, c.intermediate_dim, part.memory_slots,
                                  c.dropout, c.layer_norm_epsilon, part.memory_init, part.scale, dtype=dtype,
                                  name="encoder")


def build_decoder(config, dtype):
    part, c = config.decoder, config
    return DECODERS[part.type](
        c.vocab_size, part.num_layers, c.hidden_dim, c.num_heads, c.key_dim, c.intermediate_dim,
        config.encoder.num_levels, c.max_length, c.pad_id, c.dropout, c.layer_norm_epsilon, c.output_bias,
        dtype=dtype, name="decoder",
    )


@keras.saving.register_keras_serializable(package="tfcaption")
class Captioner(keras.Model):
    """An image captioner assembled from three parts chosen by a `CaptionerConfig`.

    ```
    image input --image_encoder--> tokens (B, R, d), mask --encoder--> levels (B, N, R, d)
                --decoder (tokens, levels)--> logits (B, T, vocab)
    ```
    The image encoder is `patches` (pixels, optional conv stem, patches; a CNN grid when the patch is one
    stem cell), `vit` (a ViT backbone, Google's checkpoints), `cnn` (a keras.applications feature map) or
    `regions` (M2's projection of detection features); the visual encoder is the
    memory-augmented encoder (memory 0 = plain, 0 layers = none); the decoder is `meshed` (M2) or
    `transformer` (Vaswani / CPTR / Springenberg). Presets name the combinations of the papers.

    Inputs are a dict: `model.input_key` (`"images"` (B, H, W, 3) float pixel values in [0, 255], or
    `"features"` (B, R, feature_dim) with all-zero rows as padding) and `"tokens"` (B, T) int decoder
    inputs starting with <bos>. `call` returns (B, T, vocab) float32 logits (apply log-softmax for M2's
    head). Decoding lives in `tfcaption.decoding` and uses `encode` and the decoder interface
    (`tfcaption.layers.decoder`).

    Args:
        config: a `CaptionerConfig` or its dict.
        **kwargs: standard `keras.Model` arguments.

    Example:
    >>> config = CaptionerConfig.from_preset("small", vocab_size=40)
    >>> model = Captioner(config)
    >>> images = keras.ops.zeros((2, 96, 96, 3))
    >>> tokens = keras.ops.ones((2, 5), dtype="int32")
    >>> tuple(model({"images": images, "tokens": tokens}).shape), model.token_grid
    ((2, 5, 40), TokenGrid(rows=6, cols=6, prefix=0))

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(self, config, **kwargs):
        if isinstance(config, dict):
            config = CaptionerConfig.from_dict(config)
        if config.vocab_size <= 4:
            raise ValueError("CaptionerConfig.vocab_size must be set from the vocabulary (> 4).")
        kwargs.setdefault("dtype", "float32" if config.dtype_policy == "auto" else config.dtype_policy)
        super().__init__(**kwargs)
        self.config = config
        policy = self.dtype_policy
        self.image_encoder = build_image_encoder(config, policy)
        self.encoder = build_encoder(config, policy)
        self.decoder = build_decoder(config, policy)
        self.build_all()

    def build_all(self):
        """Creates every weight now, so checkpoints restore and converters map eagerly."""
        self.image_encoder.build()
        self.encoder.build((None, None, self.config.hidden_dim))
        self.decoder.build()
        self.built = True

    @property
    def input_key(self):
        """The batch key of the image input: "images" or "features"."""
        return self.image_encoder.input_key

    @property
    def token_grid(self):
        """How the image tokens lie over the image (`TokenGrid`), or None for regions."""
        return self.image_encoder.token_grid

    def check_inputs(self, inputs, source):
        """Raises a one-line ValueError when a dataset's inputs (a `tfcaption.data.records.InputKind`, as
        `records.input_kind(manifest)` reads them) are not what this model reads."""
        held, wanted, kind = inputs.kind, self.input_key, self.config.image_encoder.type
        if held != wanted:
            names = ", ".join(name for name in PRESETS if preset_input(name) == held)
            hint = f"a {'region-features' if held == 'features' else 'pixel'} preset ({names})"
            raise ValueError(f"{source} holds {held} but this model's {kind!r} image encoder reads {wanted}: "
                             f"use {hint} for this data.")
        width = inputs.feature_dim
        if held == "features" and width and width != self.image_encoder.feature_dim:
            raise ValueError(f"{source}: {width} values per region, but this model reads "
                             f"{self.image_encoder.feature_dim} (set model.image_encoder.feature_dim={width}).")

    def encode(self, image_inputs, training=None):
        """Returns `(encoder_outputs (B, N, R, d), encoder_mask (B, R) bool or None)`."""
        tokens, mask = self.image_encoder(image_inputs, training=training)
        return self.encoder(tokens, padding_mask=mask, training=training), mask

    def call(self, inputs, training=None):
        """Teacher-forced logits: tokens (B, T) -> (B, T, vocab), or k captions per image (B, k, T) ->
        (B, k, T, vocab) with each image encoded once for its k captions."""
        encoder_outputs, encoder_mask = self.encode(inputs[self.input_key], training=training)
        tokens = inputs["tokens"]
        if len(tokens.shape) == 3:
            k, length = tokens.shape[1], ops.shape(tokens)[2]
            logits = self.decoder(ops.reshape(tokens, (-1, length)), encoder_outputs, encoder_mask, training=training,
                                  captions_per_image=k)
            return ops.reshape(logits, (-1, k, length, ops.shape(logits)[-1]))
        return self.decoder(tokens, encoder_outputs, encoder_mask, training=training)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
