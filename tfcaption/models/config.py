"""Model configuration as data: the shared sizes plus one nested section per part (named presets: presets.py).

```
CaptionerConfig
  image_encoder   pixels or features -> image tokens    {"type": "patches" | "vit" | "cnn" | "clip" | "regions", ...}
  encoder         the visual encoder, every level out   {"type": "memory", num_layers, memory_slots, scale, ...}
  decoder         tokens + encoder levels -> logits      {"type": "meshed" | "transformer", num_layers}
  hidden_dim, num_heads, key_dim, intermediate_dim, dropout, max_length, ...   shared by every part
```

Each part section is a small dataclass chosen by its `type` (`IMAGE_ENCODER_TYPES`, `ENCODER_TYPES`,
`DECODER_TYPES`); a new kind of part is one dataclass here and one layer, and a new architecture is a
preset. Configs written before the parts existed (one flat section: `image_input`, `image_size`,
`num_encoder_layers`, ...) still load: `LEGACY_FIELDS` says where each flat field lives now. The special
token ids are the tokenizer's (`CaptionerPreprocessor`, `tfcaption.data.tokenizer.SpecialIds`), not model
fields; configs written while they were (`pad_id`, `bos_id`, `eos_id`) still load (`LEGACY_SPECIAL_IDS`).
"""

import dataclasses
import json

from tfcaption.config_fields import (Annotated, ConfigError, Count, Fraction, Literal, Positive, PositiveInt, Range,
                                     check_fields, section_from_dict, shown)
from tfcaption.data.tokenizer import Vocabulary
from tfcaption.models.presets import PRESETS, get_preset  # noqa: F401 (PRESETS re-exported: the presets table)


def dataclass_from_dict(cls, values, path=None):
    """`cls(**values)`, refusing unknown fields by name (a typo in a config file must not pass silently)."""
    return section_from_dict(cls, values, path or getattr(cls, "PATH", cls.__name__))


def check_choice(name, value, choices):
    """A one-line ValueError naming the field when `value` is not one of `choices`."""
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(repr(c) for c in choices)}, got {value!r}.")


def _plain(values):
    """Tuples as lists, so a config dict is JSON and compares equal after a round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


# ---- image encoders ----------------------------------------------------------------------------

POSITIONS = Literal["learned", "sinusoid_2d"]


@dataclasses.dataclass
class PatchesConfig:
    """Raw pixels -> an optional conv stem -> non-overlapping patches -> linear projection + positions.

    With `patch_size` equal to the stem's stride every token is one cell of the stem's feature map:
    the CNN-grid encoder of Springenberg et al. (use `positions="sinusoid_2d"` there).
    """

    PATH = "model.image_encoder"

    type: Literal["patches"] = "patches"
    image_size: PositiveInt = 224
    patch_size: PositiveInt = 16  # in input pixels
    stem_filters: tuple[PositiveInt, ...] = ()  # channels of stride-2 conv layers before patching; () = none
    positions: POSITIONS = "learned"  # "learned" (ViT) or "sinusoid_2d" (fixed, half the channels per axis)

    def __post_init__(self):
        check_fields(self, self.PATH)
        stride = 2 ** len(self.stem_filters)
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.image_encoder.image_size {self.image_size} is not a multiple of "
                              f"model.image_encoder.patch_size {self.patch_size}.")
        if self.patch_size % stride:
            raise ConfigError(f"model.image_encoder.patch_size {self.patch_size} is not a multiple of the conv "
                              f"stem's stride {stride} (2 ** len(stem_filters)).")


@dataclasses.dataclass
class RegionsConfig:
    """Precomputed region features (B, R, feature_dim), all-zero rows = padding; M2's input projection."""

    PATH = "model.image_encoder"

    type: Literal["regions"] = "regions"
    feature_dim: PositiveInt = 2048
    padding_mask: Literal["corrected", "released"] = "corrected"  # "released": nothing masked (the authors' code)

    def __post_init__(self):
        check_fields(self, self.PATH)


