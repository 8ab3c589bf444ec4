"""The layout of a training run's output directory, and loading models from it."""

import os

import tensorflow as tf

from tfcaption.data.vocabulary import load_vocabulary
from tfcaption.models.captioner import Captioner
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
    def report(self):
        return self.join("report.json")

    @property
    def blind_baseline(self):
        return self.join("blind_baseline.json")

    def exists(self):
        return tf.io.gfile.exists(self.config) and tf.io.gfile.exists(self.vocab)


def load_run(path, weights="best"):
    """Loads `(model, vocab, run_config)` from a run directory.

    Args:
        path: the run directory (or its best.weights.h5 / checkpoints folder).
        weights: "best" (best.weights.h5, falling back to the latest
            checkpoint), or "latest" (the latest training checkpoint).
    """
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
    vocab = load_vocabulary(run.vocab, run_config.data.tokenizer)
    model = Captioner(run_config.model)
    if weights == "best" and tf.io.gfile.exists(run.best_weights):
        model.load_weights(run.best_weights)
    else:
        latest = tf.train.latest_checkpoint(run.checkpoints)
        if latest is None:
            raise FileNotFoundError(f"No weights in {path}: neither best.weights.h5 nor a checkpoint.")
        tf.train.Checkpoint(model=model).read(latest).expect_partial()
    return model, vocab, run_config
