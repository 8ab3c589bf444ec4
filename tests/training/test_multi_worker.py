"""MultiWorkerMirroredStrategy: two worker processes on loopback run XE then SCST and end identical.

Each worker is a real process with its own `TF_CONFIG` (a two-task cluster on two 127.0.0.1 ports) and
its own output directory, so the test sees who writes what: the chief writes the run directory, the
other worker writes nothing there (its checkpoints go to a temporary directory it deletes).
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny import TINY_MODEL

WORKER_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tfcaption.training.strategy import make_strategy

strategy = make_strategy("multiworker")  # first: collectives are configured at program start-up
from tfcaption.config import DataConfig, DecodeConfig, RunConfig, TrainConfig
from tfcaption.data.tokenizer import Vocabulary
from tfcaption.evaluation import training_captions
from tfcaption.models.config import CaptionerConfig
from tfcaption.training.trainer import Trainer

data_dir, output_dir, weights_file, model = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
vocab = Vocabulary.build(training_captions(data_dir))
config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **model)
phases = [{"task": "xe", "epochs": 1},
          {"task": "scst", "epochs": 1, "batch_size": 8, "scst_samples": 2, "scst_learning_rate": 1e-3}]
train = TrainConfig(output_dir=output_dir, batch_size=8, steps_per_epoch=3, warmup_steps=2, val_images=4,
                    strategy="multiworker", phases=phases, early_stopping_patience=0, tensorboard_images=1)
run_config = RunConfig(model=config, data=DataConfig(max_caption_words=8), train=train,
                       decode=DecodeConfig(batch_size=4))
trainer = Trainer(run_config, data_dir, vocab, strategy=strategy, log=lambda *a: None)
history = trainer.fit()
np.savez(weights_file, *[v.numpy() for v in trainer.model.variables])
print(json.dumps({"chief": trainer.chief, "replicas": strategy.num_replicas_in_sync,
                  "tasks": [h["task"] for h in history], "rewards": [h.get("reward") for h in history]}))
"""


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_loopback_train_xe_then_scst_to_identical_weights_and_only_the_chief_writes(
        tiny_shapes, tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": REPO_ROOT, "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        args = [sys.executable, "-c", WORKER_SCRIPT, tiny_shapes, str(tmp_path / f"run{index}"),
                str(tmp_path / f"weights{index}.npz"), json.dumps(TINY_MODEL)]
        workers.append(subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=600)
            assert worker.returncode == 0, stderr[-3000:]
            outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            worker.kill()

    assert [o["chief"] for o in outputs] == [True, False]
    assert all(o["replicas"] == 2 and o["tasks"] == ["xe", "scst"] for o in outputs)
    assert outputs[0]["rewards"][1] is not None and outputs[0]["rewards"][1] >= 0
    first, second = np.load(tmp_path / "weights0.npz"), np.load(tmp_path / "weights1.npz")
    assert len(first.files) > 50
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name])
    # The chief wrote the run; the other worker wrote nothing into its run directory.
    chief = tmp_path / "run0"
    assert (chief / "best.weights.h5").exists() and (chief / "config.json").exists()
    assert os.listdir(chief / "checkpoints") and os.listdir(chief / "logs")
    assert [json.loads(line)["task"] for line in (chief / "history.jsonl").read_text().splitlines()] == ["xe", "scst"]
    assert not (tmp_path / "run1").exists()
