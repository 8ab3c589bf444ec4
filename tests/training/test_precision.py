"""Precision: "auto" picks a policy from the hardware (CPU: measured), mixed_float16 trains with dynamic loss
scaling (an overflowing step is skipped and the scale halves), for XE and SCST."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.tiny import TINY_MODEL
from tfcaption.config import RunConfig, TrainConfig
from tfcaption.training import precision
from tfcaption.training.precision import choose_policy, cpu_bfloat16_speedup

DEFAULT = tf.distribute.get_strategy()


def _choose(measure=lambda *shapes: 1.0, requested="auto"):
    return choose_policy(requested, DEFAULT, rows=640, hidden_dim=128, intermediate_dim=512, measure=measure)


def test_an_explicit_policy_is_kept_and_an_unknown_one_is_an_error_naming_the_choices():
    assert _choose(requested="mixed_float16").policy == "mixed_float16"
    assert _choose(requested="float32").reason == "as configured"
    with pytest.raises(ValueError, match="model.dtype_policy must be one of auto, float32, mixed_bfloat16, "
                                         "mixed_float16; got 'bf16'"):
        _choose(requested="bf16")


def test_auto_on_a_cpu_takes_bfloat16_only_where_it_measured_faster(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    measured = []
    fast = _choose(lambda *shapes: measured.append(shapes) or 2.1)
    assert fast.policy == "mixed_bfloat16" and "2.10x" in fast.reason and measured == [(640, 128, 512)]
    slow = _choose(lambda *shapes: 1.1)
    assert slow.policy == "float32" and "only 1.10x" in slow.reason and "needs 1.2x" in slow.reason
    # No bfloat16 instructions (an AVX2-only EPYC): float32 without timing anything.
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert _choose(lambda *shapes: pytest.fail("measured")).policy == "float32"


@pytest.mark.parametrize("capability, policy", [((8, 0), "mixed_bfloat16"), ((9, 0), "mixed_bfloat16"),
                                                ((7, 5), "mixed_float16"), ((7, 0), "mixed_float16"),
                                                ((6, 1), "float32")])
def test_auto_on_gpus_follows_the_oldest_gpus_compute_capability(monkeypatch, capability, policy):
    gpus = ["gpu0", "gpu1"]
    details = {"gpu0": (9, 0), "gpu1": capability}
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: gpus if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"compute_capability": details[device]})
    choice = _choose(lambda *shapes: pytest.fail("a GPU is not timed"))
    assert choice.policy == policy and f"{capability[0]}.{capability[1]}" in choice.reason


def test_the_cpu_measurement_times_both_precisions_and_returns_their_ratio():
    ratio = cpu_bfloat16_speedup(64, 32, 128, seconds=0.02)
    assert math.isfinite(ratio) and 0.05 < ratio < 20


def _trainer(tiny_shapes, output_dir, policy, log=lambda *a: None, **train):
    from tfcaption.config import DataConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12,
                                         **{**TINY_MODEL, "dtype_policy": policy})
    train = TrainConfig(output_dir=str(output_dir), batch_size=8, steps_per_epoch=1, epochs=1, warmup_steps=2,
                        jit_compile=False, val_images=4, tensorboard_images=0, early_stopping_patience=0, **train)
    return Trainer(RunConfig(model=config, data=DataConfig(max_caption_words=8), train=train), tiny_shapes, vocab,
                   log=log)


def _weights(model):
    return [np.array(v) for v in model.trainable_variables]


@pytest.mark.parametrize("task", ["xe", "scst"])
def test_mixed_float16_skips_a_step_whose_gradients_overflow_and_halves_the_loss_scale(tiny_shapes, tmp_path, task):
    extra = {"task": "scst", "scst_samples": 2, "scst_learning_rate": 1e-3} if task == "scst" else {}
    messages = []
    trainer = _trainer(tiny_shapes, tmp_path / "overflow", "mixed_float16", messages.append, **extra)
    assert "Precision: mixed_float16 (as configured)" in messages
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.decoder.word_embedding.compute_dtype == "float16"
    trainer.optimizer.dynamic_scale.assign(2.0 ** 40)  # float16 holds 65504 at most: the gradients overflow
    before = _weights(trainer.model)
    history = trainer.fit()
    assert math.isfinite(history[0]["train_loss"])  # the loss itself is float32 and finite
    assert float(trainer.optimizer.dynamic_scale.numpy()) == 2.0 ** 39
    assert int(trainer.optimizer.inner_optimizer.iterations.numpy()) == 0  # no Adam step was taken
    for old, new in zip(before, _weights(trainer.model)):
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("task", ["xe", "scst"])
def test_mixed_float16_at_a_safe_scale_updates_like_float32(tiny_shapes, tmp_path, task):
    extra = {"task": "scst", "scst_samples": 2, "scst_learning_rate": 1e-3} if task == "scst" else {}
    moved = {}
    for policy in ("float32", "mixed_float16"):
        keras.utils.set_random_seed(5)
        trainer = _trainer(tiny_shapes, tmp_path / policy, policy, **extra)
        if policy == "mixed_float16":  # Keras's initial 2**15 overflows this model's first step: one that fits
            trainer.optimizer.dynamic_scale.assign(256.0)
        before = _weights(trainer.model)
        trainer.fit()
        moved[policy] = np.concatenate([(new - old).ravel() for old, new in zip(before, _weights(trainer.model))])
    scaler = trainer.optimizer
    assert float(scaler.dynamic_scale.numpy()) == 256.0 and int(scaler.inner_optimizer.iterations.numpy()) == 1
    # the same first Adam step, to float16's precision: unscaled, the gradients were not scaled twice
    assert np.count_nonzero(moved["mixed_float16"]) > 0.5 * moved["mixed_float16"].size
    cosine = np.dot(moved["float32"], moved["mixed_float16"]) / (
        np.linalg.norm(moved["float32"]) * np.linalg.norm(moved["mixed_float16"]))
    assert cosine > 0.95


def test_auto_is_resolved_once_written_to_the_run_and_kept_when_it_resumes(tiny_shapes, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(precision, "cpu_bfloat16_speedup", lambda *shapes: 3.0)
    messages = []
    trainer = _trainer(tiny_shapes, tmp_path / "run", "auto", messages.append)
    assert [m for m in messages if m.startswith("Precision:")] == [
        "Precision: mixed_bfloat16 (auto: bfloat16 3.00x float32 on this CPU at this model's feed-forward "
        "(80x32x64))"]  # batch 8 x 10 tokens
    saved = RunConfig.load(trainer.run.config)
    assert saved.model.dtype_policy == "mixed_bfloat16"
    assert trainer.model.decoder.word_embedding.compute_dtype == "bfloat16"

    from tfcaption.training.recipe import resolve_run

    monkeypatch.setattr(precision, "cpu_bfloat16_speedup", lambda *shapes: pytest.fail("a resumed run measured"))
    again = RunConfig(model=saved.model.replace(dtype_policy="auto"), train=saved.train)
    assert resolve_run(again).model.dtype_policy == "mixed_bfloat16"
    explicit = RunConfig(model=saved.model.replace(dtype_policy="float32"), train=saved.train)
    assert resolve_run(explicit).model.dtype_policy == "float32"
