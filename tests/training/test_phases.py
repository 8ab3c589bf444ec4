"""`train.phases`: XE then SCST in one run, M2's switch rule, and resuming inside the second phase."""

import numpy as np
import pytest

from tests.helpers.tiny import TINY_MODEL
from tfcaption.config import RunConfig, TrainConfig


def test_a_phase_overrides_the_train_section_and_an_unknown_phase_field_is_an_error_naming_it():
    train = TrainConfig(epochs=7, learning_rate=1e-3,
                        phases=[{"task": "xe"}, {"task": "scst", "epochs": 2, "scst_learning_rate": 1e-5}])
    xe, scst = train.phase_configs()
    assert (xe.task, xe.epochs, xe.learning_rate) == ("xe", 7, 1e-3)
    assert (scst.task, scst.epochs, scst.scst_learning_rate, scst.learning_rate) == ("scst", 2, 1e-5, 1e-3)
    assert xe.phases == [] and scst.output_dir == train.output_dir
    assert [c.task for c in TrainConfig(task="scst").phase_configs()] == ["scst"]  # no phases: the section
    with pytest.raises(ValueError, match=r"train.phases\[1\] sets output_dir, seed"):
        TrainConfig(phases=[{"task": "xe"}, {"task": "scst", "seed": 1, "output_dir": "x"}])
    with pytest.raises(ValueError, match=r"train\.phases\[0\]\.task must be one of 'xe', 'scst', got 'rl'"):
        TrainConfig(phases=[{"task": "rl"}])
    assert RunConfig.from_dict(RunConfig(train=train).to_dict()).train.phase_configs() == train.phase_configs()


@pytest.mark.parametrize("preset", ["m2", "m2_regions", "vit_m2"])
def test_m2_presets_run_xe_then_scst_at_5e_6_each_until_5_epochs_without_improvement(preset):
    config = RunConfig.from_preset(preset).train
    xe, scst = config.phase_configs()
    assert (xe.task, xe.learning_rate_schedule, xe.warmup_steps, xe.batch_size) == ("xe", "noam", 10000, 50)
    assert (scst.task, scst.scst_learning_rate, scst.scst_sampling, scst.scst_samples) == ("scst", 5e-6, "beam", 5)
    assert xe.early_stopping_patience == scst.early_stopping_patience == 5
    assert RunConfig.from_preset("small").train.phases == []  # the default run: XE only


def _trainer(tiny_shapes, output_dir, phases, log):
    from tfcaption.config import DataConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **TINY_MODEL)
    train = TrainConfig(output_dir=str(output_dir), batch_size=8, steps_per_epoch=2, warmup_steps=2,
                        jit_compile=False, val_images=4, tensorboard_images=0, phases=phases)
    run_config = RunConfig(model=config, data=DataConfig(max_caption_words=8), train=train)
    return Trainer(run_config, tiny_shapes, vocab, log=log)


SCST = {"task": "scst", "epochs": 1, "scst_samples": 2, "scst_learning_rate": 1e-3}


def test_two_phases_run_xe_then_scst_in_one_run_and_a_rerun_resumes_inside_the_scst_phase(tiny_shapes, tmp_path):
    messages = []
    trainer = _trainer(tiny_shapes, tmp_path / "run", [{"task": "xe", "epochs": 2}, SCST], messages.append)
    history = trainer.fit()
    assert [(h["epoch"], h["phase"], h["task"]) for h in history] == [(1, 1, "xe"), (2, 1, "xe"), (3, 2, "scst")]
    assert "reward" in history[2] and "reward" not in history[0]
    assert any(m.startswith("Phase 2/2: SCST, from the best weights") for m in messages)
    # The SCST phase began with a fresh Adam: its step count is that phase's steps alone.
    assert int(trainer.optimizer.iterations.numpy()) == 2
    assert int(trainer.state.scst_iterations.numpy()) == 2

    # A longer SCST phase on the same run directory: it resumes in phase 2 and trains one more SCST epoch.
    messages.clear()
    resumed = _trainer(tiny_shapes, tmp_path / "run", [{"task": "xe", "epochs": 2}, {**SCST, "epochs": 2}],
                       messages.append)
    more = resumed.fit()
    assert [(h["epoch"], h["phase"], h["task"]) for h in more] == [(4, 2, "scst")]
    assert any("of phase 2 (SCST)" in m for m in messages)
    assert int(resumed.optimizer.iterations.numpy()) == 4


def test_the_switch_loads_the_best_weights_zeroes_the_optimizers_and_takes_the_next_phases_schedule(
        tiny_shapes, tmp_path):
    trainer = _trainer(tiny_shapes, tmp_path / "run", [{"task": "xe", "epochs": 1, "early_stopping_patience": 2},
                                                      SCST], lambda *_: None)
    trainer._train_step(next(trainer._epoch_batches(0, 0)))
    best = [v.numpy().copy() for v in trainer.model.variables]
    trainer.model.save_weights(trainer.best_weights)
    for v in trainer.model.trainable_variables:
        v.assign(v + 1.0)
    assert int(trainer.optimizer.iterations.numpy()) == 1
    trainer.state.epochs_without_improvement.assign(2)
    assert trainer._phase_end() == "no validation CIDEr-D improvement for 2 epochs"
    trainer._next_phase("no validation CIDEr-D improvement for 2 epochs")
    for before, after in zip(best, trainer.model.variables):
        np.testing.assert_array_equal(before, after.numpy())
    assert all(not np.any(v.numpy()) for v in trainer.optimizer.variables)
    state = trainer.state
    assert (trainer.config.task, int(state.phase.numpy()), int(state.epochs_without_improvement.numpy())) == (
        "scst", 1, 0)
    assert float(trainer.optimizer.learning_rate) == pytest.approx(1e-3)  # SCST's constant rate
    assert trainer.scst is not None and trainer._phase_end() == ""