BACKBONE_TRAINING = Literal["all", "last_n", "frozen"]  # as tfcaption.layers.image_encoder.BACKBONE_TRAINING


def _check_backbone_training(part):
    """The fields every pretrained backbone shares: how much of it trains (types checked by the annotations)."""
    if part.train_backbone == "last_n" and part.trainable_blocks < 1:
        raise ConfigError(f"model.image_encoder.train_backbone='last_n' needs model.image_encoder.trainable_blocks "
                          f">= 1, got {part.trainable_blocks}.")


VIT_SIZES = ("patch_size", "width", "num_heads", "num_layers", "mlp_dim")


@dataclasses.dataclass
class VitConfig:
    """A ViT backbone (Dosovitskiy et al.), optionally with Google's pretrained `.npz` weights, then a
    linear projection to the captioner's `hidden_dim` when its width differs.

    `architecture` (`vit_b16`, `vit_b32`, `vit_l16`, `vit_l32`) gives the sizes that are left at 0; any size
    may be set instead. With `weights` (a Google `.npz` path, a name such as `vit_b16`, or a URL) a new run
    takes every size from the file (`tfcaption.models.pretrained.with_checkpoint_sizes`), and its
    weights are loaded when training starts from scratch; a run or an export restores its own.
    Tokens: the class token, then the patch grid row by row.
    """

    PATH = "model.image_encoder"

    type: Literal["vit"] = "vit"
    architecture: str = "vit_b16"
    image_size: PositiveInt = 224
    patch_size: Count = 0  # each size 0 = the architecture's
    width: Count = 0
    num_heads: Count = 0
    num_layers: Count = 0
    mlp_dim: Count = 0
    gelu: Literal["tanh", "erf"] = "tanh"  # "tanh" (what Google's checkpoints were trained with), "erf" (exact)
    dropout: Fraction = 0.0
    weights: str = ""  # "" = random initialisation
    train_backbone: BACKBONE_TRAINING = "all"  # "all" | "last_n" (the last `trainable_blocks` blocks) | "frozen"
    trainable_blocks: Count = 0
    backbone_lr_multiplier: Positive = 1.0  # the backbone's learning rate = this x the schedule's

    def __post_init__(self):
        from tfcaption.models.vit import ARCHITECTURES  # numbers only; the layer is built elsewhere

        check_fields(self, self.PATH)
        if self.architecture not in ARCHITECTURES and not all(getattr(self, f) for f in VIT_SIZES):
            raise ConfigError(f"model.image_encoder.architecture {self.architecture!r} is not one of "
                              f"{', '.join(ARCHITECTURES)}; name one or set every size ({', '.join(VIT_SIZES)}).")
        sizes = self.sizes()
        if self.image_size % sizes["patch_size"]:
            raise ConfigError(f"model.image_encoder.image_size {self.image_size} is not a multiple of patch_size "
                              f"{sizes['patch_size']}.")
        if sizes["width"] % sizes["num_heads"]:
            raise ConfigError(f"model.image_encoder.width {sizes['width']} is not a multiple of num_heads "
                              f"{sizes['num_heads']}.")
        if self.train_backbone == "last_n" and self.trainable_blocks > sizes["num_layers"]:
            raise ConfigError(f"model.image_encoder.trainable_blocks {self.trainable_blocks} > the backbone's "
                              f"{sizes['num_layers']} blocks.")
        _check_backbone_training(self)

    def sizes(self):
        """patch_size, width, num_heads, num_layers, mlp_dim: the set fields over the architecture's."""
        from tfcaption.models.vit import ARCHITECTURES

        known = ARCHITECTURES.get(self.architecture, {})
        names = {"width": "hidden_dim"}
        return {f: getattr(self, f) or known[names.get(f, f)] for f in VIT_SIZES}


CNN_BACKBONES = ("resnet50", "resnet101", "resnet152", "vgg16", "vgg19")


