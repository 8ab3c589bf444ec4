"""A run's optimizers: Adam for the model and, when the backbone's learning rate is scaled, a second Adam for
the backbone's variables; under mixed_float16 both are wrapped for dynamic loss scaling."""

import keras
import tensorflow as tf

from tfcaption.training.run_directory import optimizer_variables


class Optimizers:
    """The optimizers of one run, built for the model's trainable variables.

    Args:
        model: the `CaptionerBackbone` (its image encoder's `backbone_variables`, if any, may get their own Adam).
        config: the first phase's `TrainConfig` (Adam's betas and epsilon).
        schedule: `schedule(multiplier)` -> a learning-rate schedule; the backbone's is `schedule(multiplier)`
            with the image encoder's `backbone_lr_multiplier`.
        loss_scaling: wrap each Adam in a `LossScaleOptimizer` (mixed_float16).
    """

    def __init__(self, model, config, schedule, loss_scaling):
        self.model, self.loss_scaling = model, loss_scaling
        variables = model.trainable_variables
        self.multiplier = getattr(model.config.image_encoder, "backbone_lr_multiplier", 1.0)
        backbone = {id(v) for v in getattr(model.image_encoder, "backbone_variables", [])}
        self.main, self.backbone = self._adam(config, schedule(1.0)), None
        if self.multiplier == 1.0 or not backbone:
            self.groups = [(self.main, list(range(len(variables))))]
        else:
            self.backbone = self._adam(config, schedule(self.multiplier))
            self.groups = [(self.main, [i for i, v in enumerate(variables) if id(v) not in backbone]),
                           (self.backbone, [i for i, v in enumerate(variables) if id(v) in backbone])]
        for optimizer, indices in self.groups:
            optimizer.build([variables[i] for i in indices])

    def _adam(self, config, schedule):
        adam = keras.optimizers.Adam(schedule, config.adam_beta_1, config.adam_beta_2, config.adam_epsilon)
        return keras.optimizers.LossScaleOptimizer(adam) if self.loss_scaling else adam

    def set_schedule(self, schedule):
        """Gives both optimizers their rates from `schedule(multiplier)` (a phase starts)."""
        self.main.learning_rate = schedule(1.0)
        if self.backbone is not None:
            self.backbone.learning_rate = schedule(self.multiplier)

    def scale_loss(self, loss):
        """The loss the gradients are taken of: scaled by the dynamic loss scale under mixed_float16 (the
        optimizers divide it out, and skip a step whose gradients overflowed while halving the scale)."""
        return self.main.scale_loss(loss) if self.loss_scaling else loss

    def apply(self, grads):
        """Applies gradients for `model.trainable_variables` (traceable: called inside compiled steps)."""
        variables = self.model.trainable_variables
        if self.loss_scaling and len(self.groups) > 1:
            # One skip decision for both optimizers, so their loss scales stay equal: gradients that overflowed
            # anywhere are made non-finite everywhere.
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
            poison = tf.where(finite, 1.0, float("nan"))
            grads = [None if g is None else g * tf.cast(poison, g.dtype) for g in grads]
        for optimizer, indices in self.groups:
            optimizer.apply([grads[i] for i in indices], [variables[i] for i in indices])

    def reset(self):
        """Zeroes Adam's moments and step counts (a new phase); a loss scale carries over (it tracks float16's
        range, not the task)."""
        for optimizer in (self.main, self.backbone):
            optimizer = getattr(optimizer, "inner_optimizer", optimizer)
            for variable in optimizer.variables if optimizer is not None else ():
                variable.assign(tf.zeros_like(variable))

    def checkpoint_parts(self):
        """What a training checkpoint holds besides the main optimizer (which `training_checkpoint` takes)."""
        return {} if self.backbone is None else {"backbone_optimizer_state": optimizer_variables(self.backbone)}
