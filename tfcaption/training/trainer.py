"""The training engine: a custom `strategy.run` loop with XLA, checkpoints and early stopping."""

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from tfcaption.data import pipeline
from tfcaption.data.records import input_kind, load_manifest
from tfcaption.decoding.captioning import caption_batches
from tfcaption.metrics.cider import CiderD
from tfcaption.models.captioner import Captioner
from tfcaption.models.pretrained import load_pretrained, with_checkpoint_sizes
from tfcaption.training.budget import CALIBRATION_STEPS, BudgetPlan, plan_run
from tfcaption.training.interruption import TrainingInterrupted, stop_requests
from tfcaption.training.precision import choose_policy
from tfcaption.training.progress import EpochProgress
from tfcaption.training.run_directory import (
    RunDirectory, check_checkpoint_format, load_run_weights, load_weights, optimizer_variables, training_checkpoint,
)
from tfcaption.training.schedule import WarmupConstant, WarmupInverseSqrt, WarmupLinearDecay
from tfcaption.training.strategy import is_chief, is_single_device, make_strategy, worker_task
from tfcaption.training.summaries import validation_examples, write_validation_examples


def masked_cross_entropy(targets, logits, pad_id, label_smoothing=0.0):
    """Per-token cross-entropy with padding zeroed; returns (sum, token count)."""
    mask = tf.cast(tf.not_equal(targets, pad_id), tf.float32)
    logits = tf.cast(logits, tf.float32)
    if label_smoothing:
        labels = tf.one_hot(targets, tf.shape(logits)[-1])
        losses = tf.nn.softmax_cross_entropy_with_logits(
            labels * (1.0 - label_smoothing) + label_smoothing / tf.cast(tf.shape(logits)[-1], tf.float32), logits
        )
    else:
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
    return tf.reduce_sum(losses * mask), tf.reduce_sum(mask)


class NonFiniteLossError(ValueError):
    """A training step's loss was NaN or infinite (the message names the epoch and step)."""


