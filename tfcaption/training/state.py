"""A run's progress as variables a checkpoint holds: where training is (phase, epoch, the step inside the
epoch), the epoch's running sums, SCST's sampling counter and the early-stopping record."""

import tensorflow as tf


def _counter(name=None):
    return tf.Variable(0, dtype=tf.int64, trainable=False, name=name)


def _sum(name):
    return tf.Variable(0.0, dtype=tf.float64, trainable=False, name=name)


class TrainingState:
    """The progress variables (create it under the strategy's scope). `variables()` names them as training
    checkpoints do; a checkpoint written before one of them existed leaves it at its start value."""

    def __init__(self):
        self.epoch = _counter("epoch")  # all phases'
        self.phase = _counter("phase")
        self.phase_epoch = _counter("phase_epoch")
        # SCST's sampling seed counter, so a resumed run draws new samples, not the ones it drew before
        self.scst_iterations = _counter("scst_iterations")
        self.best_cider = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_cider")
        self.epochs_without_improvement = _counter()
        # The position inside the epoch in progress, so a resumed run continues at the next batch.
        self.step_in_epoch = _counter("step_in_epoch")
        self.epoch_loss_sum = _sum("epoch_loss_sum")
        self.epoch_token_count = _sum("epoch_token_count")
        self.epoch_reward_sum = _sum("epoch_reward_sum")
        self.epoch_baseline_sum = _sum("epoch_baseline_sum")

    def variables(self):
        """{checkpoint name: variable}, in the checkpoint's order."""
        names = ("epoch", "phase", "phase_epoch", "scst_iterations", "best_cider", "epochs_without_improvement",
                 "step_in_epoch", "epoch_loss_sum", "epoch_token_count", "epoch_reward_sum", "epoch_baseline_sum")
        return {name: getattr(self, name) for name in names}

    def mean_loss(self):
        """The epoch's loss so far: its token mean (SCST: the mean over steps)."""
        return float(self.epoch_loss_sum.numpy() / max(self.epoch_token_count.numpy(), 1.0))

    def record_scst(self, reward, baseline):
        """An SCST step's mean reward and baseline, added to the epoch's sums."""
        self.epoch_reward_sum.assign_add(reward)
        self.epoch_baseline_sum.assign_add(baseline)

    def record_step(self, step, loss, count):
        """Step `step` (0-based) of the epoch is done with this loss (its token mean over `count` tokens)."""
        self.epoch_loss_sum.assign_add(loss * count)
        self.epoch_token_count.assign_add(count)
        self.step_in_epoch.assign(step + 1)

    def scst_means(self):
        """SCST's mean reward and baseline over the epoch's steps."""
        steps = max(int(self.step_in_epoch.numpy()), 1)
        return {"reward": float(self.epoch_reward_sum.numpy()) / steps,
                "baseline": float(self.epoch_baseline_sum.numpy()) / steps}

    def end_epoch(self):
        """Counts the epoch done and clears the position and sums for the next one."""
        self.epoch.assign_add(1)
        self.phase_epoch.assign_add(1)
        for position in (self.step_in_epoch, self.epoch_loss_sum, self.epoch_token_count, self.epoch_reward_sum,
                         self.epoch_baseline_sum):
            position.assign(tf.zeros_like(position))

    def start_phase(self):
        """The next phase starts: its epochs and the early-stopping count from zero."""
        self.phase.assign_add(1)
        self.phase_epoch.assign(0)
        self.epochs_without_improvement.assign(0)
