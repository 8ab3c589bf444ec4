"""The teacher-forced ("xe") training step under a tf.distribute strategy, and the validation loss step.

On one device the whole step (loss, gradients and the optimizers' update) is one XLA cluster. Under several
replicas each replica's loss and gradients are compiled, scaled so the optimizers' cross-replica sum is the
global token mean; the update does a cross-replica reduction, which stays outside the compiled cluster.
"""

import tensorflow as tf

from tfcaption.data.pipeline import decoder_inputs
from tfcaption.training.losses import masked_cross_entropy
from tfcaption.training.strategy import is_single_device


def _inputs(model, batch, pad_id):
    return {model.input_key: batch[model.input_key], **decoder_inputs(batch["tokens"], pad_id)}


def make_xe_step(model, optimizers, strategy, label_smoothing=0.0, jit_compile=True, *, pad_id):
    """`step(batch) -> (loss, token count)`: one optimizer update on a batch of (image, caption) rows.

    Args:
        model: the `CaptionerBackbone`.
        optimizers: the run's `Optimizers` (`scale_loss`, `apply`).
        strategy: the tf.distribute strategy the variables live in.
        label_smoothing: as `masked_cross_entropy`.
        jit_compile: XLA-compile the step (one device) or each replica's gradients (several).
        pad_id: the tokenizer's padding id: padded inputs are masked and padded targets carry no loss.
    """

    def loss_and_grads(batch, global_tokens):
        tokens = batch["tokens"]
        with tf.GradientTape() as tape:
            logits = model(_inputs(model, batch, pad_id), training=True)
            loss_sum, count = masked_cross_entropy(tokens[..., 1:], logits, pad_id, label_smoothing)
            loss = loss_sum / global_tokens
            scaled_loss = optimizers.scale_loss(loss)
        grads = tape.gradient(scaled_loss, model.trainable_variables)
        return loss, count, grads

    def tokens_of(batch):
        return tf.reduce_sum(tf.cast(tf.not_equal(batch["tokens"][..., 1:], pad_id), tf.float32))

    if is_single_device(strategy):
        @tf.function(jit_compile=jit_compile)
        def single_step(batch):
            loss, count, grads = loss_and_grads(batch, tokens_of(batch))
            optimizers.apply(grads)
            return loss, count

        return single_step

    grads_fn = tf.function(loss_and_grads, jit_compile=jit_compile)

    def replica_step(batch):
        context = tf.distribute.get_replica_context()
        global_tokens = context.all_reduce(tf.distribute.ReduceOp.SUM, tokens_of(batch))
        loss, count, grads = grads_fn(batch, global_tokens)
        optimizers.apply(grads)
        return loss, count

    @tf.function
    def distributed_step(batch):
        loss, count = strategy.run(replica_step, args=(batch,))
        reduce = tf.distribute.ReduceOp.SUM
        return strategy.reduce(reduce, loss, axis=None), strategy.reduce(reduce, count, axis=None)

    return distributed_step


def make_eval_step(model, jit_compile=True, *, pad_id):
    """`eval_step(batch) -> (loss sum, token count)`, teacher forced, without label smoothing; `pad_id` as
    `make_xe_step`'s."""

    def eval_loss(batch):
        logits = model(_inputs(model, batch, pad_id), training=False)
        return masked_cross_entropy(batch["tokens"][..., 1:], logits, pad_id)

    return tf.function(eval_loss, jit_compile=jit_compile)
