"""The captioning network: an image encoder, a visual encoder and a decoder, built from flat keyword arguments."""

import dataclasses

import keras
from keras import ops

from tfcaption.layers.bert_text_decoder import BertTextDecoder
from tfcaption.layers.blip_vit_image_encoder import BlipVitImageEncoder
from tfcaption.layers.clip_image_encoder import ClipImageEncoder
from tfcaption.layers.cnn_image_encoder import CnnImageEncoder
from tfcaption.layers.decoder import DECODERS
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.patch_image_encoder import PatchImageEncoder
from tfcaption.layers.region_encoder import RegionEncoder
from tfcaption.layers.vit_image_encoder import VitImageEncoder
from tfcaption.models.config import CaptionerConfig
from tfcaption.models.presets import PRESETS


def backbone_fields():
    """The backbone's keyword arguments: the `CaptionerConfig` fields."""
    return [f.name for f in dataclasses.fields(CaptionerConfig)]


def backbone_kwargs(config):
    """`CaptionerBackbone` keyword arguments from a `CaptionerConfig` (or its dict, in any saved layout:
    special ids that configs once carried are dropped when they are the tokenizer's, refused otherwise)."""
    if isinstance(config, dict):
        config = CaptionerConfig.from_dict(config)
    return config.to_dict()


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
    if part.type == "clip":
        return ClipImageEncoder(part.input_size(), **part.sizes(), hidden_dim=c.hidden_dim, hidden_act=part.hidden_act,
                                layer_norm_epsilon=part.layer_norm_epsilon, output_layer=part.output_layer,
                                image_mean=part.image_mean, image_std=part.image_std,
                                train_backbone=part.train_backbone, trainable_blocks=part.trainable_blocks,
                                dtype=dtype, name="image_encoder")
    if part.type == "blip_vit":
        return BlipVitImageEncoder(part.image_size, part.patch_size, part.width, part.num_layers, part.num_heads,
                                   part.mlp_dim, part.layer_norm_epsilon, part.hidden_act, part.rescale_factor,
                                   part.image_mean, part.image_std, resample=part.resample,
                                   train_backbone=part.train_backbone, trainable_blocks=part.trainable_blocks,
                                   dtype=dtype, name="image_encoder")
    raise ValueError(f"no image encoder layer for type {part.type!r}")


def build_encoder(config, dtype):
    part, c = config.encoder, config
    return MemoryAugmentedEncoder(part.num_layers, c.num_heads, c.key_dim, c.intermediate_dim, part.memory_slots,
                                  c.dropout, c.layer_norm_epsilon, part.memory_init, part.scale, dtype=dtype,
                                  name="encoder")


def build_decoder(config, dtype):
    part, c = config.decoder, config
    if part.type == "bert":
        # pad_id None: the backbone knows no token id; padding comes as the inputs' padding_mask
        return BertTextDecoder(c.vocab_size, part.num_layers, c.hidden_dim, c.num_heads, c.intermediate_dim,
                               encoder_dim=config.image_encoder.width, max_length=c.max_length, pad_id=None,
                               layer_norm_epsilon=c.layer_norm_epsilon, hidden_act=part.hidden_act, dtype=dtype,
                               name="decoder")
    return DECODERS[part.type](
        c.vocab_size, part.num_layers, c.hidden_dim, c.num_heads, c.key_dim, c.intermediate_dim,
        config.encoder.num_levels, c.max_length, dropout=c.dropout, layer_norm_epsilon=c.layer_norm_epsilon,
        output_bias=c.output_bias,
        dtype=dtype, name="decoder",
    )


