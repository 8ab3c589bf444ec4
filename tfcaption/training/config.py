"""A training run's configuration as data: model + training fields, JSON or YAML."""

import dataclasses
import json
import os
import re

from tfcaption.models.config import CaptionerConfig, dataclass_from_dict


def default_data_root():
    """Where prepared datasets are cached: $TFCAPTION_DATA or ~/.cache/tfcaption/datasets."""
    return os.environ.get("TFCAPTION_DATA", os.path.join(os.path.expanduser("~"), ".cache", "tfcaption", "datasets"))


@dataclasses.dataclass
class TrainConfig:
    """Everything about a training run except the model's architecture."""

    data: str = "shapes"  # dataset spec (see tfcaption.data.sources)
    data_root: str = ""  # cache for built/prepared datasets; "" = default_data_root()
    # shapes: ShapesConfig fields ({"num_train": 2000}); sources: prepare options ({"max_image_side": 320})
    dataset_options: dict = dataclasses.field(default_factory=dict)
    output_dir: str = "runs/shapes-small"
    export_root: str = "savedmodel"
    model_name: str = ""  # export name; "" = shapes_m2_small for shapes, else the run directory's name
    batch_size: int = 64
    epochs: int = 4
    steps_per_epoch: int = 0  # 0 = one pass over the training pairs
    max_caption_words: int = 25
    min_word_count: int = 1
    learning_rate_schedule: str = "linear"  # "linear" (warm-up, then to zero at the end) or "noam" (M2's)
    learning_rate_scale: float = 1.0
    warmup_steps: int = 1000
    adam_beta_1: float = 0.9
    adam_beta_2: float = 0.98
    adam_epsilon: float = 1e-9
    label_smoothing: float = 0.0
    early_stopping_patience: int = 3
    seed: int = 0
    augment_flip: bool = True
    jit_compile: bool = True
    strategy: str = "auto"  # auto | default | mirrored | multiworker
    val_images: int = 500  # images decoded for the per-epoch validation CIDEr-D (0 = all)
    eval_splits: tuple = ("test", "novel")
    eval_beam_size: int = 3
    eval_batch_size: int = 100
    export: bool = True
    export_beam_size: int = 3

    def to_dict(self):
        values = dataclasses.asdict(self)
        values["eval_splits"] = list(self.eval_splits)
        return values

    def __post_init__(self):
        self.eval_splits = tuple(self.eval_splits)

    @classmethod
    def from_dict(cls, values):
        return dataclass_from_dict(cls, values)

    @property
    def export_name(self):
        """The SavedModel name under `export_root`: `model_name`, or one derived from the run."""
        if self.model_name:
            return self.model_name
        if self.data == "shapes":
            return "shapes_m2_small"
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(self.output_dir)))
        return name.strip("._-") or "captioner"

    @property
    def resolved_data_root(self):
        return self.data_root or default_data_root()


@dataclasses.dataclass
class RunConfig:
    """A model config and a training config, saved as `config.json` in every run."""

    model: CaptionerConfig
    train: TrainConfig

    def to_dict(self):
        return {"model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, values):
        return cls(CaptionerConfig.from_dict(values.get("model", {})), TrainConfig.from_dict(values.get("train", {})))

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
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
        return cls.from_dict(values)
