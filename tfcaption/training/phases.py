"""A run's phases (`train.phases`: XE, then SCST, ...): each phase's learning-rate schedule, and when a
phase is over. The next phase starts from the best weights so far with fresh optimizers (M2's switch;
`Trainer._next_phase`)."""

from tfcaption.training.schedule import WarmupConstant, WarmupInverseSqrt, WarmupLinearDecay


def learning_rate_schedule(config, hidden_dim, steps_per_epoch, multiplier=1.0):
    """The schedule of a phase (`config`, a `TrainConfig`) whose epochs have `steps_per_epoch` steps, its
    rates scaled by `multiplier` (a backbone's)."""
    c = config
    if c.task == "scst":  # a fine-tuning stage: M2's constant rate
        return WarmupConstant(c.scst_learning_rate * multiplier, 0)
    scale = c.learning_rate_scale * multiplier
    if c.learning_rate_schedule == "noam":
        return WarmupInverseSqrt(hidden_dim, c.warmup_steps, scale)
    if c.learning_rate_schedule == "linear":
        return WarmupLinearDecay(hidden_dim, c.warmup_steps, c.epochs * steps_per_epoch, scale)
    if c.learning_rate_schedule == "constant":
        return WarmupConstant(c.learning_rate * multiplier, c.warmup_steps)
    raise ValueError(f"learning_rate_schedule must be 'linear', 'noam' or 'constant', got "
                     f"{c.learning_rate_schedule!r}.")


def phase_end(config, state):
    """Why the phase in progress is over ("epochs", or the early-stopping reason), or "" when it is not."""
    if int(state.phase_epoch.numpy()) >= config.epochs:
        return "epochs"
    patience = config.early_stopping_patience
    if patience and int(state.epochs_without_improvement.numpy()) >= patience:
        return f"no validation CIDEr-D improvement for {patience} epochs"
    return ""


def epoch_name(config, phases):
    """What progress lines call an epoch: "epoch", or whose in a run of several phases ("SCST epoch")."""
    return f"{config.task.upper()} epoch" if phases > 1 else "epoch"
