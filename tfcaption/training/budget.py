"""`train.time_budget_minutes`: a run's length sized from the throughput its first steps measure.

The first steps of a fresh run are timed (after the step that compiles); if the configured epochs would
take longer than the budget at that rate, every epoch is shortened to the same length, and the warm-up in
proportion, so the learning-rate schedule keeps its shape over the shorter run. The plan is written to the
run directory (`budget.json`) and a resumed run follows it without measuring again; the log line names the
`--set` overrides that give the same plan on any machine. Epoch lengths are rounded down to 5% steps
of the configured epoch, so reruns on one machine, whose speed moves by a few percent, usually get the
same plan.

The budget counts the training steps from the first one (compilation included); each epoch's validation,
the final evaluation and the export come on top.
"""

import dataclasses
import json
import time

import tensorflow as tf

CALIBRATION_STEPS = 20  # timed after the first (compiling) step
GRAIN = 20  # epoch lengths are multiples of 1/GRAIN of the configured epoch


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What a budget made of a run: its epochs' length and warm-up, and the measurement behind them."""

    budget_minutes: float
    seconds_per_step: float
    configured_steps_per_epoch: int
    steps_per_epoch: int
    warmup_steps: int

    def describe(self, epochs):
        planned = epochs * self.configured_steps_per_epoch
        if self.steps_per_epoch == self.configured_steps_per_epoch:
            return (f"Time budget {self.budget_minutes:g} min: {planned} steps at {self.seconds_per_step:.3f} s/step "
                    f"fit; the run is as configured.")
        return (f"Time budget {self.budget_minutes:g} min: at {self.seconds_per_step:.3f} s/step the {planned} "
                f"configured steps do not fit, so {epochs} epochs of {self.steps_per_epoch} steps (warm-up "
                f"{self.warmup_steps}); this plan on any machine: --set train.steps_per_epoch={self.steps_per_epoch} "
                f"--set train.warmup_steps={self.warmup_steps} --set train.time_budget_minutes=0")

    def save(self, path):
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)

    @classmethod
    def load(cls, path):
        with tf.io.gfile.GFile(path) as f:
            return cls(**json.load(f))


def plan_run(budget_minutes, elapsed_seconds, steps_done, seconds_per_step, epochs, steps_per_epoch, warmup_steps):
    """The run that fits: `steps_done` steps took `elapsed_seconds` and the rest run at `seconds_per_step`.

    Returns a `BudgetPlan`; its epochs are the configured length when the whole run fits, else the longest
    multiple of `steps_per_epoch / GRAIN` (at least one such step, at least one step) that fits, with the
    warm-up scaled by the same fraction.

    Example:
    >>> plan = plan_run(10, 12.0, 21, 0.5, epochs=4, steps_per_epoch=800, warmup_steps=1000)
    >>> plan.steps_per_epoch, plan.warmup_steps
    (280, 350)
    >>> plan_run(60, 12.0, 21, 0.5, 4, 800, 1000).steps_per_epoch
    800
    """
    remaining = budget_minutes * 60.0 - elapsed_seconds
    affordable = steps_done + max(remaining, 0.0) / max(seconds_per_step, 1e-9)
    if affordable >= epochs * steps_per_epoch:
        per_epoch = steps_per_epoch
    else:
        grain = max(1, steps_per_epoch // GRAIN)
        per_epoch = max(grain, int(affordable / epochs) // grain * grain)
    warmup = int(round(warmup_steps * per_epoch / steps_per_epoch))
    return BudgetPlan(float(budget_minutes), float(seconds_per_step), int(steps_per_epoch), int(per_epoch), warmup)


def measures_rate(config, plan, state, steps_per_epoch):
    """Whether the epoch in progress measures the rate: the first epoch of a budgeted run (`config`, the
    first phase's `TrainConfig`) with no plan yet (`plan`), long enough to measure."""
    return bool(config.time_budget_minutes and plan is None and int(state.phase.numpy()) == 0
                and int(state.phase_epoch.numpy()) == 0
                and steps_per_epoch > int(state.step_in_epoch.numpy()) + CALIBRATION_STEPS + 1)


def on_plan(config, plan):
    """The first phase's `config` on `plan`'s epochs (their length and the warm-up); `config` itself when
    the configured run fits."""
    if plan.steps_per_epoch == plan.configured_steps_per_epoch:
        return config
    return dataclasses.replace(config, steps_per_epoch=plan.steps_per_epoch, warmup_steps=plan.warmup_steps)


class Calibration:
    """The loop's hook that measures the rate in a fresh budgeted run's first epoch: the first step
    (compiling) from `start` is not timed, the next `CALIBRATION_STEPS` are; then
    `plan(elapsed seconds, steps done, seconds per step, steps) -> the epoch's new length` sizes the run.

    `agree(seconds_per_step)` makes the measurement the same on every worker (an all-reduce; every worker
    calls it at the same step)."""

    def __init__(self, start, agree, plan, clock=time.time):
        self.start, self.agree, self.plan, self.clock = start, agree, plan, clock
        self.started, self.first_done = clock(), None

    def __call__(self, done, steps):
        step = done - 1
        if step == self.start:
            self.first_done = self.clock()  # the compiling step is not a measure of the rate
        if step == self.start + CALIBRATION_STEPS:
            seconds_per_step = self.agree((self.clock() - self.first_done) / CALIBRATION_STEPS)
            return self.plan(self.clock() - self.started, done, seconds_per_step, steps)
        return steps
