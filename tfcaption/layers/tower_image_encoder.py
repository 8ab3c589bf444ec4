"""A pretrained transformer tower as an image encoder: pixels in [0, 255] -> the checkpoint's normalisation ->
the tower (every token of its output) -> the captioner's width, with or without training the tower."""

import keras
from keras import ops

from tfcaption.layers.image_encoder import BackboneMixin, SquarePixelsMixin


class PretrainedTowerImageEncoder(SquarePixelsMixin, keras.layers.Layer):
    """Square images in, every token of a transformer tower out (its `token_grid`: the class token, then the
    patches row by row), linearly projected to `hidden_dim` where the subclass asks for it and the tower's
    width differs; no padding, so the mask is None.

    The pixels are normalised inside `call` (the subclass's `normalize`), so training, evaluation and the
    SavedModel share it. A subclass builds its tower in `__init__` under the attribute `tower_attribute`
    (weights are saved under the attribute's name, so each keeps its own), then calls `_project_to` if it
    projects.

    Args:
        image_size: int. Input side in pixels.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    tower_attribute = "backbone"
    # The dtype pixels are normalised in; None: the layer's compute dtype.
    normalize_dtype = None

    def __init__(self, image_size, **kwargs):
        super().__init__(**kwargs)
        self.image_size_px = int(image_size)
        self.projection = None

    def _tower(self):
        return getattr(self, self.tower_attribute)

    def _project_to(self, hidden_dim):
        """Output `hidden_dim` wide tokens: a Dense projection where the tower's width differs."""
        self.hidden_dim = int(hidden_dim)
        self.projection = (keras.layers.Dense(self.hidden_dim, dtype=self.dtype_policy, name="projection")
                           if self._tower().hidden_dim != self.hidden_dim else None)

    @property
    def token_grid(self):
        return self._tower().token_grid

    @property
    def num_tokens(self):
        return self.token_grid.prefix + self.token_grid.cells

    @property
    def output_width(self):
        return self.projection.units if self.projection is not None else self._tower().hidden_dim

    def build(self, input_shape=None):
        self._tower().build((None,) + self.example_shape)
        if self.projection is not None:
            self.projection.build((None, self.num_tokens, self._tower().hidden_dim))
        self.built = True

    def normalize(self, pixels):
        """[0, 255] pixels (B, H, W, 3) -> what the tower's checkpoint expects."""
        raise NotImplementedError

    @staticmethod
    def standardize(pixels, mean, std):
        """``(pixels - mean) / std`` per channel (RGB), in the pixels' dtype: the normalisation of CLIP's and
        BLIP's image processors after their rescale."""
        mean = ops.cast(ops.convert_to_tensor(mean), pixels.dtype)
        std = ops.cast(ops.convert_to_tensor(std), pixels.dtype)
        return (pixels - mean) / std

    def run_tower(self, inputs, training=None):
        return self._tower()(inputs, training=training)

    def call(self, pixels, training=None):
        pixels = ops.cast(pixels, self.normalize_dtype or self.compute_dtype)
        tokens = self.run_tower(self.normalize(pixels), training=training)
        if self.projection is not None:
            tokens = self.projection(tokens)
        return tokens, None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.output_width), None


class TrainableTowerImageEncoder(BackboneMixin, PretrainedTowerImageEncoder):
    """A `PretrainedTowerImageEncoder` whose tower (`self.backbone`) trains all, frozen or its last blocks
    (see `BackboneMixin`); subclasses say what the blocks are (`backbone_parts`).

    Args:
        image_size: int. Input side in pixels.
        train_backbone: "all", "last_n" or "frozen".
        trainable_blocks: int. With "last_n": how many of the last blocks train.
        **kwargs: standard `keras.layers.Layer` arguments.
    """

    def __init__(self, image_size, train_backbone="all", trainable_blocks=0, **kwargs):
        super().__init__(image_size, **kwargs)
        self.train_backbone = train_backbone
        self.trainable_blocks = int(trainable_blocks)

    def build(self, input_shape=None):
        super().build(input_shape)
        self.apply_backbone_training()

    def run_tower(self, inputs, training=None):
        return self.run_backbone(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"image_size": self.image_size_px, "train_backbone": self.train_backbone,
                       "trainable_blocks": self.trainable_blocks})
        return config
