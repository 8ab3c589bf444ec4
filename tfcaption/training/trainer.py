"""The training engine: a run's phases and epochs, put together from the pieces of `tfcaption.training`.

```
Trainer.fit: resume (checkpoints) -> phases (phases) -> epochs:
  loop.train_steps (xe.make_xe_step | scst.ScstStep under the strategy, XLA; batches.TrainBatches)
    hooks after each step: budget.Calibration (time budget), checkpoints.StepSaves (every N steps, SIGTERM)
  -> validation (loss, CIDEr-D, best weights, early stopping) -> summaries (TensorBoard) -> outputs (history)
```
"""

import keras
import tensorflow as tf

from tfcaption.data import pipeline
from tfcaption.data.records import input_kind, load_manifest
from tfcaption.models.captioner_backbone import CaptionerBackbone
from tfcaption.models.pretrained import load_pretrained, with_checkpoint_sizes
from tfcaption.training.batches import TrainBatches
from tfcaption.training.budget import BudgetPlan, Calibration, measures_rate, on_plan, plan_run
from tfcaption.training.checkpoints import Checkpoints, StepSaves
from tfcaption.training.interruption import stop_requests
from tfcaption.training.loop import NonFiniteLossError, train_steps
from tfcaption.training.losses import masked_cross_entropy
from tfcaption.training.optimizers import Optimizers
from tfcaption.training.outputs import RunOutputs
from tfcaption.training.phases import epoch_name, learning_rate_schedule, phase_end
from tfcaption.training.precision import resolve_precision
from tfcaption.training.progress import EpochProgress
from tfcaption.training.run_directory import RunDirectory, load_run_weights, load_weights
from tfcaption.training.state import TrainingState
from tfcaption.training.strategy import is_chief, make_strategy, worker_task
from tfcaption.training.summaries import validation_examples, write_epoch
from tfcaption.training.validation import keep_best, validate
from tfcaption.training.xe import make_eval_step, make_xe_step

__all__ = ["NonFiniteLossError", "Trainer", "masked_cross_entropy"]


def check_training_data(manifest, data_dir):
    """Refuses a dataset without training captions, naming what its splits hold."""
    if not manifest.get("splits", {}).get("train", {}).get("captions"):
        splits = ", ".join(f"{k} ({v.get('captions', 0)} captions)" for k, v in manifest.get("splits", {}).items())
        raise ValueError(f"{data_dir} has no training captions (splits: {splits or 'none'}).")


