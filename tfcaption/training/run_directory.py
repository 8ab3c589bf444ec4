"""The layout of a training run's output directory, and loading models from it."""

import os
import shutil
import tempfile

import tensorflow as tf

from tfcaption.config import RunConfig


class RunDirectory:
    """Paths inside a run directory.

    ```
    <run>/config.json         RunConfig (model, data, train, decode, export)
    <run>/vocab.txt           the vocabulary, one token per line
    <run>/checkpoints/        tf.train.Checkpoint of model + optimizer + progress (resume)
    <run>/best.weights.h5     weights of the epoch with the best validation CIDEr-D
    <run>/logs/               TensorBoard
    <run>/report.json         final evaluation
    <run>/blind_baseline.json the image-blind caption used as the baseline
    <run>/budget.json         the epochs' length a time budget chose (train.time_budget_minutes)
    ```
    """

    def __init__(self, path):
        self.path = path

    def join(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def config(self):
        return self.join("config.json")

    @property
    def vocab(self):
        return self.join("vocab.txt")

    @property
    def checkpoints(self):
        return self.join("checkpoints")

    @property
    def best_weights(self):
        return self.join("best.weights.h5")

    @property
    def logs(self):
        return self.join("logs")

    @property
    def budget(self):
        return self.join("budget.json")

    @property
    def report(self):
        return self.join("report.json")

    @property
    def blind_baseline(self):
        return self.join("blind_baseline.json")

    def exists(self):
        return tf.io.gfile.exists(self.config) and tf.io.gfile.exists(self.vocab)


def _unique(named):
    found = dict(named)
    if len(found) != len(named):
        raise ValueError("variable paths are not unique; the checkpoint would merge variables")
    return found


def variables_by_path(variables):
    """`{keras path: tf.Variable}`: what a training checkpoint saves of a model.

    Keras 3 keeps sublayers in its own lists, which `tf.train.Checkpoint` does not follow
    (`tf.train.Checkpoint(model=model)` holds 9 of a small captioner's 106 variables, so a resume
    silently restarted most weights). Keying every variable by its unique Keras path makes the
    checkpoint complete and independent of how layers are nested.
    """
    return _unique([(v.path, v.value) for v in variables])


def optimizer_variables(optimizer):
    """`{path without the optimizer's name: tf.Variable}`: Keras names a process's second Adam "adam_1".

    A `LossScaleOptimizer` contributes its Adam's variables under the same paths (so float32 and float16
    checkpoints share a layout) and its loss scale under "loss_scale/"."""
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return {**optimizer_variables(inner), "loss_scale/dynamic_scale": optimizer.dynamic_scale.value,
                "loss_scale/step_counter": optimizer.step_counter.value}
    return _unique([(v.path.split("/", 1)[-1], v.value) for v in optimizer.variables])


def training_checkpoint(model, optimizer=None, **progress):
    """A `tf.train.Checkpoint` of every model (and optimizer) variable plus progress variables."""
    objects = {"weights": variables_by_path(model.variables), **progress}
    if optimizer is not None:
        objects["optimizer_state"] = optimizer_variables(optimizer)
    return tf.train.Checkpoint(**objects)


# best.weights.h5 groups of pixel models written before the image encoder owned its parts (one flat
# model with `stem`, `patches` and a `PatchEncoder` as `image_encoder`) -> where they live now.
# Region models kept their layout.
LEGACY_WEIGHT_GROUPS = (
    ("layers/conv_stem", "image_encoder/stem"),
    ("image_encoder/projection", "image_encoder/patch_encoder/projection"),
    ("image_encoder/position_embedding", "image_encoder/patch_encoder/position_embedding"),
    ("image_encoder/layer_norm", "image_encoder/patch_encoder/layer_norm"),
)


def load_weights(model, path):
    """`model.load_weights(path)` for a `.weights.h5`, also reading files in the pre-parts layout."""
    import h5py

    legacy = []
    if model.config.image_encoder.type == "patches":
        with h5py.File(path, "r") as f:
            legacy = [(old, new) for old, new in LEGACY_WEIGHT_GROUPS if old in f and new not in f]
    if not legacy:
        return model.load_weights(path)
    with tempfile.TemporaryDirectory() as tmp:
        moved = os.path.join(tmp, "moved.weights.h5")
        shutil.copyfile(path, moved)
        with h5py.File(moved, "r+") as f:
            for old, new in legacy:
                f.move(old, new)
        return model.load_weights(moved)


def load_run(path, weights="best"):
    """Loads `(captioner, run_config)` from a run directory: a `tfcaption.ImageCaptioner` (as
    `ImageCaptioner.from_preset(path, weights=...)` builds it) and the run's `RunConfig`.

    Args:
        path: the run directory (or its best.weights.h5 / checkpoints folder).
        weights: "best" (best.weights.h5, falling back to the latest checkpoint), "latest" (the latest
            training checkpoint), or the path of a `.weights.h5` file or checkpoint of this run's model.
    """
    from tfcaption.models.image_captioner import ImageCaptioner

    if path.endswith(".weights.h5") or os.path.basename(os.path.normpath(path)) == "checkpoints":
        path = os.path.dirname(os.path.normpath(path))
    run = RunDirectory(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Model directory not found: {path}")
    if not run.exists():
        raise FileNotFoundError(
            f"{path} is not a tfcaption run or checkpoint directory (it has no config.json and vocab.txt)."
        )
    run_config = RunConfig.load(run.config)
    return ImageCaptioner._from_run(path, weights, run_config), run_config


def load_run_weights(model, path, weights="best"):
    """Loads a run directory's weights into `model` (built from that run's model config).

    `weights`: "best" (best.weights.h5, falling back to the latest checkpoint), "latest", or the path of a
    `.weights.h5` file or a training checkpoint (its prefix, as `tf.train.latest_checkpoint` gives it).
    Returns the file or checkpoint read; FileNotFoundError when there is none.
    """
    run = RunDirectory(path)
    if weights not in ("best", "latest"):
        weights = os.fspath(weights)
        if weights.endswith(".weights.h5"):
            if not tf.io.gfile.exists(weights):
                raise FileNotFoundError(f"No weights file {weights}.")
            load_weights(model, weights)
            return weights
        if tf.io.gfile.isdir(weights):  # a checkpoints folder: its latest
            latest = tf.train.latest_checkpoint(weights)
            if latest is None:
                raise FileNotFoundError(f"No checkpoint in {weights}.")
            weights = latest
        if not tf.io.gfile.exists(weights + ".index"):
            raise FileNotFoundError(f"weights {weights!r} is not 'best', 'latest', a .weights.h5 file or a "
                                    "training checkpoint.")
        read_model_checkpoint(model, weights)
        return weights
    if weights == "best" and tf.io.gfile.exists(run.best_weights):
        load_weights(model, run.best_weights)
        return run.best_weights
    latest = tf.train.latest_checkpoint(run.checkpoints)
    if latest is None:
        raise FileNotFoundError(f"No weights in {path}: neither best.weights.h5 nor a checkpoint.")
    read_model_checkpoint(model, latest)
    return latest


def check_checkpoint_format(checkpoint_path):
    """Refuses checkpoints of older versions, which held only part of the model (see `variables_by_path`)."""
    names = tf.train.load_checkpoint(checkpoint_path).get_variable_to_shape_map()
    if not any(name.startswith("weights/") for name in names):
        raise ValueError(f"{checkpoint_path} was written by an older tfcaption whose checkpoints held only part of "
                         "the model: it cannot resume; load the run's best.weights.h5, or train into a new "
                         "output directory.")


def read_model_checkpoint(model, checkpoint_path):
    """Restores every model variable from a training checkpoint."""
    check_checkpoint_format(checkpoint_path)
    tf.train.Checkpoint(weights=variables_by_path(model.variables)).read(checkpoint_path).expect_partial() \
        .assert_existing_objects_matched()
