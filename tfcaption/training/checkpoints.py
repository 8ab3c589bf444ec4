"""Training checkpoints of a run (the model, the optimizers and the progress), and the saves inside an epoch:
every `checkpoint_every_steps` steps and at a stop request (SIGTERM / SIGINT), which then ends the run."""

import os

import tensorflow as tf

from tfcaption.training.interruption import TrainingInterrupted
from tfcaption.training.run_directory import check_checkpoint_format, training_checkpoint


class Checkpoints:
    """One checkpoint layout for every phase: the model, both optimizers and the `TrainingState`.

    The chief keeps the last two in the run directory's `checkpoints/`; another worker of a multi-worker run
    writes its own to `worker_dir` and deletes them (saving is collective) and restores the chief's.
    """

    def __init__(self, model, optimizers, state, directory, chief=True, worker_dir=None):
        self.model, self.main_optimizer, self.chief, self.worker_dir = model, optimizers.main, chief, worker_dir
        self.progress = state.variables()
        self.parts = {**optimizers.checkpoint_parts(), **self.progress}
        self.checkpoint = training_checkpoint(model, optimizers.main, **self.parts)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=2)

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def save(self):
        """Saves a checkpoint; returns the chief's latest checkpoint path."""
        if self.chief:
            return self.manager.save()
        self.checkpoint.write(os.path.join(self.worker_dir, "checkpoint"))
        for name in tf.io.gfile.glob(os.path.join(self.worker_dir, "checkpoint*")):
            tf.io.gfile.remove(name)
        return self.manager.latest_checkpoint

    def restore(self, path):
        """Restores a training checkpoint; one written before a progress variable existed leaves it as is."""
        check_checkpoint_format(path)
        names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        missing = [key for key in self.progress if not any(n.startswith(key + "/") for n in names)]
        if not missing:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return
        parts = {k: v for k, v in self.parts.items() if k not in missing}
        training_checkpoint(self.model, self.main_optimizer, **parts).restore(path).assert_existing_objects_matched()


class StepSaves:
    """The loop's hook for checkpoints inside an epoch: after step `done` (1-based) of `steps`, a stop
    request saves the position and raises `TrainingInterrupted`; every `every` steps (not at the epoch's
    end, which the epoch saves itself) a checkpoint is saved."""

    def __init__(self, checkpoints, stop, epoch, every):
        self.checkpoints, self.stop, self.epoch, self.every = checkpoints, stop, epoch, every

    def __call__(self, done, steps):
        if self.stop.requested:
            raise TrainingInterrupted(self.stop.signum, self.epoch, done, self.checkpoints.save())
        if self.every and done % self.every == 0 and done < steps:
            self.checkpoints.save()
        return steps