@dataclasses.dataclass
class CnnConfig:
    """A `keras.applications` CNN cut at a spatial layer: its feature map is the token grid, each cell
    projected to `hidden_dim`, plus 2-D positions. Pixels go through the backbone's own preprocessing.

    `layer` "" is the backbone's last feature map before pooling (`conv5_block3_out` for ResNet: 7 x 7 x
    2048 at 224 px; `block5_conv3` for VGG: 14 x 14 x 512, the grid of Springenberg et al.); any layer
    name of the Keras model works (e.g. `conv4_block6_out`, 14 x 14 x 1024). `weights`: "" random,
    "imagenet" (Keras's own download and cache, ~/.keras/models), or a local weights file.
    """

    PATH = "model.image_encoder"

    type: Literal["cnn"] = "cnn"
    backbone: Literal[CNN_BACKBONES] = "resnet50"
    layer: str = ""
    image_size: Annotated[int, Range(32)] = 224  # the keras.applications CNNs' minimum
    positions: POSITIONS = "sinusoid_2d"
    weights: str = ""
    train_backbone: BACKBONE_TRAINING = "all"
    trainable_blocks: Count = 0
    backbone_lr_multiplier: Positive = 1.0

    def __post_init__(self):
        check_fields(self, self.PATH)
        _check_backbone_training(self)


CLIP_SIZES = ("patch_size", "width", "num_heads", "num_layers", "mlp_dim")
# The released OpenAI CLIP vision towers' config.json sizes (image 224, quick GELU, LayerNorm eps 1e-5).
CLIP_ARCHITECTURES = {
    "clip_b32": dict(patch_size=32, width=768, num_heads=12, num_layers=12, mlp_dim=3072),
    "clip_b16": dict(patch_size=16, width=768, num_heads=12, num_layers=12, mlp_dim=3072),
    "clip_l14": dict(patch_size=14, width=1024, num_heads=16, num_layers=24, mlp_dim=4096),
}
CLIP_IMAGE_SIZE = 224  # every released OpenAI CLIP tower's input side
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass
class ClipConfig:
    """A CLIP vision tower (Radford et al.), optionally with a Hugging Face `CLIPModel` / `CLIPVisionModel`
    checkpoint's weights, every token of its last or penultimate layer, then a linear projection to the
    captioner's `hidden_dim` when its width differs.

    `architecture` (`clip_b32`, `clip_b16`, `clip_l14`) gives the sizes left at 0. With `weights` (a local
    directory in the Hub's layout: config.json and model.safetensors or pytorch_model.bin) a new run takes
    every size, the activation, the LayerNorm epsilon and the normalisation (preprocessor_config.json)
    from it (`tfcaption.models.pretrained.with_checkpoint_sizes`), and loads the weights when training
    starts from scratch. `image_size` 0 is the checkpoint's (224 without one); another must be the
    checkpoint's (its position table is not resized).
    """

    PATH = "model.image_encoder"

    type: Literal["clip"] = "clip"
    architecture: str = "clip_b16"
    image_size: Count = 0
    patch_size: Count = 0  # each size 0 = the architecture's (or the checkpoint's)
    width: Count = 0
    num_heads: Count = 0
    num_layers: Count = 0
    mlp_dim: Count = 0
    hidden_act: Literal["quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"] = "quick_gelu"
    layer_norm_epsilon: Positive = 1e-5
    output_layer: Literal["last", "penultimate"] = "penultimate"
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    weights: str = ""  # "" = random initialisation; a checkpoint directory
    train_backbone: BACKBONE_TRAINING = "all"
    trainable_blocks: Count = 0
    backbone_lr_multiplier: Positive = 1.0

    def __post_init__(self):
        check_fields(self, self.PATH)
        self.image_mean, self.image_std = tuple(self.image_mean), tuple(self.image_std)
        if self.architecture not in CLIP_ARCHITECTURES and not all(getattr(self, f) for f in CLIP_SIZES):
            raise ConfigError(f"model.image_encoder.architecture {self.architecture!r} is not one of "
                              f"{', '.join(CLIP_ARCHITECTURES)}; name one or set every size ({', '.join(CLIP_SIZES)}).")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or not all(v > 0 for v in self.image_std):
            raise ConfigError("model.image_encoder.image_mean and image_std must be three numbers each (std > 0).")
        sizes = self.sizes()
        if self.input_size() % sizes["patch_size"]:
            raise ConfigError(f"model.image_encoder.image_size {self.input_size()} is not a multiple of patch_size "
                              f"{sizes['patch_size']}.")
        if sizes["width"] % sizes["num_heads"]:
            raise ConfigError(f"model.image_encoder.width {sizes['width']} is not a multiple of num_heads "
                              f"{sizes['num_heads']}.")
        used = sizes["num_layers"] - (self.output_layer == "penultimate")
        if self.train_backbone == "last_n" and self.trainable_blocks > used:
            raise ConfigError(f"model.image_encoder.trainable_blocks {self.trainable_blocks} > the {used} layers "
                              f"the {self.output_layer} layer's tokens come through.")
        _check_backbone_training(self)

    def sizes(self):
        """patch_size, width, num_heads, num_layers, mlp_dim: the set fields over the architecture's."""
        known = CLIP_ARCHITECTURES.get(self.architecture, {})
        return {f: getattr(self, f) or known[f] for f in CLIP_SIZES}

    def input_size(self):
        """The image side in pixels: `image_size`, or 224 when it is left at 0."""
        return self.image_size or CLIP_IMAGE_SIZE


