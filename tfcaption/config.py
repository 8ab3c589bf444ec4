"""A run's configuration as data: one `RunConfig` with a section per concern, JSON or YAML.

```
model   CaptionerConfig   the architecture (tfcaption.models.config)
data    DataConfig        which dataset, how captions become tokens, the one caption-length setting
train   TrainConfig       the optimisation: run directory, batches, schedule, strategy, validation
decode  DecodeConfig      captioning for evaluation: beam size, batch size, evaluated splits
export  ExportConfig      the SavedModel: where, under which name, beam size, pixel limit
```

The caption length is set once, `data.max_caption_words`; decoding runs `max_decode_steps`
(= words + 1, <eos> included) and a token row holds `max_tokens` (= words + 2, <bos> and <eos>).
`model.max_length` is the model's capacity (its position table), raised to `max_tokens` when a run
is built and fixed by a converted checkpoint.

Files written before the sections existed (one flat `train` section holding data, decoding and
export fields) still load: `LEGACY_TRAIN_FIELDS` says where each old field lives now, and
`--set train.OLD_NAME=...` keeps working through the same table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

from tfcaption.config_fields import (ConfigError, Count, Fraction, Literal, NonNegative, Positive, PositiveInt,
                                     Weight, check, check_fields, field_types, section_from_dict, shown)
from tfcaption.data.options import check_source_options, source_scheme
from tfcaption.models.config import CaptionerConfig
from tfcaption.models.presets import get_preset


@dataclasses.dataclass
class DataConfig:
    """The dataset and its captions."""

    PATH = "data"

    spec: str = "shapes"  # dataset spec (see tfcaption.data.catalog)
    root: str = ""  # cache for built/prepared datasets; "" = tfcaption.data.catalog.default_data_root()
    # shapes: ShapesConfig fields ({"num_train": 2000}); source specs: prepare options ({"max_image_side": 320})
    # and the scheme's own (tfcaption.data.options); both checked here
    options: dict = dataclasses.field(default_factory=dict)
    max_caption_words: PositiveInt = 25  # the one caption-length setting; see max_decode_steps / max_tokens
    # "word" (M2's, COCO parity) or "wordpiece" (NFKC-normalised subwords learned from the training captions with
    # tensorflow-text, for languages written without spaces and open vocabularies); see tfcaption.data.tokenizer;
    # "bert": a BLIP checkpoint's BERT WordPiece tokenizer (tfcaption.data.bert_tokenizer), fixed by the checkpoint
    tokenizer: Literal["word", "wordpiece", "bert"] = "word"
    min_word_count: Count = 1  # rarer words (word) or pieces (wordpiece) are left out of the vocabulary
    vocab_size: Count = 0  # the largest vocabulary, specials included; 0 = no cap (word) or 8000 (wordpiece)
    augment_flip: bool = True  # mirror training images (swapping "left" and "right" in their captions)

    @property
    def max_decode_steps(self):
        """Decoding steps: every word and the closing <eos>."""
        return self.max_caption_words + 1

    @property
    def max_tokens(self):
        """A training row: <bos>, the words, <eos>."""
        return self.max_caption_words + 2

    def __post_init__(self):
        check_fields(self, self.PATH)
        if self.spec == "shapes" and self.options:  # checked here, not when the dataset is built
            from tfcaption.datasets.shapes.dataset import ShapesConfig

            ShapesConfig.from_dict(self.options)
        scheme = source_scheme(self.spec)
        if scheme:
            self.options = check_source_options(scheme, self.options, self.spec)


@dataclasses.dataclass
class TrainConfig:
    """The optimisation and the run directory."""

    PATH = "train"

    output_dir: str = "runs/shapes-small"
    # "xe": teacher-forced cross-entropy; "scst": self-critical sequence training with a CIDEr-D reward
    # (Rennie et al.; M2's second stage), usually started with init_from an XE run.
    task: Literal["xe", "scst"] = "xe"
    batch_size: PositiveInt = 64
    epochs: PositiveInt = 4
    steps_per_epoch: Count = 0  # 0 = one pass over the training pairs
    # "linear" (warm-up, then to zero at the end), "noam" (M2's) or "constant" (`learning_rate` after warm-up)
    learning_rate_schedule: Literal["linear", "noam", "constant"] = "linear"
    learning_rate_scale: NonNegative = 1.0  # multiplies the linear and noam schedules (their peak follows hidden_dim)
    learning_rate: NonNegative = 3e-4  # the constant schedule's rate
    warmup_steps: Count = 1000
    adam_beta_1: Fraction = 0.9
    adam_beta_2: Fraction = 0.98
    adam_epsilon: Positive = 1e-9
    label_smoothing: Fraction = 0.0
    # XE: k captions of each image per example (ruotianluo's seq_per_img): batch_size // k images a step, each
    # encoded once for its k captions; an epoch is one pass over the images. 1 = (image, caption) pairs.
    captions_per_image: PositiveInt = 1
    early_stopping_patience: Count = 3  # 0 = no early stopping
    # > 0: the run's epochs shortened (all by the same steps, the warm-up with them) so that its training steps
    # take at most about this many minutes at the rate its first steps measure (tfcaption.training.budget);
    # validation, evaluation and export come on top. 0 = the epochs as configured.
    time_budget_minutes: NonNegative = 0.0
    seed: Count = 0
    jit_compile: bool = True
    strategy: Literal["auto", "default", "mirrored", "multiworker", "tpu"] = "auto"
    val_images: Count = 500  # images decoded for the per-epoch validation CIDEr-D (0 = all)
    # A checkpoint every N steps (and at each epoch end, and on SIGTERM / SIGINT); 0 = epoch ends only.
    checkpoint_every_steps: Count = 200
    # Seeded initialisation and TensorFlow's op determinism: a killed and resumed run ends bit-identical
    # to an uninterrupted one (slower on some ops).
    deterministic: bool = False
    log_every_seconds: NonNegative = 10.0  # a progress line this often when stdout is not a terminal
    tensorboard_images: Count = 3  # validation images drawn with their captions and attention each epoch
    # SCST (task "scst"): batch_size // scst_samples images per step, k = scst_samples captions each.
    scst_samples: PositiveInt = 5
    # "beam" (M2: k beams, their mean reward the baseline), "multinomial" (leave-one-out baseline),
    # "greedy_baseline" (Rennie et al.)
    scst_sampling: Literal["beam", "multinomial", "greedy_baseline"] = "beam"
    scst_include_eos: bool = False  # <eos> a word of the reward (ruotianluo) or not (M2)
    scst_bleu_weight: Weight = 0.0  # reward = (1 - w) CIDEr-D + w BLEU-4
    scst_learning_rate: NonNegative = 5e-6  # M2's constant SCST rate

    # A run directory (tfcaption's, or a converted M2 checkpoint's) whose model, vocabulary and best weights
    # a new run starts from (fine-tuning); "" = the model config and fresh (or pretrained-backbone) weights.
    init_from: str = ""
    # The run as phases, one after another in one run directory: each a dict of PHASE_FIELDS over this
    # section's, e.g. [{"task": "xe"}, {"task": "scst", "epochs": 10}]; [] = one phase of this section. A phase
    # ends after its epochs, or after early_stopping_patience epochs without a better validation CIDEr-D
    # (the last phase's end is early stopping); the next starts from the best weights so far with a fresh
    # optimizer, as M2 switches from XE to SCST.
    phases: list = dataclasses.field(default_factory=list)  # of dicts, each checked by _check_phase

    def __post_init__(self):
        check_fields(self, self.PATH)
        _check_captions_per_image(self.PATH, self.captions_per_image, self.batch_size)
        if self.time_budget_minutes and len(self.phases) > 1:
            raise ConfigError("train.time_budget_minutes sizes a run of one phase; this one has "
                              f"{len(self.phases)} (train.phases): give each phase its epochs instead.")
        self.phases = [self._check_phase(index, phase) for index, phase in enumerate(self.phases)]

    def _check_phase(self, index, phase):
        """A phase's fields, each checked as this section's field of that name, and the phase as a whole."""
        where = f"{self.PATH}.phases[{index}]"
        if not isinstance(phase, dict):
            raise ConfigError(f"{where} must be an object of phase fields, e.g. "
                              f"{{\"task\": \"scst\", \"epochs\": 10}}, "
                              f"got {shown(phase)}.")
        unknown = sorted(set(phase) - set(PHASE_FIELDS))
        if unknown:
            raise ConfigError(f"{where} sets {', '.join(map(str, unknown))}, which a phase cannot change "
                              f"(phase fields: {', '.join(PHASE_FIELDS)}).")
        types = field_types(TrainConfig)
        phase = {name: check(f"{where}.{name}", types[name], value) for name, value in phase.items()}
        _check_captions_per_image(where, phase.get("captions_per_image", self.captions_per_image),
                                  phase.get("batch_size", self.batch_size))
        return phase

    def phase_configs(self):
        """One TrainConfig per phase (its fields over this section's), in the order they run."""
        return [dataclasses.replace(self, phases=[], **phase) for phase in self.phases] or [
            dataclasses.replace(self, phases=[])]


def _check_captions_per_image(path, captions_per_image, batch_size):
    if captions_per_image > batch_size:
        raise ConfigError(f"{path}.captions_per_image must be between 1 and the batch size ({batch_size}), "
                          f"got {captions_per_image}.")


# What a phase of `train.phases` may set; the rest (run directory, seed, strategy, checkpoints) is the run's.
PHASE_FIELDS = (
    "task", "epochs", "steps_per_epoch", "batch_size", "learning_rate_schedule", "learning_rate_scale",
    "learning_rate", "warmup_steps", "label_smoothing", "captions_per_image", "early_stopping_patience",
    "scst_samples", "scst_sampling", "scst_include_eos", "scst_bleu_weight", "scst_learning_rate",
)


@dataclasses.dataclass
class DecodeConfig:
    """Captioning for evaluation (validation always decodes greedily)."""

    PATH = "decode"

    beam_size: PositiveInt = 3
    # Which beam search a beam size above 1 runs: "m2" (`BeamSampler`, M2's), "generate" (`GenerateBeamSampler`,
    # transformers' generate(): what tfcaption-import records for a BLIP checkpoint) or "auto" (see
    # RunConfig.beam_search: "generate" for a BLIP-layout model, "m2" for every other)
    beam_search: Literal["auto", "m2", "generate"] = "auto"
    batch_size: PositiveInt = 100
    eval_splits: tuple[str, ...] = ("test", "novel")
    java: bool = True  # PTB tokenisation and METEOR through Java when it is installed; False: Python only, no METEOR

    def __post_init__(self):
        check_fields(self, self.PATH)


@dataclasses.dataclass
class ExportConfig:
    """The SavedModel written at the end of a run (its pixel limit: `tfcaption-export --max-pixels`)."""

    PATH = "export"

    enabled: bool = True
    root: str = "savedmodel"
    model_name: str = ""  # "" = shapes_m2_small for shapes, else the run directory's name
    beam_size: PositiveInt = 3

    def __post_init__(self):
        check_fields(self, self.PATH)


def default_output_dir(data_spec, preset):
    """`runs/<dataset>-<preset>`: the dataset named by its source scheme (`coco:...` -> coco) or its
    directory's name, e.g. runs/shapes-small (the default run), runs/coco-m2."""
    scheme = re.match(r"^([a-z]+):", data_spec)
    name = scheme.group(1) if scheme else os.path.basename(os.path.normpath(data_spec))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-") or "data"
    return os.path.join("runs", f"{name}-{preset}")


SECTIONS = {"model": CaptionerConfig, "data": DataConfig, "train": TrainConfig, "decode": DecodeConfig,
            "export": ExportConfig}

# Flat `train` fields of configs written before the sections existed -> (section, field) now.
LEGACY_TRAIN_FIELDS = {
    "data": ("data", "spec"), "data_root": ("data", "root"), "dataset_options": ("data", "options"),
    "max_caption_words": ("data", "max_caption_words"), "min_word_count": ("data", "min_word_count"),
    "augment_flip": ("data", "augment_flip"),
    "eval_splits": ("decode", "eval_splits"), "eval_beam_size": ("decode", "beam_size"),
    "eval_batch_size": ("decode", "batch_size"),
    "export": ("export", "enabled"), "export_root": ("export", "root"), "model_name": ("export", "model_name"),
    "export_beam_size": ("export", "beam_size"),
}


def resolve_field(section, field):
    """`(section, field)` for a config key, following `LEGACY_TRAIN_FIELDS` for old train names."""
    if section == "train" and field in LEGACY_TRAIN_FIELDS:
        return LEGACY_TRAIN_FIELDS[field]
    return section, field


def _to_dict(section):
    values = dataclasses.asdict(section)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


@dataclasses.dataclass
class RunConfig:
    """Every setting of a run, saved as `config.json` in each run directory and export."""

    model: CaptionerConfig = dataclasses.field(default_factory=CaptionerConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    decode: DecodeConfig = dataclasses.field(default_factory=DecodeConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def to_dict(self):
        return {name: self.model.to_dict() if name == "model" else _to_dict(getattr(self, name))
                for name in SECTIONS}

    @classmethod
    def from_dict(cls, values):
        """A RunConfig from its dict; unknown sections or fields are errors naming them."""
        if not isinstance(values, dict):
            raise ConfigError(f"A run config must be an object with sections ({', '.join(SECTIONS)}), "
                              f"got {shown(values)}.")
        unknown = sorted(set(map(str, values)) - set(SECTIONS) - {"serving"})  # exports add a "serving" section
        if unknown:
            raise ConfigError(f"Unknown config sections: {', '.join(unknown)} (sections: {', '.join(SECTIONS)}).")
        sections = {}
        for name in SECTIONS:
            section = values.get(name) or {}
            if not isinstance(section, dict):
                raise ConfigError(f"{name} must be an object of {SECTIONS[name].__name__} fields, "
                                  f"got {shown(section)}.")
            sections[name] = dict(section)
        for old, (section, field) in LEGACY_TRAIN_FIELDS.items():
            if old in sections["train"]:
                sections[section].setdefault(field, sections["train"].pop(old))
        # The model section reads its own older (flat) layout; the others are plain dataclasses.
        return cls(**{name: CaptionerConfig.from_dict(fields) if name == "model"
                      else section_from_dict(SECTIONS[name], fields, name) for name, fields in sections.items()})

    def __post_init__(self):
        """Sections given as dicts are built (and checked); anything else is a one-line error."""
        for name, section_class in SECTIONS.items():
            value = getattr(self, name)
            if isinstance(value, section_class):
                continue
            if name == "model" and isinstance(value, dict):
                value = CaptionerConfig.from_dict(value)
            else:
                value = section_from_dict(section_class, value, name)
            setattr(self, name, value)

    def replace(self, **sections):
        return dataclasses.replace(self, **sections)

    @property
    def beam_search(self):
        """The beam search this run decodes with, "m2" or "generate": `decode.beam_search`, where "auto" is
        transformers' for a BLIP-layout model (decoder "bert": an imported checkpoint, or one fine-tuned from
        it, written before the field existed) and M2's for every other."""
        if self.decode.beam_search != "auto":
            return self.decode.beam_search
        return "generate" if self.model.decoder.type == "bert" else "m2"

    @classmethod
    def from_preset(cls, name):
        """The defaults with preset `name`'s model, the run settings its paper fixes (both from the presets table,
        `tfcaption.models.presets`), and its own run directory (`default_output_dir`), so two presets never
        share a run."""
        run_settings = get_preset(name).run_fields()
        config = cls.from_dict({"model": CaptionerConfig.from_preset(name).to_dict(), **run_settings})
        config.train.output_dir = default_output_dir(config.data.spec, name)
        return config

    @property
    def export_name(self):
        """The SavedModel name under `export.root`: `export.model_name`, or one derived from the run."""
        if self.export.model_name:
            return self.export.model_name
        if self.data.spec == "shapes":
            return "shapes_m2_small"
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(self.train.output_dir)))
        return name.strip("._-") or "captioner"

    def save(self, path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path):
        """Reads a run config from JSON, or YAML when the file ends in .yaml/.yml."""
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"Config file not found: {path}")
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            try:
                import yaml
            except ImportError as error:
                raise ImportError(f"Reading {path} needs PyYAML: pip install pyyaml (or use JSON).") from error
            try:
                values = yaml.safe_load(text) or {}
            except yaml.YAMLError as error:
                raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
        else:
            try:
                values = json.loads(text)
            except json.JSONDecodeError as error:
                raise ConfigError(f"{path} is not valid JSON: {error}.") from None
        try:
            return cls.from_dict(values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