class Trainer:
    """Training of a `Captioner` under a tf.distribute strategy, in phases of one task each.

    A task is teacher-forced cross-entropy ("xe") or self-critical sequence
    training ("scst", `tfcaption.training.scst`); `train.phases` lists them (one
    phase of the `train` section's own fields by default). One loop serves every
    strategy and task: each replica computes its gradients (XLA-compiled when
    `jit_compile`), scaled so the Keras optimizer's cross-replica sum is the
    global mean; on a single device the whole step, optimizer update included,
    is one XLA cluster. Every epoch it logs to TensorBoard, measures validation
    loss and CIDEr-D (greedy), and keeps the best weights by CIDEr-D; a phase
    ends after its epochs or `early_stopping_patience` epochs without
    improvement, and the next phase starts from the best weights with a fresh
    optimizer. Checkpoints (model, optimizers, the phase, the epoch and the
    step inside it) are saved every `checkpoint_every_steps`, at each epoch's
    end and on SIGTERM / SIGINT; a rerun resumes at the next batch of the same
    epoch order. A NaN or infinite loss stops training, keeping the last
    checkpoint. Under MultiWorkerMirroredStrategy every worker runs this loop
    and only the chief writes the run directory (checkpoints, TensorBoard,
    best weights); the others write their checkpoints to a temporary directory
    (saving is collective) and restore the chief's, so the run directory must be
    one shared path.

    Args:
        run_config: a `RunConfig`.
        data_dir: a prepared dataset directory (records + manifest).
        vocab: the `Vocabulary`.
        strategy: a tf.distribute strategy; default from `run_config.train.strategy`.
        log: a print-like function for progress lines.
    """

    def __init__(self, run_config, data_dir, vocab, strategy=None, log=print):
        self.run_config = run_config
        self.phases = run_config.train.phase_configs()
        self.config = self.phases[0]  # the phase in progress (`_enter_phase`)
        self.model_config = run_config.model
        self.data_config = run_config.data
        self.decode_config = run_config.decode
        self.data_dir = data_dir
        self.vocab = vocab
        self.log = log
        self.manifest = load_manifest(data_dir)
        if not self.manifest.get("splits", {}).get("train", {}).get("captions"):
            splits = ", ".join(f"{k} ({v.get('captions', 0)} captions)" for k, v in self.manifest.get("splits", {}).items())
            raise ValueError(f"{data_dir} has no training captions (splits: {splits or 'none'}).")
        if self.config.deterministic:  # before any weight or dataset exists
            keras.utils.set_random_seed(self.config.seed)
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or make_strategy(self.config.strategy)
        self.chief = is_chief(self.strategy)
        self.run = RunDirectory(self.config.output_dir)
        if not self.run.exists() and not self.config.init_from:
            # A new run records the pretrained backbone's sizes, read from its file (after tfcaption.train's
            # resolve_run a ViT's sizes are set and this returns at once; a CNN's file is found again in
            # Keras's cache). A fine-tuned run's model and weights come from its start run, whose backbone
            # file need not be on this machine.
            run_config.model = self.model_config = with_checkpoint_sizes(self.model_config)
        precision = choose_policy(self.model_config.dtype_policy, self.strategy,
                                  rows=self.config.batch_size * self.data_config.max_tokens,
                                  hidden_dim=self.model_config.hidden_dim,
                                  intermediate_dim=self.model_config.intermediate_dim)
        run_config.model = self.model_config = self.model_config.replace(dtype_policy=precision.policy)
        self.log(f"Precision: {precision.describe()}")
        # float16's narrow range needs the loss scaled up (and steps whose gradients overflow skipped)
        self.loss_scaling = precision.policy == "mixed_float16"
        if self.chief:
            tf.io.gfile.makedirs(self.run.path)
            run_config.save(self.run.config)
            vocab.save(self.run.vocab)
            self.best_weights = self.run.best_weights
        else:  # another worker: its own copies, deleted after each save
            self.worker_dir = tempfile.mkdtemp(prefix=f"tfcaption-worker{worker_task(self.strategy)[1]}-")
            self.best_weights = os.path.join(self.worker_dir, "best.weights.h5")

        with self.strategy.scope():
            self.model = Captioner(self.model_config)
            self.optimizer, self.backbone_optimizer, self._groups = self._optimizers()
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")  # all phases'
            self.phase = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase")
            self.phase_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="phase_epoch")
            # SCST's sampling seed counter, so a resumed run draws new samples, not the ones it drew before
            self.scst_iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="scst_iterations")
            self.best_cider = tf.Variable(-1.0, dtype=tf.float32, trainable=False, name="best_cider")
            self.epochs_without_improvement = tf.Variable(0, dtype=tf.int64, trainable=False)
            # The position inside the epoch in progress, so a resumed run continues at the next batch.
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
            self.epoch_loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_loss_sum")
            self.epoch_token_count = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_token_count")
            self.epoch_reward_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_reward_sum")
            self.epoch_baseline_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_baseline_sum")
        self.image_size = self.model.image_encoder.image_size  # what the pipeline resizes to (None: features)
        self.model.check_inputs(input_kind(self.manifest), data_dir)
        backbone_state = ({} if self.backbone_optimizer is None
                          else {"backbone_optimizer_state": optimizer_variables(self.backbone_optimizer)})
        self._progress_variables = dict(
            epoch=self.epoch,
            phase=self.phase,
            phase_epoch=self.phase_epoch,
            scst_iterations=self.scst_iterations,
            best_cider=self.best_cider,
            epochs_without_improvement=self.epochs_without_improvement,
            step_in_epoch=self.step_in_epoch,
            epoch_loss_sum=self.epoch_loss_sum,
            epoch_token_count=self.epoch_token_count,
            epoch_reward_sum=self.epoch_reward_sum,
            epoch_baseline_sum=self.epoch_baseline_sum,
        )
        # One layout for every phase: the optimizers persist (reset when a phase starts), SCST's counter too.
        self._checkpoint_parts = {**backbone_state, **self._progress_variables}
        self.checkpoint = training_checkpoint(self.model, self.optimizer, **self._checkpoint_parts)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.run.checkpoints, max_to_keep=2)
        self._eval_step = tf.function(self._eval_loss, jit_compile=self.config.jit_compile)
        self._scst_reward = None
        self.budget_plan = None  # set by a time budget's measurement, or read back from budget.json
        self._enter_phase(0)

    def _enter_phase(self, index):
        """Makes phase `index` the one in progress: its config, learning-rate schedules and step functions
        (the optimizers' state is the caller's: restored, or reset by `_next_phase`)."""
        self.config = self.phases[index]
        self.optimizer.learning_rate = self._schedule()
        if self.backbone_optimizer is not None:
            self.backbone_optimizer.learning_rate = self._schedule(self.model_config.image_encoder.backbone_lr_multiplier)
        self.scst = self._scst_step() if self.config.task == "scst" else None
        self._train_step = None if self.scst is not None else self._make_train_step()

    def _schedule(self, multiplier=1.0):
        c, d = self.config, self.model_config.hidden_dim
        if c.task == "scst":  # a fine-tuning stage: M2's constant rate
            return WarmupConstant(c.scst_learning_rate * multiplier, 0)
        scale = c.learning_rate_scale * multiplier
        if c.learning_rate_schedule == "noam":
            return WarmupInverseSqrt(d, c.warmup_steps, scale)
        if c.learning_rate_schedule == "linear":
            return WarmupLinearDecay(d, c.warmup_steps, c.epochs * self.steps_per_epoch(), scale)
        if c.learning_rate_schedule == "constant":
            return WarmupConstant(c.learning_rate * multiplier, c.warmup_steps)
        raise ValueError(f"learning_rate_schedule must be 'linear', 'noam' or 'constant', got "
                         f"{c.learning_rate_schedule!r}.")

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
        return ScstStep(self.model, self._apply, self._scst_reward[1], c.scst_samples, c.scst_sampling,
                        self.data_config.max_decode_steps, c.jit_compile, c.seed, vocab=self.vocab,
                        strategy=self.strategy, iterations=self.scst_iterations, scale_loss=self._scale_loss)

    def _captions_per_image(self):
        """Captions an image gives per step: SCST's samples, or XE's `captions_per_image` (1: pairs)."""
        return self.config.scst_samples if self.config.task == "scst" else self.config.captions_per_image

    def _images_per_batch(self):
        """Images per step when an image comes with several captions (M2's SCST: 50 // 5 = 10)."""
        return max(1, self.config.batch_size // self._captions_per_image())

    def _adam(self, schedule):
        c = self.config
        adam = keras.optimizers.Adam(schedule, c.adam_beta_1, c.adam_beta_2, c.adam_epsilon)
        return keras.optimizers.LossScaleOptimizer(adam) if self.loss_scaling else adam

    def _scale_loss(self, loss):
        """The loss the gradients are taken of: scaled by the dynamic loss scale under mixed_float16 (the
        optimizers divide it out, and skip a step whose gradients overflowed while halving the scale)."""
        return self.optimizer.scale_loss(loss) if self.loss_scaling else loss

    def _optimizers(self):
        """Adam for the model and, when the backbone's learning rate is scaled, a second Adam for the
        backbone's variables; `groups` = (optimizer, indices into trainable_variables) for each."""
        variables = self.model.trainable_variables
        multiplier = getattr(self.model_config.image_encoder, "backbone_lr_multiplier", 1.0)
        backbone = {id(v) for v in getattr(self.model.image_encoder, "backbone_variables", [])}
        optimizer, backbone_optimizer = self._adam(self._schedule()), None
        if multiplier == 1.0 or not backbone:
            groups = [(optimizer, list(range(len(variables))))]
        else:
            backbone_optimizer = self._adam(self._schedule(multiplier))
            groups = [(optimizer, [i for i, v in enumerate(variables) if id(v) not in backbone]),
                      (backbone_optimizer, [i for i, v in enumerate(variables) if id(v) in backbone])]
        for opt, indices in groups:
            opt.build([variables[i] for i in indices])
        return optimizer, backbone_optimizer, groups

    def _apply(self, grads):
        variables = self.model.trainable_variables
        if self.loss_scaling and len(self._groups) > 1:
            # One skip decision for both optimizers, so their loss scales stay equal: gradients that overflowed
            # anywhere are made non-finite everywhere.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
            poison = tf.where(finite, 1.0, float("nan"))
            grads = [None if g is None else g * tf.cast(poison, g.dtype) for g in grads]
        for optimizer, indices in self._groups:
            optimizer.apply([grads[i] for i in indices], [variables[i] for i in indices])

    # ---- steps -------------------------------------------------------------------------------

    def _loss_and_grads(self, batch, global_tokens):
        tokens = batch["tokens"]
        with tf.GradientTape() as tape:
            logits = self.model({self.model.input_key: batch[self.model.input_key], "tokens": tokens[..., :-1]}, training=True)
            loss_sum, count = masked_cross_entropy(
                tokens[..., 1:], logits, self.model_config.pad_id, self.config.label_smoothing
            )
            loss = loss_sum / global_tokens
            scaled_loss = self._scale_loss(loss)
        grads = tape.gradient(scaled_loss, self.model.trainable_variables)
        return loss, count, grads

    def _make_train_step(self):
        jit = self.config.jit_compile
        pad_id = self.model_config.pad_id

        if is_single_device(self.strategy):
            # One device: loss, gradients and the Adam update form one XLA cluster.
            @tf.function(jit_compile=jit)
            def single_step(batch):
                global_tokens = tf.reduce_sum(tf.cast(tf.not_equal(batch["tokens"][..., 1:], pad_id), tf.float32))
                loss, count, grads = self._loss_and_grads(batch, global_tokens)
                self._apply(grads)
                return loss, count

            return single_step

        # Several replicas: XLA per replica for the gradients; the update does a
        # cross-replica reduction, which stays outside the compiled cluster.
        grads_fn = tf.function(self._loss_and_grads, jit_compile=jit)

        def replica_step(batch):
            context = tf.distribute.get_replica_context()
            local_tokens = tf.reduce_sum(tf.cast(tf.not_equal(batch["tokens"][..., 1:], pad_id), tf.float32))
            global_tokens = context.all_reduce(tf.distribute.ReduceOp.SUM, local_tokens)
            loss, count, grads = grads_fn(batch, global_tokens)
            self._apply(grads)
            return loss, count

        @tf.function
        def distributed_step(batch):
            loss, count = self.strategy.run(replica_step, args=(batch,))
            reduce = tf.distribute.ReduceOp.SUM
            return self.strategy.reduce(reduce, loss, axis=None), self.strategy.reduce(reduce, count, axis=None)

        return distributed_step

    def _eval_loss(self, batch):
        tokens = batch["tokens"]
        logits = self.model({self.model.input_key: batch[self.model.input_key], "tokens": tokens[..., :-1]}, training=False)
        return masked_cross_entropy(tokens[..., 1:], logits, self.model_config.pad_id)

    # ---- data --------------------------------------------------------------------------------

    def _global_batch(self):
        """Captions per step: the batch, or images x their captions (SCST's samples, XE's captions_per_image)."""
        if self._captions_per_image() > 1:
            return self._images_per_batch() * self._captions_per_image()
        return self.config.batch_size

    def _train_batches(self, epoch):
        if self.scst is not None:  # per image, with all its references for the reward
            dataset = pipeline.image_batches(self.data_dir, "train", self._images_per_batch(), self.image_size,
                                             seed=self.config.seed + epoch, drop_remainder=True)
            if is_single_device(self.strategy):
                return dataset
        else:
            k = self.config.captions_per_image  # > 1: a batch of images, each with k captions
            dataset = pipeline.train_dataset(
                self.data_dir, "train", self.vocab, self._images_per_batch() if k > 1 else self.config.batch_size,
                self.data_config.max_caption_words, self.image_size, seed=self.config.seed + epoch,
                augment_flip=self.data_config.augment_flip, captions_per_image=k,
            )
        # Every worker reads the same seeded order and keeps its share of each batch (sharding by file would
        # need at least as many shards as workers).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def _epoch_batches(self, epoch, start):
        """The epoch's batches from step `start` on, exactly as an uninterrupted epoch sees them (the
        batches before `start` are read and dropped, so pass boundaries and seeds line up)."""
        iterator, step = iter(self._train_batches(epoch)), 0
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                # steps_per_epoch longer than one pass: start another pass with a fresh shuffle.
                iterator = iter(self._train_batches(epoch + 1000 * (step + 1)))
                try:
                    batch = next(iterator)
                except StopIteration:
                    raise ValueError(f"{self.data_dir}: the train split gives no full batch of "
                                     f"{self._global_batch()} (too few decodable pairs).") from None
            if step >= start:
                yield batch
            step += 1

    def steps_per_epoch(self):
        if self.config.steps_per_epoch:
            return self.config.steps_per_epoch
        if self._captions_per_image() > 1:  # one pass over the images
            return max(1, self.manifest["splits"]["train"]["images"] // self._images_per_batch())
        pairs = self.manifest["splits"]["train"]["captions"]
        return max(1, pairs // self._global_batch())

    # ---- loop --------------------------------------------------------------------------------

    def validate(self):
        """Validation loss (teacher forced) and CIDEr-D of greedy captions on the val split."""
        loss_sum, count = 0.0, 0.0
        batches = pipeline.train_dataset(
            self.data_dir, "val", self.vocab, self.decode_config.batch_size, self.data_config.max_caption_words,
            self.image_size, seed=0, augment_flip=False, drop_remainder=False, shuffle_buffer=1,
        )
        for batch in batches:
            s, c = self._eval_step(batch)
            loss_sum += float(s)
            count += float(c)
        results = caption_batches(
            self.model, self.vocab,
            pipeline.eval_dataset(self.data_dir, "val", self.decode_config.batch_size, self.image_size),
            beam_size=1, max_steps=self.data_config.max_decode_steps, jit_compile=self.config.jit_compile,
            limit=self.config.val_images or None, return_attention=True,  # for TensorBoard's figures
        )
        references = [r["references"] for r in results]
        cider, _ = CiderD(references).score([r["caption"] for r in results], references)
        return loss_sum / max(count, 1.0), float(cider), results

    def fit(self):
        """Trains until `epochs` or early stopping; resumes from the last checkpoint, at the step it holds.

        Returns the per-epoch history of this call (a list of dicts).

        Raises:
            TrainingInterrupted: SIGTERM or SIGINT arrived; a checkpoint of the position was saved first.
            NonFiniteLossError: a step's loss was NaN or infinite; the last good checkpoint is kept.
        """
        latest = self.manager.latest_checkpoint
        if self.config.time_budget_minutes and tf.io.gfile.exists(self.run.budget):
            self._follow_budget(BudgetPlan.load(self.run.budget))  # measured by this run before it stopped
        if latest:
            self._restore(latest)
            self._enter_phase(int(self.phase.numpy()))
            step = int(self.step_in_epoch.numpy())
            position = f", {step} steps into epoch {int(self.epoch.numpy()) + 1}" if step else ""
            phase = (f" of phase {int(self.phase.numpy()) + 1} ({self.config.task.upper()})"
                     if len(self.phases) > 1 else "")
            self.log(f"Resuming from {latest} (epoch {int(self.epoch.numpy())} done{position}{phase}).")
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
        has_val = bool(self.manifest["splits"].get("val", {}).get("images"))
        if not has_val:
            self.log(f"No val split in {self.data_dir}: no validation, no early stopping; the last epoch's "
                     "weights are kept as the best.")
        history = []
        writer = tf.summary.create_file_writer(self.run.logs) if self.chief else tf.summary.create_noop_writer()
        if len(self.phases) > 1 and not latest:
            self.log(f"Phase 1/{len(self.phases)}: {self.config.task.upper()}")
        with stop_requests() as stop:
            while True:
                ended = self._phase_end()
                if ended:
                    if int(self.phase.numpy()) + 1 == len(self.phases):
                        if ended != "epochs":
                            self.log(f"Early stopping: {ended}.")
                        break
                    self._next_phase(ended)
                    continue
                history.append(self._epoch(int(self.epoch.numpy()), self.steps_per_epoch(), stop, has_val, writer))
        if tf.io.gfile.exists(self.best_weights):
            load_weights(self.model, self.best_weights)
        if not self.chief:
            shutil.rmtree(self.worker_dir, ignore_errors=True)
        return history

    def _phase_end(self):
        """Why the phase in progress is over ("epochs", or the early-stopping reason), or "" when it is not."""
        if int(self.phase_epoch.numpy()) >= self.config.epochs:
            return "epochs"
        patience = self.config.early_stopping_patience
        if patience and int(self.epochs_without_improvement.numpy()) >= patience:
            return f"no validation CIDEr-D improvement for {patience} epochs"
        return ""

    def _next_phase(self, reason):
        """M2's switch: the next phase starts from the best weights so far, with fresh optimizers."""
        done = self.config.task
        self.phase.assign_add(1)
        self.phase_epoch.assign(0)
        self.epochs_without_improvement.assign(0)
        if tf.io.gfile.exists(self.best_weights):
            load_weights(self.model, self.best_weights)
        for optimizer in (self.optimizer, self.backbone_optimizer):
            # Adam's moments and step count; a loss scale carries over (it tracks float16's range, not the task)
            optimizer = getattr(optimizer, "inner_optimizer", optimizer)
            for variable in optimizer.variables if optimizer is not None else ():
                variable.assign(tf.zeros_like(variable))
        self._enter_phase(int(self.phase.numpy()))
        best = f" (val CIDEr-D {float(self.best_cider.numpy()):.3f})" if float(self.best_cider.numpy()) >= 0 else ""
        self.log(f"Phase {int(self.phase.numpy()) + 1}/{len(self.phases)}: {self.config.task.upper()}, from the best "
                 f"weights{best}; {done.upper()} ended after {'its epochs' if reason == 'epochs' else reason}.")
        self._save()

    def _restore(self, path):
        """Restores a training checkpoint; one written before a progress variable existed leaves it as is."""
        check_checkpoint_format(path)
        names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
        missing = [key for key in self._progress_variables if not any(n.startswith(key + "/") for n in names)]
        if not missing:
            self.checkpoint.restore(path).assert_existing_objects_matched()
            return
        parts = {k: v for k, v in self._checkpoint_parts.items() if k not in missing}
        training_checkpoint(self.model, self.optimizer, **parts).restore(path).assert_existing_objects_matched()

    def _save(self):
        """A checkpoint: the chief's in the run directory; another worker's (saving is collective) deleted."""
        if self.chief:
            return self.manager.save()
        self.checkpoint.write(os.path.join(self.worker_dir, "checkpoint"))
        for name in tf.io.gfile.glob(os.path.join(self.worker_dir, "checkpoint*")):
            tf.io.gfile.remove(name)
        return self.manager.latest_checkpoint

    def _train_steps(self, epoch, steps, stop):
        """The epoch's remaining steps; returns (seconds, steps run). Saves a checkpoint every
        `checkpoint_every_steps` and, on a stop request, saves one and raises `TrainingInterrupted`."""
        start = int(self.step_in_epoch.numpy())
        progress = EpochProgress(int(self.phase_epoch.numpy()) + 1, self.config.epochs, steps, self._global_batch(),
                                 start, self.log, interval=self.config.log_every_seconds, name=self._epoch_name())
        every = self.config.checkpoint_every_steps
        started = time.time()
        calibrating = self._calibrating()
        batches = self._epoch_batches(epoch, start)
        step = start
        while step < steps:
            if self.scst is not None:
                result = self.scst.step(next(batches))
                loss, count = result["loss"], 1.0
                self.epoch_reward_sum.assign_add(result["reward"])
                self.epoch_baseline_sum.assign_add(result["baseline"])
            else:
                loss, count = (float(x) for x in self._train_step(next(batches)))
            if not (math.isfinite(loss) and math.isfinite(count)):
                raise NonFiniteLossError(
                    f"training stopped: the loss is {loss} at epoch {epoch + 1} step {step + 1} (batch {step + 1} of "
                    f"the epoch's seeded order); the last good checkpoint {self.manager.latest_checkpoint} is "
                    f"kept: lower the learning rate (train.learning_rate_scale) and rerun to resume from it.")
            self.epoch_loss_sum.assign_add(loss * count)  # the step's loss is its token mean
            self.epoch_token_count.assign_add(count)
            self.step_in_epoch.assign(step + 1)
            progress.update(step + 1, float(self.epoch_loss_sum.numpy() / max(self.epoch_token_count.numpy(), 1.0)),
                            float(self.optimizer.learning_rate))
            if calibrating and step == start:
                first_done = time.time()  # the compiling step is not a measure of the rate
            if calibrating and step == start + CALIBRATION_STEPS:
                seconds_per_step = self._agreed((time.time() - first_done) / CALIBRATION_STEPS)
                steps = self._plan_budget(time.time() - started, step + 1, seconds_per_step, steps)
                progress.resize(steps)
                calibrating = False
            if stop.requested:
                raise TrainingInterrupted(stop.signum, epoch, step + 1, self._save())
            if every and (step + 1) % every == 0 and step + 1 < steps:
                self._save()
            step += 1
        return time.time() - started, steps - start

    def _calibrating(self):
        """Whether this epoch measures the rate for a time budget: the first epoch of a budgeted run with no
        plan yet, long enough to measure."""
        return bool(self.config.time_budget_minutes and self.budget_plan is None and int(self.phase.numpy()) == 0
                    and int(self.phase_epoch.numpy()) == 0
                    and self.steps_per_epoch() > int(self.step_in_epoch.numpy()) + CALIBRATION_STEPS + 1)

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
        if plan.steps_per_epoch == plan.configured_steps_per_epoch:
            return
        self.phases[0] = dataclasses.replace(self.phases[0], steps_per_epoch=plan.steps_per_epoch,
                                             warmup_steps=plan.warmup_steps)
        if int(self.phase.numpy()) == 0:
            self._enter_phase(0)

    def _epoch(self, epoch, steps, stop, has_val, writer):
        """Trains, validates, keeps the best weights, checkpoints and logs one epoch; returns its record."""
        if not int(self.step_in_epoch.numpy()):
            name = self._epoch_name()
            self.log(f"{name[0].upper()}{name[1:]} {int(self.phase_epoch.numpy()) + 1}/{self.config.epochs}")
        train_seconds, steps_run = self._train_steps(epoch, steps, stop)
        train_loss = float(self.epoch_loss_sum.numpy() / max(self.epoch_token_count.numpy(), 1.0))
        if has_val:
            val_loss, val_cider, samples = self.validate()
            val_cider = self._agreed(val_cider)  # every worker takes the same decisions from it
            improved = val_cider > float(self.best_cider.numpy())
        else:
            val_loss = val_cider = float("nan")
            samples, improved = [], True
        if improved:
            if has_val:
                self.best_cider.assign(val_cider)
            self.epochs_without_improvement.assign(0)
            self.model.save_weights(self.best_weights)
        else:
            self.epochs_without_improvement.assign_add(1)
        self.epoch.assign_add(1)
        self.phase_epoch.assign_add(1)
        steps_done = max(int(self.step_in_epoch.numpy()), 1)
        scst = {"reward": float(self.epoch_reward_sum.numpy()) / steps_done,
                "baseline": float(self.epoch_baseline_sum.numpy()) / steps_done} if self.scst is not None else {}
        for position in (self.step_in_epoch, self.epoch_loss_sum, self.epoch_token_count, self.epoch_reward_sum,
                         self.epoch_baseline_sum):
            position.assign(tf.zeros_like(position))
        self._save()
        record = {
            "epoch": epoch + 1,
            "phase": int(self.phase.numpy()) + 1,
            "task": self.config.task,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_cider_d": val_cider,
            "seconds": train_seconds,
            "examples_per_second": steps_run * self._global_batch() / max(train_seconds, 1e-9),
            "best": improved,
            **scst,
        }
        with writer.as_default(step=epoch + 1):
            for key in ("train_loss", "val_loss", "val_cider_d", "examples_per_second", "reward", "baseline"):
                if key in record:
                    tf.summary.scalar(f"scst_{key}" if key in scst else key, record[key])
            if self.chief:  # the figures cost a little; only the chief's writer keeps them
                write_validation_examples(validation_examples(
                    self.model, self.vocab, samples, self.data_dir, self.config.tensorboard_images), epoch + 1)
        writer.flush()
        self.log(
            f"epoch {epoch + 1}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
            f"val CIDEr-D {val_cider:.3f}{' (best)' if improved else ''}, "
            + (f"SCST reward {scst['reward']:.3f} (baseline {scst['baseline']:.3f}), " if scst else "")
            + f"{record['examples_per_second']:.0f} pairs/s" + (f"; e.g. {samples[0]['caption']!r}" if samples else "")
        )
        self._append_history(record)
        return record

    def _epoch_name(self):
        return f"{self.config.task.upper()} epoch" if len(self.phases) > 1 else "epoch"

    def _agreed(self, value):
        """`value` averaged over the workers of a multi-worker run (an all-reduce), so that validation
        decisions (best weights, the phase's end) are the same on every worker; `value` elsewhere."""
        if worker_task(self.strategy)[0] is None:
            return value
        per_replica = self.strategy.run(lambda: tf.constant(value, tf.float32))
        return float(self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None))

    def _append_history(self, record):
        if not self.chief:
            return
        path = self.run.join("history.jsonl")
        with tf.io.gfile.GFile(path, "a") as f:
            f.write(json.dumps(record) + "\n")