@dataclasses.dataclass
class BlipVitConfig:
    """BLIP's vision tower (transformers' `BlipVisionModel`): every token after its post LayerNorm, at its own
    width (no projection: BLIP's decoder cross-attends from the vision width), normalised as the checkpoint's
    image processor does (`rescale_factor`, then `(x - image_mean) / image_std` per channel).

    The sizes are the checkpoint's `vision_config` (`tfcaption.interop.hf.import_blip` fills them); the
    preprocessor and the data pipeline resize images to `image_size` with `resample` ("bicubic": BLIP's
    processor). Fine-tuning (`tfcaption-train --init-from` an imported run) trains the tower as
    `train_backbone` says ("all", "last_n": its last `trainable_blocks` blocks and the post LayerNorm,
    "frozen"), at `backbone_lr_multiplier` x the schedule's rate, as for the ViT.
    """

    PATH = "model.image_encoder"

    type: Literal["blip_vit"] = "blip_vit"
    image_size: PositiveInt = 384
    patch_size: PositiveInt = 16
    width: PositiveInt = 768
    num_layers: PositiveInt = 12
    num_heads: PositiveInt = 12
    mlp_dim: PositiveInt = 3072
    layer_norm_epsilon: Positive = 1e-5
    hidden_act: str = "gelu"  # as transformers names it (config `hidden_act`)
    rescale_factor: Positive = 1 / 255
    image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN  # BLIP's processor uses OpenAI CLIP's
    image_std: tuple[float, ...] = OPENAI_CLIP_STD
    resample: Literal["bilinear", "bicubic"] = "bicubic"
    train_backbone: BACKBONE_TRAINING = "all"
    trainable_blocks: Count = 0
    backbone_lr_multiplier: Positive = 1.0

    def __post_init__(self):
        check_fields(self, self.PATH)
        if self.train_backbone == "last_n" and self.trainable_blocks > self.num_layers:
            raise ConfigError(f"model.image_encoder.trainable_blocks {self.trainable_blocks} > the tower's "
                              f"{self.num_layers} blocks.")
        _check_backbone_training(self)
        if self.image_size % self.patch_size:
            raise ConfigError(f"model.image_encoder.image_size {self.image_size} is not a multiple of patch_size "
                              f"{self.patch_size}.")
        if self.width % self.num_heads:
            raise ConfigError(f"model.image_encoder.width {self.width} is not a multiple of num_heads "
                              f"{self.num_heads}.")
        for name in ("image_mean", "image_std"):
            if len(getattr(self, name)) != 3:
                raise ConfigError(f"model.image_encoder.{name} must hold 3 values (R, G, B), got "
                                  f"{list(getattr(self, name))}.")


