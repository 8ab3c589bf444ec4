"""The Transformer warm-up / inverse-square-root learning-rate schedule."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcaption")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """`scale * d^-0.5 * min(s^-0.5, s * warmup^-1.5)` with the step s counted from 1.

    With d = 512, warmup 10000 and scale 1 this is M2's schedule (peak about
    4.4e-4 at step 10000).

    Args:
        hidden_dim: int. Model width d.
        warmup_steps: int. Steps of linear warm-up.
        scale: float. Multiplier on the whole schedule.

    Example:
    >>> schedule = WarmupInverseSqrt(512, 10000)
    >>> round(float(schedule(9999)), 7)
    0.0004419

    Reference:
        Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Eq. 3.
    """

    def __init__(self, hidden_dim, warmup_steps=10000, scale=1.0):
        self.hidden_dim = hidden_dim
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        s = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        rate = ops.minimum(ops.rsqrt(s), s * warmup**-1.5)
        return self.scale * self.hidden_dim**-0.5 * rate

    def get_config(self):
        return {"hidden_dim": self.hidden_dim, "warmup_steps": self.warmup_steps, "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfcaption")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The same warm-up and peak as `WarmupInverseSqrt`, then a straight line to zero.

    For runs whose length is known in advance (the CPU default), annealing to
    zero by the last step converges further than the inverse-square-root
    tail, which keeps the rate high until the end.

    Args:
        hidden_dim: int. Model width d (sets the peak as in M2's schedule).
        warmup_steps: int. Steps of linear warm-up; the peak is reached here.
        total_steps: int. The step at which the rate reaches zero.
        scale: float. Multiplier on the whole schedule.

    Example:
    >>> schedule = WarmupLinearDecay(512, 100, 1100)
    >>> float(schedule(1100))
    0.0
    """

    def __init__(self, hidden_dim, warmup_steps, total_steps, scale=1.0):
        self.hidden_dim = hidden_dim
        self.warmup_steps = warmup_steps
        self.total_steps = max(total_steps, warmup_steps + 1)
        self.scale = scale

    def __call__(self, step):
        s = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        peak = self.scale * self.hidden_dim**-0.5 * warmup**-0.5
        rising = peak * s / warmup
        falling = peak * (float(self.total_steps) - s) / (float(self.total_steps) - warmup)
        return ops.maximum(ops.minimum(rising, falling), 0.0)

    def get_config(self):
        return {
            "hidden_dim": self.hidden_dim, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
            "scale": self.scale,
        }


@keras.saving.register_keras_serializable(package="tfcaption")
class WarmupConstant(keras.optimizers.schedules.LearningRateSchedule):
    """A fixed rate (Springenberg et al.: Adam at 3e-4), reached by a linear warm-up when `warmup_steps` > 0.

    Args:
        learning_rate: float. The rate after warm-up.
        warmup_steps: int. Steps of linear warm-up (0 = the full rate from the first step).

    Example:
    >>> schedule = WarmupConstant(3e-4, 0)
    >>> round(float(schedule(0)), 6), round(float(schedule(5000)), 6)
    (0.0003, 0.0003)
    """

    def __init__(self, learning_rate, warmup_steps=0):
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        s = ops.cast(step, "float32") + 1.0
        return self.learning_rate * ops.minimum(1.0, s / float(max(self.warmup_steps, 1)))

    def get_config(self):
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}
