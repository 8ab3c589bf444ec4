"""Presets as data: one table of named models, each with what its paper fixes beyond the model.

```
PRESETS["m2"]           Preset(name, description, paper, input_kind, params, params_vocab_size, model, run)
get_preset("m2")        the record, or a one-line ValueError listing the names
format_presets()        the table as `tfcaption-train --list-presets` prints it
```

`model` holds `CaptionerConfig` fields over its defaults (part sections as dicts; a part of another type
starts from that type's defaults), read by `CaptionerConfig.from_preset`; `run` holds the `RunConfig`
sections beyond the model (`data`, `train`, `decode`, `export`) that the paper fixes, read by
`RunConfig.from_preset` and `tfcaption-train --preset`. Nothing else in tfcaption knows a preset's settings.
`params` is the model's parameter count with a vocabulary of `params_vocab_size` tokens (specials included;
tests/models/test_presets.py builds every preset and checks it): COCO-sized presets at M2's 10,201-token COCO
vocabulary, the `*_small` presets at the built-in shapes dataset's 46.

This module is plain data (no TensorFlow), so listing presets is instant.
"""

import dataclasses
import json
import types

DEFAULT_PRESET = "small"  # tfcaption-train's preset when none is named
INPUT_KINDS = ("images", "features")
RUN_SECTIONS = ("data", "train", "decode", "export")
COCO_VOCAB_SIZE = 10201  # M2's COCO vocabulary (Karpathy splits, words seen 5+ times, specials included)
SHAPES_VOCAB_SIZE = 46  # the built-in shapes dataset's vocabulary at its default size, specials included


def _freeze(value):
    if isinstance(value, dict):
        return types.MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value, lists=False):
    """Plain dicts again; tuples become lists where `lists` (JSON-like run settings), stay tuples otherwise."""
    if isinstance(value, types.MappingProxyType):
        return {key: _thaw(item, lists) for key, item in value.items()}
    if isinstance(value, tuple):
        items = [_thaw(item, lists) for item in value]
        return items if lists else tuple(items)
    return value


@dataclasses.dataclass(frozen=True, eq=False)  # one record per name: compared (and hashed) by identity
class Preset:
    """One named model: what it is, where it comes from, and the settings its paper fixes.

    Args:
        name: the name `from_preset` and `--preset` take.
        description: one sentence: the model's structure and sizes.
        paper: the paper it follows (authors, year, title).
        input_kind: "images" (pixels) or "features" (precomputed region features).
        params: parameters with a vocabulary of `params_vocab_size` tokens.
        params_vocab_size: the vocabulary size `params` was counted at.
        model: `CaptionerConfig` fields over the defaults.
        run: `RunConfig` sections (data, train, decode, export) over the defaults, as far as the paper fixes them.
    """

    name: str
    description: str
    paper: str
    input_kind: str
    params: int
    params_vocab_size: int
    model: dict
    run: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"Preset {self.name!r}: input_kind must be one of {', '.join(INPUT_KINDS)}.")
        reads = "features" if dict(self.model).get("image_encoder", {}).get("type") == "regions" else "images"
        if reads != self.input_kind:
            raise ValueError(f"Preset {self.name!r}: its model reads {reads}, not {self.input_kind}.")
        unknown = sorted(set(self.run) - set(RUN_SECTIONS))
        if unknown:
            raise ValueError(f"Preset {self.name!r}: run settings for {', '.join(unknown)}; "
                             f"sections: {', '.join(RUN_SECTIONS)} (the model is `model`).")
        object.__setattr__(self, "model", _freeze(self.model))
        object.__setattr__(self, "run", _freeze(self.run))

    def model_fields(self):
        """The preset's `CaptionerConfig` fields as a fresh dict (safe to change)."""
        return _thaw(self.model)

    def run_fields(self):
        """The preset's `RunConfig` sections beyond the model as a fresh dict (safe to change)."""
        return _thaw(self.run, lists=True)

    def run_settings(self):
        """The run settings as `section.field=value` strings, the way `--set` writes them."""
        def text(value):
            return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))

        return [f"{section}.{field}={text(value)}" for section, fields in self.run_fields().items()
                for field, value in fields.items()]


# Shared sizes of the `*_small` presets: CPU sizes for the built-in shapes dataset (96 px, d 128, 2-3 layers). No
# dropout at CPU size: a few epochs on fresh synthetic scenes underfit rather than overfit.
_SMALL = dict(hidden_dim=128, num_heads=4, key_dim=32, intermediate_dim=512, dropout=0.0, max_length=28)

