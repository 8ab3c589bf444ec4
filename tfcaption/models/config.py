"""Model configuration as data, with named presets."""

import dataclasses
import json


def dataclass_from_dict(cls, values):
    """`cls(**values)`, refusing unknown fields by name (a typo in a config file must not pass silently)."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} fields: {', '.join(unknown)}.")
    return cls(**values)


@dataclasses.dataclass
class CaptionerConfig:
    """Everything needed to rebuild a `Captioner`; saved with every checkpoint and export.

    Defaults are the paper's M2 sizes; `PRESETS` holds named variants. The
    `*_mask`, `memory_init`, `layer_norm_epsilon` and `output_bias` fields let
    one set of layers reproduce the authors' released code exactly
    (`m2_reference`) or train with the corrected behaviour (the default).
    """

    vocab_size: int = 0
    image_input: str = "pixels"  # "pixels" (patches) or "regions" (precomputed features)
    image_size: int = 224
    patch_size: int = 16  # in input pixels
    stem_filters: tuple = ()  # channels of stride-2 conv layers before patching; () = linear patches only
    feature_dim: int = 2048  # region feature size when image_input == "regions"
    hidden_dim: int = 512
    num_heads: int = 8
    key_dim: int = 64
    intermediate_dim: int = 2048
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    memory_slots: int = 40
    dropout: float = 0.1
    max_length: int = 54  # longest token sequence, <bos> included; the position table has max_length + 1 rows
    layer_norm_epsilon: float = 1e-5
    output_bias: bool = False
    encoder_padding_mask: str = "corrected"  # or "released": nothing masked, as the authors' code runs
    memory_init: str = "paper"  # or "released": Glorot-uniform as the authors' code executes
    dtype_policy: str = "float32"  # or "mixed_bfloat16" (fast on CPUs with AMX/AVX-512 BF16)
    pad_id: int = 1
    bos_id: int = 2
    eos_id: int = 3

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2

    @property
    def stem_stride(self):
        return 2 ** len(self.stem_filters)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __post_init__(self):
        self.stem_filters = tuple(self.stem_filters)
        if self.image_input == "pixels":
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}.")
            if self.patch_size % self.stem_stride:
                raise ValueError(
                    f"patch_size {self.patch_size} is not a multiple of the conv stem's stride {self.stem_stride}."
                )
        if self.hidden_dim != self.num_heads * self.key_dim:
            raise ValueError(f"hidden_dim {self.hidden_dim} must equal num_heads * key_dim "
                             f"({self.num_heads} * {self.key_dim}).")

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["stem_filters"] = list(self.stem_filters)
        return values

    @classmethod
    def from_dict(cls, values):
        return dataclass_from_dict(cls, values)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_preset(cls, name, **overrides):
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}.")
        return cls(**{**PRESETS[name], **overrides})


PRESETS = {
    # The paper's model on raw pixels (ViT-B/16-sized patches).
    "m2": dict(),
    # The paper's model on 50 x 2048 detection features, as released.
    "m2_regions": dict(image_input="regions", feature_dim=2048),
    # Reproduces the authors' released code bit for bit (for converted checkpoints).
    "m2_reference": dict(
        image_input="regions", feature_dim=2048, encoder_padding_mask="released", memory_init="released",
        max_length=54, output_bias=False,
    ),
    # The CPU default for the built-in shapes dataset: a conv stem, 36 patches of 16 px,
    # d 128. No dropout: a few epochs on fresh synthetic scenes underfit rather than overfit.
    "small": dict(
        image_size=96, patch_size=16, stem_filters=(32, 64), hidden_dim=128, num_heads=4, key_dim=32,
        intermediate_dim=512, num_encoder_layers=2, num_decoder_layers=2, memory_slots=16, dropout=0.0, max_length=28,
    ),
}