IMAGE_ENCODER_TYPES = {"patches": PatchesConfig, "regions": RegionsConfig, "vit": VitConfig, "cnn": CnnConfig,
                       "clip": ClipConfig, "blip_vit": BlipVitConfig}
PRETRAINED_TYPES = ("vit", "cnn", "clip")  # image encoders with a backbone that pretrained weights can fill


# ---- visual encoder and decoder ----------------------------------------------------------------


@dataclasses.dataclass
class EncoderConfig:
    """The memory-augmented encoder: `memory_slots=0` is a plain transformer encoder, 0 layers passes the
    image tokens straight to the decoder (CPTR, where the image encoder is the transformer)."""

    PATH = "model.encoder"

    type: Literal["memory"] = "memory"
    num_layers: Count = 3
    memory_slots: Count = 40
    memory_init: Literal["paper", "released"] = "paper"  # "released": Glorot-uniform as the authors' code runs
    scale: Literal["sqrt_dk", "sqrt_len_plus_dk"] = "sqrt_dk"  # Vaswani's (M2's) or Springenberg et al.'s eq. 2

    def __post_init__(self):
        check_fields(self, self.PATH)

    @property
    def num_levels(self):
        """Encoder outputs the decoder sees: one per layer, or the image tokens themselves."""
        return max(self.num_layers, 1)


@dataclasses.dataclass
class DecoderConfig:
    """`meshed`: M2's meshed cross-attention over every encoder level with learned gates;
    `transformer`: Vaswani's decoder, cross-attention to the last encoder level only (CPTR, Springenberg)."""

    PATH = "model.decoder"

    type: Literal["meshed", "transformer"] = "meshed"
    num_layers: PositiveInt = 3

    def __post_init__(self):
        check_fields(self, self.PATH)


@dataclasses.dataclass
class BertDecoderConfig:
    """`bert`: BLIP's text decoder (`tfcaption.layers.BertTextDecoder`): BERT layers, post-norm, causal
    self-attention and cross-attention to every image token at the image encoder's width, learned positions
    (`max_length` rows, [DEC] at 0) and the LM head tied to the word embedding. Its width, heads, inner width
    and LayerNorm epsilon are the model's shared `hidden_dim`, `num_heads`, `intermediate_dim`, `layer_norm_epsilon`."""

    PATH = "model.decoder"

    type: Literal["bert"] = "bert"
    num_layers: PositiveInt = 12
    hidden_act: str = "gelu"  # FFN and LM-head activation, as transformers names it

    def __post_init__(self):
        check_fields(self, self.PATH)


ENCODER_TYPES = {"memory": EncoderConfig}
DECODER_TYPES = {"meshed": DecoderConfig, "transformer": DecoderConfig, "bert": BertDecoderConfig}
PART_TYPES = {"image_encoder": IMAGE_ENCODER_TYPES, "encoder": ENCODER_TYPES, "decoder": DECODER_TYPES}


def part_from_dict(part, values):
    """The dataclass of one part section from its dict (or an existing dataclass), chosen by `type`."""
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        values = dataclasses.asdict(values)
    types = PART_TYPES[part]
    if not isinstance(values, dict):
        raise ConfigError(f"model.{part} must be an object with a \"type\" ({', '.join(map(repr, types))}) and "
                          f"its fields, got {shown(values)}.")
    values = dict(values)
    kind = values.setdefault("type", next(iter(types)))
    if not isinstance(kind, str) or kind not in types:
        raise ConfigError(f"model.{part}.type must be one of {', '.join(map(repr, types))}, got {shown(kind)}.")
    return dataclass_from_dict(types[kind], values, f"model.{part}")


# ---- configs written before the parts existed ----------------------------------------------------

