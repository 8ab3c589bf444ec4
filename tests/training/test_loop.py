"""The epoch loop (`tfcaption.training.loop`) and its hooks, with stand-in steps: no model, no dataset."""

import math

import pytest

from tfcaption.training.budget import CALIBRATION_STEPS, Calibration
from tfcaption.training.checkpoints import StepSaves
from tfcaption.training.interruption import TrainingInterrupted
from tfcaption.training.loop import NonFiniteLossError, train_steps
from tfcaption.training.state import TrainingState


class Progress:
    def __init__(self):
        self.updates, self.sizes = [], []

    def update(self, step, loss, lr):
        self.updates.append((step, loss, lr))

    def resize(self, steps):
        self.sizes.append(steps)


def run(losses, steps, state=None, hooks=(), scst=False):
    state = state or TrainingState()
    progress = Progress()
    values = iter(losses)

    def take_step(batch):
        loss = next(values)
        return (loss, 1.0, 0.5, 0.25) if scst else (loss, 2.0)

    result = train_steps(take_step, iter(range(1000)), state, 4, steps, progress, lambda: 0.1,
                         lambda: "ckpt-7", hooks)
    return result, state, progress


def test_the_loop_runs_from_the_position_and_keeps_the_epochs_sums():
    state = TrainingState()
    state.step_in_epoch.assign(2)  # a resumed epoch
    (seconds, steps_run), state, progress = run([1.0, 3.0], steps=4, state=state)
    assert steps_run == 2 and seconds >= 0.0 and int(state.step_in_epoch.numpy()) == 4
    assert float(state.epoch_loss_sum.numpy()) == 8.0 and float(state.epoch_token_count.numpy()) == 4.0
    assert progress.updates == [(3, 1.0, 0.1), (4, 2.0, 0.1)]  # the epoch's running token mean
    _, state, _ = run([1.0, 2.0], steps=2, scst=True)
    assert state.scst_means() == {"reward": 0.5, "baseline": 0.25}


def test_a_non_finite_loss_stops_naming_the_step_and_records_nothing_of_it():
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at epoch 5 step 2 .*ckpt-7 is kept"):
        run([1.0, math.nan, 1.0], steps=3)
    state = TrainingState()
    with pytest.raises(NonFiniteLossError):
        run([1.0, math.inf], steps=3, state=state)
    assert int(state.step_in_epoch.numpy()) == 1 and float(state.epoch_loss_sum.numpy()) == 2.0


def test_hooks_run_after_each_step_in_order_and_may_shorten_the_epoch():
    calls = []

    def first(done, steps):
        calls.append(("first", done, steps))
        return 3 if done == 2 else steps

    def second(done, steps):
        calls.append(("second", done, steps))
        return steps

    (_, steps_run), _, progress = run([1.0] * 10, steps=8, hooks=[first, second])
    assert steps_run == 3 and progress.sizes == [3]
    assert calls == [("first", 1, 8), ("second", 1, 8), ("first", 2, 8), ("second", 2, 3), ("first", 3, 3),
                     ("second", 3, 3)]


class Saver:
    def __init__(self):
        self.saves = 0

    def save(self):
        self.saves += 1
        return f"ckpt-{self.saves}"


class Stop:
    def __init__(self, after=None):
        self.after, self.seen, self.signum = after, 0, 15

    @property
    def requested(self):
        self.seen += 1
        return self.after is not None and self.seen >= self.after


def test_step_saves_every_n_steps_but_not_at_the_epochs_end():
    saver = Saver()
    hook = StepSaves(saver, Stop(), epoch=0, every=2)
    assert [hook(done, 6) for done in range(1, 7)] == [6] * 6
    assert saver.saves == 2  # after steps 2 and 4; the epoch saves its own end
    StepSaves(saver, Stop(), 0, every=0)(4, 6)
    assert saver.saves == 2


def test_a_stop_request_saves_the_position_and_interrupts():
    saver = Saver()
    hook = StepSaves(saver, Stop(after=3), epoch=1, every=0)
    hook(1, 10)
    hook(2, 10)
    with pytest.raises(TrainingInterrupted) as raised:
        hook(3, 10)
    assert (raised.value.epoch, raised.value.step, raised.value.checkpoint, raised.value.exit_code) == (1, 3, "ckpt-1",
                                                                                                       143)


def test_calibration_times_the_steps_after_the_compiling_one_then_plans():
    now = [100.0]
    planned = []

    def plan(elapsed, done, seconds_per_step, steps):
        planned.append((elapsed, done, seconds_per_step, steps))
        return 30

    calibration = Calibration(start=5, agree=lambda value: value * 2, plan=plan, clock=lambda: now[0])
    results = []
    for done in range(6, 6 + CALIBRATION_STEPS + 2):
        now[0] += 10.0 if done == 6 else 1.0  # the first (compiling) step is slow
        results.append(calibration(done, 100))
    assert results[CALIBRATION_STEPS] == 30 and results.count(100) == CALIBRATION_STEPS + 1
    # timed from the end of the first step: 20 steps of 1 s; agreed (here doubled) before planning
    assert planned == [(10.0 + CALIBRATION_STEPS, 6 + CALIBRATION_STEPS, 2.0, 100)]