_M2_PAPER = "Cornia et al. 2020, Meshed-Memory Transformer for Image Captioning (CVPR)"
_CPTR_PAPER = "Liu et al. 2021, CPTR: Full Transformer Network for Image Captioning"
_CLIP_PAPER = "Radford et al. 2021, Learning Transferable Visual Models From Natural Language Supervision (ICML)"
_SPATIAL_PAPER = "Springenberg et al. 2018 (CNN feature grid + spatial self-attention, eq. 2's temperature)"

# M2 (their train.py): batches of 50, the noam schedule with 10,000 warm-up steps, XE until validation CIDEr-D has
# not improved for 5 epochs, then SCST at a constant 5e-6 from the best XE weights until it has not improved for
# 5 epochs (train.epochs, 100 here, is only a cap on each phase).
_M2_RUN = {"train": {"batch_size": 50, "learning_rate_schedule": "noam", "warmup_steps": 10000, "epochs": 100,
                     "early_stopping_patience": 5, "scst_learning_rate": 5e-6,
                     "phases": [{"task": "xe"}, {"task": "scst"}]}}

_TABLE = [
    Preset(
        "small", "The CPU default for the built-in shapes dataset: a conv stem (32, 64), 6 x 6 patches of 16 px at "
        "96 px, M2's memory-augmented encoder (2 layers, 16 slots) and meshed decoder (2 layers) at d 128.",
        _M2_PAPER + ", at CPU size", "images", 1_236_416, SHAPES_VOCAB_SIZE,
        dict(image_encoder=dict(type="patches", image_size=96, patch_size=16, stem_filters=(32, 64)),
             encoder=dict(num_layers=2, memory_slots=16), decoder=dict(type="meshed", num_layers=2), **_SMALL),
    ),
    Preset(
        "cptr_small", "CPTR's shape at CPU size: `small`'s patches (the conv stem standing in for the pretrained "
        "ViT embedding), a plain transformer encoder (3 layers, no memory), a plain decoder (2 layers) attending "
        "to the last encoder layer.",
        _CPTR_PAPER + ", at CPU size", "images", 1_294_912, SHAPES_VOCAB_SIZE,
        dict(image_encoder=dict(type="patches", image_size=96, patch_size=16, stem_filters=(32, 64)),
             encoder=dict(num_layers=3, memory_slots=0), decoder=dict(type="transformer", num_layers=2), **_SMALL),
    ),
    Preset(
        "spatial_small", "Springenberg et al.'s shape at CPU size: a conv stem's 6 x 6 feature map as the token grid "
        "(one token per cell) with 2-D sinusoidal positions, 2 self-attention layers with tau = sqrt(d_len + "
        "d_attn), a plain decoder (2 layers).",
        _SPATIAL_PAPER + ", at CPU size", "images", 1_198_784, SHAPES_VOCAB_SIZE,
        dict(image_encoder=dict(type="patches", image_size=96, patch_size=16, stem_filters=(32, 64, 128, 128),
                                positions="sinusoid_2d"),
             encoder=dict(num_layers=2, memory_slots=0, scale="sqrt_len_plus_dk"),
             decoder=dict(type="transformer", num_layers=2), **_SMALL),
    ),
    Preset(
        "m2", "The paper's model on raw pixels: 14 x 14 patches of 16 px at 224 px, 3 memory-augmented encoder "
        "layers (40 slots), a 3-layer meshed decoder; d 512, 8 heads, d_ff 2048, dropout 0.1; XE then SCST.",
        _M2_PAPER, "images", 37_884_416, COCO_VOCAB_SIZE, dict(), _M2_RUN,
    ),
    Preset(
        "m2_regions", "The paper's model on precomputed detection features (50 x 2048 regions, as released); "
        "XE then SCST.",
        _M2_PAPER, "features", 38_439_424, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="regions", feature_dim=2048)), _M2_RUN,
    ),
    Preset(
        "m2_reference", "`m2_regions` exactly as the authors' released code runs (nothing masked, Glorot memory "
        "initialisation), for converted checkpoints: identical tokens to theirs.",
        _M2_PAPER + " (their released code)", "features", 38_439_424, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="regions", feature_dim=2048, padding_mask="released"),
             encoder=dict(memory_init="released"), max_length=54, output_bias=False), _M2_RUN,
    ),
    Preset(
        "cptr", "ViT-B/16 at 384 px with Google's ImageNet-21k weights, its 12 blocks the whole encoder, a 4-layer "
        "transformer decoder at ViT-B's width (d 768, 12 heads, d_ff 3072) with sinusoidal word positions.",
        _CPTR_PAPER, "images", 139_608_576, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="vit", architecture="vit_b16", image_size=384, weights="vit_b16"),
             encoder=dict(num_layers=0, memory_slots=0), decoder=dict(type="transformer", num_layers=4),
             hidden_dim=768, num_heads=12, key_dim=64, intermediate_dim=3072, dropout=0.1),
    ),
    Preset(
        "spatial_attention", "VGG16's 14 x 14 x 512 grid (block5_conv3 at 224 px, ImageNet weights) with 2-D "
        "sinusoidal positions, 2 self-attention layers with tau = sqrt(d_len + d_attn), a 4-layer decoder; h 8, "
        "d 512, d_ff 1024, dropout 0.1; Adam at a constant 3e-4, captions up to 14 words.",
        _SPATIAL_PAPER, "images", 42_275_648, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="cnn", backbone="vgg16", image_size=224, positions="sinusoid_2d",
                                weights="imagenet"),
             encoder=dict(num_layers=2, memory_slots=0, scale="sqrt_len_plus_dk"),
             decoder=dict(type="transformer", num_layers=4),
             hidden_dim=512, num_heads=8, key_dim=64, intermediate_dim=1024, dropout=0.1),
        {"train": {"learning_rate_schedule": "constant", "learning_rate": 3e-4, "warmup_steps": 0},
         "data": {"max_caption_words": 14}},
    ),
    Preset(
        "vit_m2", "ViT-B/16 tokens at 224 px (197: class token + 14 x 14, ImageNet-21k weights) projected to d 512, "
        "into M2's memory-augmented encoder (3 layers, 40 slots) and meshed decoder at the paper's sizes; XE then "
        "SCST.",
        _M2_PAPER + ", on a pretrained ViT", "images", 123_581_696, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="vit", architecture="vit_b16", image_size=224, weights="vit_b16")), _M2_RUN,
    ),
    Preset(
        "clip_m2", "CLIP ViT-B/16's penultimate-layer tokens at 224 px (197: class token + 14 x 14; OpenAI's "
        "weights from openai/clip-vit-base-patch16, frozen) projected to d 512, into M2's memory-augmented encoder "
        "(3 layers, 40 slots) and meshed decoder at the paper's sizes; XE then SCST.",
        _M2_PAPER + ", on " + _CLIP_PAPER, "images", 123_582_464, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="clip", architecture="clip_b16", output_layer="penultimate",
                                weights="hf://openai/clip-vit-base-patch16", train_backbone="frozen")), _M2_RUN,
    ),
    Preset(
        "clip_transformer", "CLIP ViT-B/16's penultimate-layer tokens at 224 px (OpenAI's weights, frozen) as the "
        "whole encoder, a 4-layer transformer decoder at its width (d 768, 12 heads, d_ff 3072), as `cptr` on ViT.",
        _CLIP_PAPER + "; decoder as " + _CPTR_PAPER, "images", 139_317_504, COCO_VOCAB_SIZE,
        dict(image_encoder=dict(type="clip", architecture="clip_b16", output_layer="penultimate",
                                weights="hf://openai/clip-vit-base-patch16", train_backbone="frozen"),
             encoder=dict(num_layers=0, memory_slots=0), decoder=dict(type="transformer", num_layers=4),
             hidden_dim=768, num_heads=12, key_dim=64, intermediate_dim=3072, dropout=0.1),
    ),
]