# Flat field -> (part, field) now. A flat field that does not belong to the model's image encoder
# (old files carried image_size for region models and feature_dim for pixel models) is dropped when it
# holds its old default, and is an error otherwise.
LEGACY_FIELDS = {
    "image_size": ("image_encoder", "image_size"), "patch_size": ("image_encoder", "patch_size"),
    "stem_filters": ("image_encoder", "stem_filters"), "feature_dim": ("image_encoder", "feature_dim"),
    "encoder_padding_mask": ("image_encoder", "padding_mask"),
    "num_encoder_layers": ("encoder", "num_layers"), "memory_slots": ("encoder", "memory_slots"),
    "memory_init": ("encoder", "memory_init"), "num_decoder_layers": ("decoder", "num_layers"),
}
LEGACY_DEFAULTS = {"image_size": 224, "patch_size": 16, "stem_filters": [], "feature_dim": 2048,
                   "encoder_padding_mask": "corrected"}
# The special ids model configs carried before the tokenizer owned them. Every vocabulary such a file was
# written with (word, WordPiece, a converted M2 vocab.pkl) starts with M2's specials, so these are its ids:
# equal ones are dropped, others refused (the files' vocabulary would not match them).
LEGACY_SPECIAL_IDS = {"pad_id": Vocabulary.pad_id, "bos_id": Vocabulary.bos_id, "eos_id": Vocabulary.eos_id}


def _drop_special_ids(values):
    """`values` without the special ids a config written before the tokenizer owned them carries."""
    other = {name: values[name] for name, expected in LEGACY_SPECIAL_IDS.items()
             if name in values and values[name] != expected}
    if other:
        given = ", ".join(f"model.{name}={value!r}" for name, value in other.items())
        expected = ", ".join(f"{name}={value}" for name, value in LEGACY_SPECIAL_IDS.items())
        raise ConfigError(f"{given}: special ids are the tokenizer's ({expected} for the vocabularies of configs "
                          "that carried them), not model config fields; remove them.")
    return {name: value for name, value in values.items() if name not in LEGACY_SPECIAL_IDS}


