"""Preemption-safe training: checkpoints inside the epoch, SIGKILL then resume ending bit-identical to an
uninterrupted run, SIGTERM saving the position, a non-finite loss stopping with the last good checkpoint,
and progress lines that read well in a log."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.exports import quiet_env
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny import TINY_MODEL, TINY_SHAPES, tiny_train_args
from tfcaption.training.interruption import TrainingInterrupted, stop_requests
from tfcaption.training.progress import EpochProgress

STEPS, EVERY = 8, 2  # checkpoints at steps 2, 4, 6 and the epoch's end: four per epoch

# Trains (or resumes) a tiny deterministic run, then saves the latest checkpoint's weights as .npz.
CHILD = r"""
import json, sys
import numpy as np
from tfcaption.config import DataConfig, DecodeConfig, RunConfig, TrainConfig
from tfcaption.datasets.shapes.dataset import ShapesConfig, build_shapes_dataset
from tfcaption.data.tokenizer import Vocabulary
from tfcaption.evaluation import training_captions
from tfcaption.models.config import CaptionerConfig
from tfcaption.training.trainer import Trainer

data_root, output_dir, weights_out, model, shapes, steps, every = sys.argv[1:8]
data_dir = build_shapes_dataset(data_root, ShapesConfig(**json.loads(shapes)), verbose=False, workers=1)
vocab = Vocabulary.build(training_captions(data_dir))
config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=22, **json.loads(model))
train = TrainConfig(output_dir=output_dir, epochs=2, batch_size=8, steps_per_epoch=int(steps), warmup_steps=4,
                    val_images=4, jit_compile=False, deterministic=True, checkpoint_every_steps=int(every))
run_config = RunConfig(model=config, data=DataConfig(max_caption_words=20), train=train,
                       decode=DecodeConfig(batch_size=8))
trainer = Trainer(run_config, data_dir, vocab, log=lambda *a: print(*a, flush=True))
trainer.fit()
trainer.checkpoint.restore(trainer.manager.latest_checkpoint).expect_partial()
np.savez(weights_out, **{v.path: v.numpy() for v in trainer.model.variables})
"""


def start_child(tiny_shapes, data_root, run_dir, weights_out):
    del tiny_shapes  # built once by the fixture; the child finds it in data_root
    args = [sys.executable, "-c", CHILD, data_root, str(run_dir), str(weights_out), json.dumps(TINY_MODEL),
            json.dumps(TINY_SHAPES), str(STEPS), str(EVERY)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                            env={**quiet_env(), "PYTHONPATH": REPO_ROOT})


def latest_checkpoint_number(run_dir):
    state = os.path.join(run_dir, "checkpoints", "checkpoint")
    if not os.path.exists(state):
        return 0
    with open(state) as f:
        first = f.readline()  # model_checkpoint_path: "ckpt-N"
    return int(first.rsplit("-", 1)[-1].strip().strip('"')) if "ckpt-" in first else 0


def wait_for_checkpoint(process, run_dir, number, timeout=300):
    deadline = time.time() + timeout
    while latest_checkpoint_number(run_dir) < number:
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def history(run_dir):
    with open(os.path.join(run_dir, "history.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_a_run_killed_mid_epoch_and_resumed_ends_bit_identical_to_an_uninterrupted_run(tiny_shapes, data_root,
                                                                                        tmp_path):
    uninterrupted = start_child(tiny_shapes, data_root, tmp_path / "a", tmp_path / "a.npz")
    killed = start_child(tiny_shapes, data_root, tmp_path / "b", tmp_path / "b_killed.npz")
    # Checkpoint 5 is epoch 2's step 2: kill there, wherever the child has got to since.
    wait_for_checkpoint(killed, tmp_path / "b", 5)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL and latest_checkpoint_number(tmp_path / "b") < 8
    assert len(history(tmp_path / "b")) == 1  # epoch 2 had not ended

    resumed = start_child(tiny_shapes, data_root, tmp_path / "b", tmp_path / "b.npz")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert "steps into epoch 2" in out
    out, err = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, err[-3000:]

    expected, got = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(expected.files) == sorted(got.files)
    differing = [name for name in expected.files if not np.array_equal(expected[name], got[name])]
    assert not differing
    assert [h["train_loss"] for h in history(tmp_path / "a")] == [h["train_loss"] for h in history(tmp_path / "b")]


def test_sigterm_saves_the_position_exits_143_and_the_rerun_resumes_there(tiny_shapes, data_root, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_train_args(str(run_dir), data_root, str(tmp_path / "savedmodel"), epochs=2)
    args += ["--no-xla", "--set", "train.checkpoint_every_steps=1", "--set", "train.steps_per_epoch=40",
             "--set", "train.batch_size=8"]
    process = subprocess.Popen([sys.executable, "-m", "tfcaption.cli.train", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
                               env={**quiet_env(), "PYTHONPATH": REPO_ROOT})
    wait_for_checkpoint(process, run_dir, 2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    message = err.strip().splitlines()[-1]
    assert message.startswith("tfcaption-train: stopped by SIGTERM at epoch 1 step ") and "rerun" in message
    step = int(message.split(" step ")[1].split(":")[0])
    reader = tf.train.load_checkpoint(os.path.join(run_dir, "checkpoints"))
    assert reader.get_tensor("step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE") == step >= 2
    assert not os.path.exists(run_dir / "report.json")


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_shapes, tmp_path):
    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import NonFiniteLossError, Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=22, **TINY_MODEL)
    train = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, steps_per_epoch=6,
                        jit_compile=False, checkpoint_every_steps=2)
    trainer = Trainer(RunConfig(model=config, data=DataConfig(max_caption_words=20), train=train), tiny_shapes,
                      vocab, log=lambda *a: None)
    real_step, calls = trainer._train_step, []

    def diverging(batch):  # the third step's loss overflows
        calls.append(1)
        loss, count = real_step(batch)
        return (tf.constant(math.nan) if len(calls) == 3 else loss), count

    trainer._train_step = diverging
    with pytest.raises(NonFiniteLossError, match=r"the loss is nan at epoch 1 step 3 .*ckpt-1 is kept"):
        trainer.fit()
    reader = tf.train.load_checkpoint(trainer.manager.latest_checkpoint)
    assert reader.get_tensor("step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert trainer.manager.latest_checkpoint.endswith("ckpt-1")


def test_a_signal_inside_stop_requests_only_sets_the_request_and_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with stop_requests() as request:
        assert not request.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert request.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    stopped = TrainingInterrupted(signal.SIGTERM, 1, 37, "run/checkpoints/ckpt-9")
    assert stopped.exit_code == 143 and "epoch 2 step 37" in str(stopped) and "\n" not in str(stopped)


def test_progress_in_a_log_is_one_line_per_interval_and_one_at_the_epochs_end():
    lines, now = [], [0.0]
    progress = EpochProgress(2, 4, steps=100, batch_size=10, start=20, log=lines.append, interactive=False,
                             interval=10.0, clock=lambda: now[0])
    for step in range(21, 101):
        now[0] += 0.5  # 2 steps a second: a line every 20 steps
        progress.update(step, loss=1.5, lr=3e-4)
    assert [line.split()[3] for line in lines] == ["21/100", "41/100", "61/100", "81/100", "100/100"]
    assert lines[-1].startswith("epoch 2/4  step 100/100 (100%)  loss 1.5000  lr 0.0003")
    assert "20 pairs/s  eta 30s" in lines[1] and "\r" not in "".join(lines)