class Trainer:
    """Training of a `CaptionerBackbone` under a tf.distribute strategy, in phases of one task each.

    A task is teacher-forced cross-entropy ("xe", `tfcaption.training.xe`) or self-critical sequence
    training ("scst", `tfcaption.training.scst`); `train.phases` lists them (one phase of the `train`
    section's own fields by default). One loop (`tfcaption.training.loop`) serves every strategy and task:
    each replica computes its gradients (XLA-compiled when `jit_compile`), scaled so the Keras optimizer's
    cross-replica sum is the global mean; on a single device the whole step, optimizer update included, is
    one XLA cluster. Every epoch it logs to TensorBoard, measures validation loss and CIDEr-D (greedy), and
    keeps the best weights by CIDEr-D; a phase ends after its epochs or `early_stopping_patience` epochs
    without improvement, and the next phase starts from the best weights with a fresh optimizer.
    Checkpoints (model, optimizers, the phase, the epoch and the step inside it) are saved every
    `checkpoint_every_steps`, at each epoch's end and on SIGTERM / SIGINT; a rerun resumes at the next
    batch of the same epoch order. A NaN or infinite loss stops training, keeping the last checkpoint.
    Under MultiWorkerMirroredStrategy every worker runs this loop and only the chief writes the run
    directory (checkpoints, TensorBoard, best weights); the others write their checkpoints to a temporary
    directory (saving is collective) and restore the chief's, so the run directory must be one shared path.

    The caller's `run_config` is not changed: `self.run_config` is the run's, with what the run fixed (a
    pretrained backbone's sizes, the resolved precision), as config.json records it.

    Args:
        run_config: a `RunConfig`.
        data_dir: a prepared dataset directory (records + manifest).
        vocab: the `Vocabulary`.
        strategy: a tf.distribute strategy; default from `run_config.train.strategy`.
        log: a print-like function for progress lines.
    """

    def __init__(self, run_config, data_dir, vocab, strategy=None, log=print):
        self.phases = run_config.train.phase_configs()
        self.config = self.phases[0]  # the phase in progress (`_enter_phase`)
        self.data_dir, self.vocab, self.log = data_dir, vocab, log
        self.manifest = load_manifest(data_dir)
        check_training_data(self.manifest, data_dir)
        if self.config.deterministic:  # before any weight or dataset exists
            keras.utils.set_random_seed(self.config.seed)
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or make_strategy(self.config.strategy)
        self.chief = is_chief(self.strategy)
        self.run = RunDirectory(self.config.output_dir)
        self.run_config = self._resolve(run_config)
        self.model_config, self.data_config = self.run_config.model, self.run_config.data
        self.decode_config = self.run_config.decode
        self.outputs = RunOutputs(self.run, self.run_config, vocab, self.strategy, self.chief)
        self.best_weights = self.outputs.best_weights

        with self.strategy.scope():
            self.model = CaptionerBackbone.from_model_config(self.model_config)
            self.image_size = self.model.image_encoder.image_size  # what the pipeline resizes to (None: features)
            self.batches = TrainBatches(data_dir, self.manifest, vocab, self.data_config, self.strategy,
                                        self.image_size, self.model.image_encoder.resample)
            self.optimizers = Optimizers(self.model, self.config, self._schedule, self.loss_scaling)
            self.state = TrainingState()
        self.model.check_inputs(input_kind(self.manifest), data_dir)
        self.checkpoints = Checkpoints(self.model, self.optimizers, self.state, self.run.checkpoints, self.chief,
                                       self.outputs.worker_dir)
        self._eval_step = make_eval_step(self.model, self.config.jit_compile, pad_id=vocab.pad_id)
        self._scst_reward = None
        self.budget_plan = None  # set by a time budget's measurement, or read back from budget.json
        self._enter_phase(0)

    def _resolve(self, run_config):
        """A copy of `run_config` with what this run fixes: a new run's pretrained backbone sizes, read from its
        file (after tfcaption.train's resolve_run a ViT's are set and this returns at once; a fine-tuned run's
        model comes from its start run, whose backbone file need not be here), and the precision."""
        model = run_config.model
        if not self.run.exists() and not self.config.init_from:
            model = with_checkpoint_sizes(model)
        model, self.loss_scaling = resolve_precision(model, self.strategy, self.config.batch_size,
                                                     run_config.data.max_tokens, self.log)
        return run_config.replace(model=model)

    # ---- the parts tests and callers reach -------------------------------------------------------

    @property
    def optimizer(self):
        return self.optimizers.main

    @property
    def backbone_optimizer(self):
        return self.optimizers.backbone

    @property
    def checkpoint(self):
        return self.checkpoints.checkpoint

    @property
    def manager(self):
        return self.checkpoints.manager

    def steps_per_epoch(self):
        return self.batches.steps_per_epoch(self.config)

    def _train_batches(self, epoch):
        return self.batches.dataset(self.config, epoch)

    def _epoch_batches(self, epoch, start):
        return self.batches.epoch_batches(self.config, epoch, start)

    def _global_batch(self):
        return self.batches.global_batch(self.config)

    # ---- phases ----------------------------------------------------------------------------------

    def _schedule(self, multiplier=1.0):
        return learning_rate_schedule(self.config, self.model_config.hidden_dim, self.steps_per_epoch(), multiplier)

    def _enter_phase(self, index):
        """Makes phase `index` the one in progress: its config, learning-rate schedules and step functions
        (the optimizers' state is the caller's: restored, or reset by `_next_phase`)."""
        self.config = self.phases[index]
        self.optimizers.set_schedule(self._schedule)
        self.scst = self._scst_step() if self.config.task == "scst" else None
        self._train_step = None if self.scst is not None else make_xe_step(
            self.model, self.optimizers, self.strategy, self.config.label_smoothing, self.config.jit_compile,
            pad_id=self.vocab.pad_id)

    def _scst_step(self):
        from tfcaption.evaluation import training_captions
        from tfcaption.training.scst import ScstReward, ScstStep

        c = self.config
        if isinstance(self.strategy, tf.distribute.TPUStrategy):
            raise ValueError("train.task='scst' does not run under TPUStrategy: its batches carry the reference "
                             "captions as strings, which TPU devices cannot hold; run SCST on CPUs or GPUs.")
        key = (c.scst_include_eos, c.scst_bleu_weight)
        if self._scst_reward is None or self._scst_reward[0] != key:  # the document frequencies, once
            self._scst_reward = key, ScstReward(training_captions(self.data_dir), include_eos=c.scst_include_eos,
                                                bleu_weight=c.scst_bleu_weight)
        return ScstStep(self.model, self.optimizers.apply, self._scst_reward[1], c.scst_samples, c.scst_sampling,
                        self.data_config.max_decode_steps, c.jit_compile, c.seed, vocab=self.vocab,
                        strategy=self.strategy, iterations=self.state.scst_iterations,
                        scale_loss=self.optimizers.scale_loss)

    def _phase_end(self):
        return phase_end(self.config, self.state)

    def _next_phase(self, reason):
        """M2's switch: the next phase starts from the best weights so far, with fresh optimizers."""
        done = self.config.task
        self.state.start_phase()
        if tf.io.gfile.exists(self.best_weights):
            load_weights(self.model, self.best_weights)
        self.optimizers.reset()
        self._enter_phase(int(self.state.phase.numpy()))
        best_cider = float(self.state.best_cider.numpy())
        best = f" (val CIDEr-D {best_cider:.3f})" if best_cider >= 0 else ""
        self.log(f"Phase {int(self.state.phase.numpy()) + 1}/{len(self.phases)}: {self.config.task.upper()}, from "
                 f"the best weights{best}; {done.upper()} ended after "
                 f"{'its epochs' if reason == 'epochs' else reason}.")
        self.checkpoints.save()

    # ---- the run ---------------------------------------------------------------------------------

    def fit(self):
        """Trains until `epochs` or early stopping; resumes from the last checkpoint, at the step it holds.

        Returns the per-epoch history of this call (a list of dicts).

        Raises:
            TrainingInterrupted: SIGTERM or SIGINT arrived; a checkpoint of the position was saved first.
            NonFiniteLossError: a step's loss was NaN or infinite; the last good checkpoint is kept.
        """
        latest = self._start()
        has_val = bool(self.manifest["splits"].get("val", {}).get("images"))
        if not has_val:
            self.log(f"No val split in {self.data_dir}: no validation, no early stopping; the last epoch's "
                     "weights are kept as the best.")
        history = []
        writer = self.outputs.summary_writer()
        if len(self.phases) > 1 and not latest:
            self.log(f"Phase 1/{len(self.phases)}: {self.config.task.upper()}")
        with stop_requests() as stop:
            while True:
                ended = self._phase_end()
                if ended:
                    if int(self.state.phase.numpy()) + 1 == len(self.phases):
                        if ended != "epochs":
                            self.log(f"Early stopping: {ended}.")
                        break
                    self._next_phase(ended)
                    continue
                history.append(self._epoch(int(self.state.epoch.numpy()), stop, has_val, writer))
        if tf.io.gfile.exists(self.best_weights):
            load_weights(self.model, self.best_weights)
        self.outputs.close()
        return history

    def _start(self):
        """Resumes from the last checkpoint (and a time budget's plan), or loads the starting weights;
        returns the checkpoint resumed from (None: a new run)."""
        latest = self.checkpoints.latest
        if self.config.time_budget_minutes and tf.io.gfile.exists(self.run.budget):
            self._follow_budget(BudgetPlan.load(self.run.budget))  # measured by this run before it stopped
        if latest:
            self.checkpoints.restore(latest)
            self._enter_phase(int(self.state.phase.numpy()))
            step, epoch = int(self.state.step_in_epoch.numpy()), int(self.state.epoch.numpy())
            position = f", {step} steps into epoch {epoch + 1}" if step else ""
            phase = (f" of phase {int(self.state.phase.numpy()) + 1} ({self.config.task.upper()})"
                     if len(self.phases) > 1 else "")
            self.log(f"Resuming from {latest} (epoch {epoch} done{position}{phase}).")
        elif self.config.init_from:  # fine-tuning: another run's weights (its model config is this one's)
            self.log(f"Initialised from {load_run_weights(self.model, self.config.init_from)}.")
        else:  # from scratch: the pretrained backbone's weights (a resumed run restored its own)
            loaded = load_pretrained(self.model)
            if loaded:
                self.log(f"Image encoder: {loaded}.")
        if not latest and not self.manifest.get("images_checked"):  # tfcaption-prepare decoded every image
            undecodable, ids = pipeline.count_undecodable(self.data_dir, "train")
            if undecodable:
                self.log(f"train: {undecodable} undecodable image(s) will be skipped (e.g. {', '.join(ids[:3])}).")
        return latest

    def _take_step(self, batch):
        """One training step: (loss, count) for XE, (loss, 1, reward, baseline) for SCST (python floats)."""
        if self.scst is not None:
            result = self.scst.step(batch)
            return result["loss"], 1.0, result["reward"], result["baseline"]
        return tuple(float(x) for x in self._train_step(batch))

    def _epoch(self, epoch, stop, has_val, writer):
        """Trains, validates, keeps the best weights, checkpoints and logs one epoch; returns its record."""
        state, name = self.state, epoch_name(self.config, len(self.phases))
        start = int(state.step_in_epoch.numpy())
        if not start:
            self.log(f"{name[0].upper()}{name[1:]} {int(state.phase_epoch.numpy()) + 1}/{self.config.epochs}")
        steps = self.steps_per_epoch()
        progress = EpochProgress(int(state.phase_epoch.numpy()) + 1, self.config.epochs, steps, self._global_batch(),
                                 start, self.log, interval=self.config.log_every_seconds, name=name)
        hooks = [StepSaves(self.checkpoints, stop, epoch, self.config.checkpoint_every_steps)]
        if measures_rate(self.config, self.budget_plan, state, steps):
            hooks.insert(0, Calibration(start, self._agreed, self._plan_budget))
        train_seconds, steps_run = train_steps(
            self._take_step, self._epoch_batches(epoch, start), state, epoch, steps, progress,
            lambda: float(self.optimizer.learning_rate), lambda: self.checkpoints.latest, hooks)
        train_loss = state.mean_loss()
        if has_val:
            val_loss, val_cider, samples = validate(
                self.model, self.vocab, self.data_dir, self._eval_step, self.data_config, self.decode_config,
                self.image_size, self.config.jit_compile, self.config.val_images, self.model.image_encoder.resample)
            val_cider = self._agreed(val_cider)  # every worker takes the same decisions from it
        else:
            val_loss = val_cider = float("nan")
            samples = []
        improved = keep_best(state, val_cider, has_val, self.model, self.best_weights)
        scst = state.scst_means() if self.scst is not None else {}
        state.end_epoch()
        self.checkpoints.save()
        record = {
            "epoch": epoch + 1,
            "phase": int(state.phase.numpy()) + 1,
            "task": self.config.task,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_cider_d": val_cider,
            "seconds": train_seconds,
            "examples_per_second": steps_run * self._global_batch() / max(train_seconds, 1e-9),
            "best": improved,
            **scst,
        }
        examples = None
        if self.chief:  # the figures cost a little; only the chief's writer keeps them
            examples = validation_examples(self.model, self.vocab, samples, self.data_dir,
                                           self.config.tensorboard_images)
        write_epoch(writer, record, examples)
        self.log(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
            f"val CIDEr-D {val_cider:.3f}{' (best)' if improved else ''}, "
            + (f"SCST reward {scst['reward']:.3f} (baseline {scst['baseline']:.3f}), " if scst else "")
            + f"{record['examples_per_second']:.0f} pairs/s" + (f"; e.g. {samples[0]['caption']!r}" if samples else "")
        )
        self.outputs.append_history(record)
        return record

    # ---- a time budget ---------------------------------------------------------------------------

    def _plan_budget(self, elapsed, steps_done, seconds_per_step, steps):
        """Sizes the run from the measured rate (`tfcaption.training.budget.plan_run`), records the plan and,
        when it shortens the epochs, rebuilds the schedule and the step; returns this epoch's new length."""
        c = self.config
        plan = plan_run(c.time_budget_minutes, elapsed, steps_done, seconds_per_step, c.epochs, steps, c.warmup_steps)
        self.log(plan.describe(c.epochs))
        if self.chief:
            plan.save(self.run.budget)
        self._follow_budget(plan)
        return self.steps_per_epoch()

    def _follow_budget(self, plan):
        """Makes the first phase's epochs the plan's length (and its warm-up the plan's)."""
        self.budget_plan = plan
        planned = on_plan(self.phases[0], plan)
        if planned is not self.phases[0]:
            self.phases[0] = planned
            if int(self.state.phase.numpy()) == 0:
                self._enter_phase(0)

    def _agreed(self, value):
        """`value` averaged over the workers of a multi-worker run (an all-reduce), so that validation
        decisions (best weights, the phase's end) are the same on every worker; `value` elsewhere."""
        if worker_task(self.strategy)[0] is None:
            return value
        per_replica = self.strategy.run(lambda: tf.constant(value, tf.float32))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))