def _from_legacy(values, default_kind="patches"):
    """Moves flat (pre-parts) model fields into their part sections; newer-style values are kept.

    `default_kind`: the image encoder type the flat fields are checked against when `values` names none.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"model must be an object of CaptionerConfig fields, got {shown(values)}.")
    values = _drop_special_ids(values)
    image_input = values.pop("image_input", None)
    parts = {name: values.pop(name, None) or {} for name in PART_TYPES}
    for name, part in parts.items():
        if dataclasses.is_dataclass(part) and not isinstance(part, type):
            part = dataclasses.asdict(part)
        if not isinstance(part, dict):  # part_from_dict's one-line error, without the legacy fields' merge
            raise ConfigError(f"model.{name} must be an object with a \"type\" "
                              f"({', '.join(map(repr, PART_TYPES[name]))}) and its fields, got {shown(part)}.")
        parts[name] = dict(part)
    if image_input is not None:
        parts["image_encoder"].setdefault("type", {"pixels": "patches"}.get(image_input, image_input))
    kind = parts["image_encoder"].get("type", default_kind)
    kind_class = IMAGE_ENCODER_TYPES.get(kind, PatchesConfig) if isinstance(kind, str) else PatchesConfig
    accepted = {f.name for f in dataclasses.fields(kind_class)}
    for old, (part, field) in LEGACY_FIELDS.items():
        if old not in values:
            continue
        value = values.pop(old)
        if part == "image_encoder" and field not in accepted:
            if _plain({old: value})[old] == LEGACY_DEFAULTS.get(old, object()):
                continue
            raise ValueError(f"model.{old} does not apply to a {kind!r} image encoder.")
        parts[part][field] = value
    return {**values, **parts}


# ---- the whole model -------------------------------------------------------------------------------


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a `CaptionerBackbone`; saved with every checkpoint and export.

    Defaults are the paper's M2 sizes on ViT-B/16-sized patches; `tfcaption.models.presets.PRESETS` holds named
    variants. The
    `padding_mask`, `memory_init`, `layer_norm_epsilon` and `output_bias` fields let one set of layers
    reproduce the authors' released code exactly (`m2_reference`) or train with the corrected
    behaviour (the default). The special token ids are not model fields: they are the tokenizer's
    (`CaptionerPreprocessor.special_ids`).
    """

    PATH = "model"

    vocab_size: Count = 0
    image_encoder: PatchesConfig = dataclasses.field(default_factory=PatchesConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    decoder: DecoderConfig = dataclasses.field(default_factory=DecoderConfig)
    hidden_dim: PositiveInt = 512
    num_heads: PositiveInt = 8
    key_dim: PositiveInt = 64
    intermediate_dim: PositiveInt = 2048
    dropout: Fraction = 0.1
    max_length: PositiveInt = 54  # longest token sequence, <bos> included; the position table has max_length + 1 rows
    layer_norm_epsilon: Positive = 1e-5
    output_bias: bool = False
    # "auto": the trainer picks per machine (tfcaption/training/precision.py) and records its choice; a model
    # built from "auto" outside training computes in float32. Or "float32", "mixed_bfloat16", "mixed_float16".
    dtype_policy: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"

    def __post_init__(self):
        check_fields(self, self.PATH)
        for part in PART_TYPES:
            setattr(self, part, part_from_dict(part, getattr(self, part)))
        if self.hidden_dim != self.num_heads * self.key_dim:
            raise ConfigError(f"model.hidden_dim {self.hidden_dim} must equal model.num_heads * model.key_dim "
                              f"({self.num_heads} * {self.key_dim}).")
        blip = (self.image_encoder.type == "blip_vit", self.decoder.type == "bert")
        if any(blip) and not (all(blip) and self.encoder.num_layers == 0):
            # BLIP's decoder cross-attends to the vision tower's tokens at their own width: no visual encoder
            raise ConfigError("model.image_encoder.type 'blip_vit' and model.decoder.type 'bert' go together, with "
                              f"model.encoder.num_layers 0 (got {self.image_encoder.type!r}, {self.decoder.type!r}, "
                              f"{self.encoder.num_layers}).")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for part in PART_TYPES:
            values[part] = _plain(dataclasses.asdict(values[part]))
        return values

    @classmethod
    def from_dict(cls, values):
        """From a dict in either layout (part sections, or the flat fields of older files)."""
        return dataclass_from_dict(cls, _from_legacy(values))

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_preset(cls, name, **overrides):
        """A preset (`tfcaption.models.presets.PRESETS`), with `overrides` (shared fields, part dicts, or flat legacy
        fields) applied on top."""
        preset = _from_legacy(get_preset(name).model_fields())
        changes = _from_legacy(overrides, preset["image_encoder"].get("type", "patches"))
        for part in PART_TYPES:
            given = changes.get(part, {})
            # A part override of another type starts from that type's defaults, not the preset's fields.
            same_type = given.get("type", preset[part].get("type")) == preset[part].get("type")
            changes[part] = {**(preset[part] if same_type else {}), **given}
        return cls.from_dict({**preset, **changes})


# How a model trains, not what it is: the fields a fine-tuning run (`train.init_from`) may set over the model
# of the run it starts from (the image encoder's where its type has them).
FINE_TUNING_FIELDS = ("dropout", "dtype_policy")
FINE_TUNING_PART_FIELDS = ("train_backbone", "trainable_blocks", "backbone_lr_multiplier")


def with_fine_tuning_fields(model_config, source):
    """`model_config` with `source`'s `FINE_TUNING_FIELDS` (and the image encoder's `FINE_TUNING_PART_FIELDS`
    where both image encoders have them).

    Example:
    >>> base = CaptionerConfig.from_preset("small")
    >>> with_fine_tuning_fields(base, base.replace(dropout=0.3, hidden_dim=64, key_dim=16)).dropout
    0.3
    """
    part, other = model_config.image_encoder, source.image_encoder
    fields = {f: getattr(other, f) for f in FINE_TUNING_PART_FIELDS if hasattr(part, f) and hasattr(other, f)}
    return model_config.replace(image_encoder=dataclasses.replace(part, **fields),
                                **{f: getattr(source, f) for f in FINE_TUNING_FIELDS})


def preset_input(name):
    """What a preset's model reads: "features" (region presets) or "images"."""
    return get_preset(name).input_kind