@keras.saving.register_keras_serializable(package="tfcaption")
class CaptionerBackbone(keras.Model):
    """The captioning network: image encoder + visual encoder + decoder, from flat keyword arguments.

    ```
    image input --image_encoder--> tokens (B, R, d), mask --encoder--> levels (B, N, R, d)
                --decoder (tokens, levels)--> logits (B, T, vocab)
    ```
    The image encoder is `patches` (pixels, optional conv stem, patches; a CNN grid when the patch is one
    stem cell), `vit` (a ViT backbone, Google's checkpoints), `cnn` (a keras.applications feature map) or
    `regions` (M2's projection of detection features); the visual encoder is the memory-augmented encoder
    (memory 0 = plain, 0 layers = none); the decoder is `meshed` (M2) or `transformer` (Vaswani / CPTR /
    Springenberg). Presets (the presets table, `tfcaption.models.presets.PRESETS`) name the combinations of the papers.

    The keyword arguments are the fields of `tfcaption.models.config.CaptionerConfig`: the sizes shared by
    every part are flat arguments and each part is a small dict chosen by its `"type"` (the same names
    `--set model.<field>` and a run's config.json use). `get_config()` returns exactly these arguments (and
    `name`), with every default filled in; `backbone.config` is the same as a `CaptionerConfig`, which the
    searches (`tfcaption.decoding`), the trainer and the export read. The network knows no token id: the
    special ids are the tokenizer's (`CaptionerPreprocessor.special_ids`), given to decoding by its callers.

    Inputs are a dict: `backbone.input_key` (`"images"` (B, H, W, 3) float pixel values in [0, 255], or
    `"features"` (B, R, feature_dim) with all-zero rows as padding), `"tokens"` (B, T) int decoder
    inputs starting with the start token (or (B, k, T): k captions per image, each image encoded once) and
    optionally `"padding_mask"`, bool of the tokens' shape, False at padding (keras-hub's convention;
    `tfcaption.data.pipeline.decoder_inputs` makes both from token rows). Without it every token is real.
    Padding tokens take position 0 and no token attends to them. `call` returns float32-castable logits
    (B, T, vocab) (apply log-softmax for M2's head).

    Args:
        vocab_size: words in the vocabulary (> 4: the four special tokens come first).
        image_encoder: dict, the image encoder part (`{"type": "patches" | "vit" | "cnn" | "clip" | "regions", ...}`).
        encoder: dict, the visual encoder (`{"num_layers", "memory_slots", "memory_init", "scale"}`).
        decoder: dict, the decoder (`{"type": "meshed" | "transformer", "num_layers"}`).
        hidden_dim, num_heads, key_dim, intermediate_dim, dropout, layer_norm_epsilon, output_bias: the
            sizes every part shares (`hidden_dim == num_heads * key_dim`).
        max_length: the longest token row, <bos> included (the position table's size).
        dtype_policy: "float32", "mixed_bfloat16", "mixed_float16", or "auto" (float32 outside training).
        **kwargs: `keras.Model` arguments (`name`, `dtype`).

    Example:
    >>> backbone = CaptionerBackbone.from_preset_config("small", vocab_size=40)
    >>> logits = backbone({"images": keras.ops.zeros((2, 96, 96, 3)), "tokens": keras.ops.ones((2, 5), "int32")})
    >>> tuple(logits.shape), backbone.token_grid
    ((2, 5, 40), TokenGrid(rows=6, cols=6, prefix=0))
    >>> CaptionerBackbone.from_config(backbone.get_config()).get_config() == backbone.get_config()
    True

    Reference:
        Cornia et al., "Meshed-Memory Transformer for Image Captioning", CVPR 2020.
    """

    def __init__(self, vocab_size, image_encoder=None, encoder=None, decoder=None, hidden_dim=512, num_heads=8,
                 key_dim=64, intermediate_dim=2048, dropout=0.1, max_length=54, layer_norm_epsilon=1e-5,
                 output_bias=False, dtype_policy="auto", **kwargs):
        arguments = dict(vocab_size=vocab_size, image_encoder=image_encoder or {}, encoder=encoder or {},
                         decoder=decoder or {}, hidden_dim=hidden_dim, num_heads=num_heads, key_dim=key_dim,
                         intermediate_dim=intermediate_dim, dropout=dropout, max_length=max_length,
                         layer_norm_epsilon=layer_norm_epsilon, output_bias=output_bias, dtype_policy=dtype_policy)
        # CaptionerConfig checks every value (one line naming the field) and fills each part's defaults.
        config = CaptionerConfig.from_dict(arguments)
        if config.vocab_size <= 4:
            raise ValueError("vocab_size must be set from the vocabulary (> 4).")
        kwargs.setdefault("dtype", "float32" if config.dtype_policy == "auto" else config.dtype_policy)
        super().__init__(**kwargs)
        self._config = config
        policy = self.dtype_policy
        self.image_encoder = build_image_encoder(config, policy)
        self.encoder = build_encoder(config, policy)
        self.decoder = build_decoder(config, policy)
        self.build_all()

    @classmethod
    def from_model_config(cls, config, **kwargs):
        """A backbone from a `CaptionerConfig` or its dict (a run's `model` section, in any saved layout)."""
        return cls(**backbone_kwargs(config), **kwargs)

    @classmethod
    def from_preset_config(cls, name, **overrides):
        """A randomly initialised backbone of preset `name` (`CaptionerConfig.from_preset` overrides apply)."""
        return cls.from_model_config(CaptionerConfig.from_preset(name, **overrides))

    @property
    def config(self):
        """The arguments as a `CaptionerConfig`, as searches and exports read them."""
        return self._config

    def build_all(self):
        """Creates every weight now, so checkpoints restore and converters map eagerly."""
        self.image_encoder.build()
        self.encoder.build((None, None, self._config.hidden_dim))
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
        held, wanted, kind = inputs.kind, self.input_key, self._config.image_encoder.type
        if held != wanted:
            names = ", ".join(name for name, preset in PRESETS.items() if preset.input_kind == held)
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
        (B, k, T, vocab) with each image encoded once for its k captions; `inputs["padding_mask"]` (optional,
        the tokens' shape) marks the real tokens."""
        encoder_outputs, encoder_mask = self.encode(inputs[self.input_key], training=training)
        tokens, padding_mask = inputs["tokens"], inputs.get("padding_mask")
        if len(tokens.shape) == 3:
            k, length = tokens.shape[1], ops.shape(tokens)[2]
            flat_mask = None if padding_mask is None else ops.reshape(padding_mask, (-1, length))
            logits = self.decoder(ops.reshape(tokens, (-1, length)), encoder_outputs, encoder_mask, training=training,
                                  captions_per_image=k, padding_mask=flat_mask)
            return ops.reshape(logits, (-1, k, length, ops.shape(logits)[-1]))
        return self.decoder(tokens, encoder_outputs, encoder_mask, training=training, padding_mask=padding_mask)

    def get_config(self):
        """Exactly the keyword arguments (every default filled in) and the name."""
        return {**backbone_kwargs(self._config), "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "config" in config:  # saved by the former `Captioner`: {"config": {CaptionerConfig dict}, "name"}
            return cls.from_model_config(config.pop("config"), **config)
        return cls(**config)


# `.keras` files written while the network had a second class, `Captioner(config)`, name it
# "tfcaption>Captioner" with a `{"config": {...}}` layout: they load as the one network class (`from_config`
# reads that layout). Only the lookup is aliased, so new files are saved as "tfcaption>CaptionerBackbone".
keras.saving.get_custom_objects()["tfcaption>Captioner"] = CaptionerBackbone
