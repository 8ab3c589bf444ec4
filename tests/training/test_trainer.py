"""The training engine: loss masking, schedule, resume, and MirroredStrategy on two logical CPUs."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny import TINY_MODEL, TINY_SHAPES
from tfcaption.training.schedule import WarmupInverseSqrt
from tfcaption.training.trainer import masked_cross_entropy


def test_schedule_matches_m2_formula():
    schedule = WarmupInverseSqrt(512, 10000)
    for step in (0, 99, 9999, 50000):
        s = step + 1
        expected = 512**-0.5 * min(s**-0.5, s * 10000**-1.5)
        assert abs(float(schedule(step)) - expected) < 1e-9
    assert abs(float(schedule(9999)) - 4.419e-4) < 1e-6  # M2's peak


def test_cross_entropy_ignores_padding():
    logits = tf.random.stateless_normal((2, 4, 7), seed=(0, 1))
    targets = tf.constant([[4, 5, 3, 1], [6, 3, 1, 1]])
    total, count = masked_cross_entropy(targets, logits, pad_id=1)
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -sum(log_probs[b, t, targets.numpy()[b, t]] for b in range(2) for t in range(4)
                    if targets.numpy()[b, t] != 1)
    assert float(count) == 5.0
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    # Changing the logits at padded positions changes nothing.
    changed = logits.numpy()
    changed[1, 2:] += 100.0
    np.testing.assert_allclose(float(masked_cross_entropy(targets, changed, 1)[0]), float(total), rtol=1e-6)


MIRRORED_SCRIPT = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tfcaption.datasets.shapes.dataset import ShapesConfig, build_shapes_dataset
from tfcaption.data.tokenizer import Vocabulary
from tfcaption.evaluation import training_captions
from tfcaption.models.config import CaptionerConfig
from tfcaption.config import DataConfig, DecodeConfig, RunConfig, TrainConfig
from tfcaption.training.strategy import make_strategy
from tfcaption.training.trainer import Trainer

data_root, output_dir, model, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
data_dir = build_shapes_dataset(data_root, ShapesConfig(**shapes), verbose=False, workers=1)
vocab = Vocabulary.build(training_captions(data_dir))
config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=22, **model)
train = TrainConfig(output_dir=output_dir, epochs=2, batch_size=16, warmup_steps=10, learning_rate_scale=2.0,
                    val_images=8, strategy="mirrored")
run_config = RunConfig(model=config, data=DataConfig(max_caption_words=20), train=train,
                       decode=DecodeConfig(batch_size=8))
strategy = make_strategy("mirrored")
trainer = Trainer(run_config, data_dir, vocab, strategy=strategy, log=lambda *a: None)
history = trainer.fit()
variable = trainer.model.decoder.output_dense.kernel
replicas = [v.numpy() for v in variable.value.values] if hasattr(variable, "value") and hasattr(variable.value, "values") else []
if not replicas:
    replicas = [strategy.experimental_local_results(variable)[i].numpy() for i in range(2)]
print(json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "losses": [h["train_loss"] for h in history],
    "max_replica_difference": float(abs(replicas[0] - replicas[1]).max()),
}))
"""


def test_mirrored_strategy_on_two_logical_cpus_trains_with_identical_replicas(tiny_shapes, data_root, tmp_path):
    # The session's data root already holds the tiny shapes dataset (`tiny_shapes`): the child finds it built.
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, data_root, str(tmp_path / "run"),
         json.dumps(TINY_MODEL), json.dumps(TINY_SHAPES)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["replicas"] == 2
    assert outcome["losses"][1] < outcome["losses"][0]
    assert outcome["max_replica_difference"] == 0.0
    assert os.path.exists(tmp_path / "run" / "best.weights.h5")


def test_training_without_a_val_split_keeps_the_last_weights(tmp_path):
    from tests.helpers import layouts
    from tfcaption.data.prepare import prepare_dataset
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.training.trainer import Trainer
    from tfcaption.data.sources import open_source
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions

    root = tmp_path / "photos"
    root.mkdir()
    rows = ["image,caption,split"]
    for i in range(12):
        (root / f"{i}.jpg").write_bytes(layouts.encode(layouts.photo(i, (40, 40)), "JPEG"))
        rows += [f"{i}.jpg,{c},train" for c in layouts.captions_for(i % 3)]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    data_dir = str(tmp_path / "prepared")
    prepare_dataset(open_source(f"folder:{root}"), data_dir, verbose=False)
    vocab = Vocabulary.build(training_captions(data_dir))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **TINY_MODEL)
    train = TrainConfig(output_dir=str(tmp_path / "run"), epochs=2, batch_size=8, warmup_steps=4, jit_compile=False)
    messages = []
    run_config = RunConfig(model=config, data=DataConfig(max_caption_words=10), train=train)
    history = Trainer(run_config, data_dir, vocab, log=messages.append).fit()
    assert any("No val split" in m for m in messages)
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isnan(h["val_cider_d"]) for h in history)
    assert os.path.exists(tmp_path / "run" / "best.weights.h5")


def test_a_resumed_trainer_restores_every_model_and_optimizer_variable(tiny_shapes, tmp_path):
    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12, **TINY_MODEL)
    train = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, steps_per_epoch=2, warmup_steps=2,
                        jit_compile=False, val_images=4)
    run_config = RunConfig(model=config, data=DataConfig(max_caption_words=10), train=train)
    first = Trainer(run_config, tiny_shapes, vocab, log=lambda *_: None)
    first.fit()
    second = Trainer(run_config, tiny_shapes, vocab, log=lambda *_: None)
    second.checkpoint.restore(second.manager.latest_checkpoint).assert_existing_objects_matched()
    assert len(first.model.variables) > 50  # the stem, every encoder and decoder layer, the head
    for before, after in zip(first.model.variables + first.optimizer.variables,
                             second.model.variables + second.optimizer.variables):
        # The optimizer's own name differs ("adam", then "adam_1"); the rest of the path must not.
        assert before.path.split("/", 1)[-1] == after.path.split("/", 1)[-1]
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after), err_msg=before.path)
    assert int(second.optimizer.iterations) == 2 and int(second.state.epoch.numpy()) == 1


def test_the_trainer_leaves_its_callers_config_as_it_was(tiny_shapes, tmp_path):
    """What the run fixes (here the precision "auto" resolves to) is in `trainer.run_config` and config.json,
    not written into the caller's RunConfig."""
    import copy

    from tfcaption.config import DataConfig, RunConfig, TrainConfig
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.evaluation import training_captions
    from tfcaption.models.config import CaptionerConfig
    from tfcaption.training.trainer import Trainer

    vocab = Vocabulary.build(training_captions(tiny_shapes))
    config = CaptionerConfig.from_preset("small", vocab_size=vocab.size, max_length=12,
                                         **{**TINY_MODEL, "dtype_policy": "auto"})
    train = TrainConfig(output_dir=str(tmp_path / "run"), epochs=1, batch_size=8, steps_per_epoch=2, jit_compile=False)
    run_config = RunConfig(model=config, data=DataConfig(max_caption_words=10), train=train)
    before = copy.deepcopy(run_config)
    trainer = Trainer(run_config, tiny_shapes, vocab, log=lambda *_: None)
    assert run_config == before and run_config.model.dtype_policy == "auto"
    assert trainer.run_config.model.dtype_policy in ("float32", "mixed_bfloat16")
    assert RunConfig.load(trainer.run.config) == trainer.run_config