PRESETS = types.MappingProxyType({preset.name: preset for preset in _TABLE})


def get_preset(name):
    """The `Preset` called `name`; an unknown name is a one-line ValueError listing the presets."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}.")
    return PRESETS[name]


def format_params(count):
    """1_236_416 -> "1.24M"."""
    return f"{count / 1e6:.2f}M" if count < 1e7 else f"{count / 1e6:.1f}M"


def format_presets(width=100):
    """The table, readable in a terminal: one header line per preset (name, input, parameters, paper), then its
    description and the run settings its paper fixes, indented."""
    import textwrap

    rows = [(f"{p.name}{' (default)' if p.name == DEFAULT_PRESET else ''}", p.input_kind,
             f"{format_params(p.params)} at {p.params_vocab_size:,} tokens", p.paper) for p in PRESETS.values()]
    widths = [max(len(row[i]) for row in rows + [("PRESET", "INPUT", "PARAMETERS", "PAPER")]) for i in range(3)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("PRESET", "INPUT", "PARAMETERS"), widths)) + "  PAPER"]
    for row, preset in zip(rows, PRESETS.values()):
        lines.append("")
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
        lines += textwrap.wrap(preset.description, width, initial_indent="    ", subsequent_indent="    ")
        settings = " ".join(preset.run_settings()) or "the defaults"
        lines += textwrap.wrap(f"run settings: {settings}", width, initial_indent="    ",
                               subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)
