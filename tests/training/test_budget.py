"""train.time_budget_minutes: the run's epochs sized from the rate its first steps measure."""

import json
import os

import pytest

from tests.helpers.tiny import TINY_MODEL
from tfcaption.training.budget import CALIBRATION_STEPS, plan_run


def test_a_run_that_fits_keeps_its_epochs_and_warm_up():
    plan = plan_run(10, elapsed_seconds=5.0, steps_done=21, seconds_per_step=0.1, epochs=4, steps_per_epoch=781,
                    warmup_steps=1000)
    assert (plan.steps_per_epoch, plan.warmup_steps) == (781, 1000)  # 4 x 781 steps take 5.2 of 10 minutes
    assert "fit" in plan.describe(4)


def test_a_run_that_does_not_fit_gets_shorter_epochs_in_5_percent_steps_and_a_warm_up_scaled_alike():
    # 0.4 s/step: (600 - 12) / 0.4 + 21 = 1491 steps, 372.75 an epoch, rounded down to a multiple of 781 // 20
    plan = plan_run(10, 12.0, 21, 0.4, 4, 781, 1000)
    assert plan.steps_per_epoch == 351 and plan.steps_per_epoch % 39 == 0
    assert plan.warmup_steps == round(1000 * 351 / 781)
    assert 4 * plan.steps_per_epoch * 0.4 + 12.0 <= 600.0
    assert "--set train.steps_per_epoch=351 --set train.warmup_steps=449" in plan.describe(4)


def test_a_budget_already_spent_when_measured_shares_out_the_steps_done():
    plan = plan_run(0.1, 30.0, 21, 1.0, 2, 100, 50)  # 6 s budget, 30 s spent: the 21 steps done, 10.5 an epoch
    assert (plan.steps_per_epoch, plan.warmup_steps) == (10, 5)
    assert plan_run(0.1, 30.0, 3, 1.0, 2, 100, 50).steps_per_epoch == 5  # at least one 5% grain


def test_the_budget_must_be_non_negative_and_for_one_phase():
    from tfcaption.config import TrainConfig

    with pytest.raises(ValueError, match="train.time_budget_minutes must be a number >= 0, got -1"):
        TrainConfig(time_budget_minutes=-1)
    with pytest.raises(ValueError, match="sizes a run of one phase"):
        TrainConfig(time_budget_minutes=5, phases=[{"task": "xe"}, {"task": "scst"}])


def _budget_trainer(tiny_shapes, run_dir, minutes, log):
    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **TINY_MODEL)
    train = TrainConfig(output_dir=str(run_dir), epochs=2, batch_size=8, steps_per_epoch=60, warmup_steps=40,
                        jit_compile=False, val_images=4, time_budget_minutes=minutes, checkpoint_every_steps=0)
    return Trainer(RunConfig(model=config, data=DataConfig(max_caption_words=10), train=train), tiny_shapes, vocab,
                   log=log)


def test_a_budget_too_small_for_the_run_shortens_its_epochs_records_the_plan_and_a_rerun_follows_it(
        tiny_shapes, tmp_path):
    messages = []
    trainer = _budget_trainer(tiny_shapes, tmp_path / "run", 0.001, messages.append)
    history = trainer.fit()
    plan = json.load(open(os.path.join(tmp_path, "run", "budget.json")))
    # 0.06 s is spent by the time the rate is known: the 21 steps done, shared by the 2 epochs and rounded down
    # to a multiple of 60 // 20 = 9 steps an epoch; the warm-up 40 * 9 / 60
    assert (plan["configured_steps_per_epoch"], plan["steps_per_epoch"], plan["warmup_steps"]) == (60, 9, 6)
    assert any(m.startswith("Time budget 0.001 min") and "--set train.steps_per_epoch=9" in m for m in messages)
    # the first epoch ends at the measurement (already past 9 steps), the second runs 9; the schedule is the plan's
    assert [h["epoch"] for h in history] == [1, 2]
    assert int(trainer.optimizer.iterations) == CALIBRATION_STEPS + 1 + 9
    # the optimizer's schedule is the plan's: to zero at 2 x 9 steps (the configured one would still be warming up)
    assert trainer._schedule().total_steps == 18 and float(trainer.optimizer.learning_rate) == 0.0
    rerun = _budget_trainer(tiny_shapes, tmp_path / "run", 0.001, messages.append)
    rerun.fit()  # resumes a finished run: reads the plan, measures nothing
    assert rerun.steps_per_epoch() == 9 and int(rerun.optimizer.iterations) == CALIBRATION_STEPS + 10
    assert sum(m.startswith("Time budget") for m in messages) == 1


def test_a_budget_the_run_fits_in_leaves_it_as_configured(tiny_shapes, tmp_path):
    messages = []
    trainer = _budget_trainer(tiny_shapes, tmp_path / "run", 60, messages.append)
    trainer.fit()
    assert int(trainer.optimizer.iterations) == 120 and trainer.steps_per_epoch() == 60
    assert any(m.startswith("Time budget 60 min: 120 steps") and "as configured" in m for m in messages)
