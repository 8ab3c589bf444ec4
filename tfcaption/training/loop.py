"""The training loop of one epoch: steps until the epoch's end, each step's loss added to the epoch's
record, the NaN stop and the progress lines; what else happens between steps (checkpoints, a stop request,
a time budget's measurement) are hooks."""

import math
import time


class NonFiniteLossError(ValueError):
    """A training step's loss was NaN or infinite (the message names the epoch and step)."""


def train_steps(take_step, batches, state, epoch, steps, progress, learning_rate, last_checkpoint, hooks=()):
    """Runs the epoch's steps from `state.step_in_epoch` to `steps`; returns (seconds, steps run).

    Args:
        take_step: `take_step(batch) -> (loss, count[, reward, baseline])`, python floats: the step's
            token-mean loss over `count` tokens (SCST adds its mean reward and baseline).
        batches: an iterator of the epoch's batches from the step in `state` on.
        state: the `TrainingState` (the position and the epoch's sums are updated after every step).
        epoch: the 0-based epoch (all phases'), for the messages.
        steps: the epoch's length.
        progress: an `EpochProgress`.
        learning_rate: `learning_rate()` -> the current rate, for the progress lines.
        last_checkpoint: `last_checkpoint()` -> the last checkpoint, named when a loss is not finite.
        hooks: after each step, `hook(steps done, steps) -> steps` in order; one may change the epoch's
            length (a time budget) or raise (a stop request).

    Raises:
        NonFiniteLossError: a loss was NaN or infinite; the step's results are not recorded.
    """
    start = step = int(state.step_in_epoch.numpy())
    started = time.time()
    while step < steps:
        loss, count, *scst = take_step(next(batches))
        if scst:
            state.record_scst(*scst)
        if not (math.isfinite(loss) and math.isfinite(count)):
            raise NonFiniteLossError(
                f"training stopped: the loss is {loss} at epoch {epoch + 1} step {step + 1} (batch {step + 1} of "
                f"the epoch's seeded order); the last good checkpoint {last_checkpoint()} is "
                f"kept: lower the learning rate (train.learning_rate_scale) and rerun to resume from it.")
        state.record_step(step, loss, count)
        progress.update(step + 1, state.mean_loss(), learning_rate())
        for hook in hooks:
            resized = hook(step + 1, steps)
            if resized != steps:
                steps = resized
                progress.resize(steps)
        step += 1
    return time.time() - started, steps - start
