"""What every image encoder tells the rest of tfcaption: its input, its preprocessing, its token grid.

An image encoder turns the model's image input into tokens `(B, R, d)` and a padding mask (or None).
The pipeline, the trainer, evaluation, inference and the export ask it, never the config:

- `input_key` / `example_shape`: the batch key and the per-example shape it reads, `"images"`
  (H, W, 3) float32 pixel values in [0, 255] after decode and resize (the data path is the same for
  every pixel encoder), or `"features"` (None, feature_dim) float32 with all-zero rows as padding;
- `normalize(pixels)`: its own input scaling, applied inside `call` (so exports and training share it);
- `token_grid`: how its tokens lie over the image (`TokenGrid`), or None for a set of regions, so
  attention maps are drawn without recomputing `image_size // patch_size` anywhere else;
- `resample`: how the pipeline resizes images to `image_size` (`tfcaption.data.pipeline.RESAMPLE_METHODS`:
  "bilinear", tfcaption's own, or "bicubic", BLIP's image processor for an imported checkpoint).
"""

import dataclasses

from keras import ops


@dataclasses.dataclass(frozen=True)
class TokenGrid:
    """Tokens = `prefix` extra tokens (e.g. a class token), then `rows x cols` cells row by row."""

    rows: int
    cols: int
    prefix: int = 0

    @property
    def cells(self):
        return self.rows * self.cols

    def to_dict(self):
        return dataclasses.asdict(self)


class ImageEncoderMixin:
    """The interface above, for `keras.layers.Layer` subclasses; defaults are those of a pixel encoder."""

    input_key = "images"
    resample = "bilinear"

    @property
    def example_shape(self):
        """Per-example input shape: (H, W, 3) for pixels, (None, feature_dim) for features."""
        raise NotImplementedError

    @property
    def image_size(self):
        """(height, width) the pipeline resizes to; None for feature inputs."""
        return None

    @property
    def token_grid(self):
        return None

    def serving_info(self):
        """What an export records about its input, for clients and `tfcaption.load`."""
        grid = self.token_grid
        return {"input": self.input_key, "input_shape": list(self.example_shape),
                "image_size": None if self.image_size is None else list(self.image_size),
                "token_grid": None if grid is None else grid.to_dict()}


class SquarePixelsMixin(ImageEncoderMixin):
    """A pixel encoder of square images, `self.image_size_px` pixels a side."""

    @property
    def example_shape(self):
        return (self.image_size_px, self.image_size_px, 3)

    @property
    def image_size(self):
        return (self.image_size_px, self.image_size_px)


BACKBONE_TRAINING = ("all", "last_n", "frozen")


class CheckpointNotFoundError(FileNotFoundError):
    """A backbone's pretrained weights are neither on disk nor downloadable; the message (one line) says
    which file to put where."""


class BackboneMixin(SquarePixelsMixin):
    """Image encoders around a (pretrained) backbone layer `self.backbone`: how much of it trains.

    `train_backbone`: "all"; "frozen" (the backbone runs in inference mode, BatchNorm statistics
    untouched, and no gradient reaches or passes it); or "last_n" (the last `trainable_blocks` blocks
    and what follows them train, everything before them is frozen, their BatchNorm layers in inference
    mode). Subclasses say what their blocks are (`backbone_parts`), set `self.backbone`, call
    `apply_backbone_training()` once the backbone's variables exist (in `__init__` or `build`), and call
    the backbone through `run_backbone`. `backbone_variables` are what the trainer's backbone learning
    rate applies to. The state lives in the layers' `trainable` flags: setting `trainable` on a parent
    afterwards overrides it (the trainer never does).
    """

    train_backbone = "all"
    trainable_blocks = 0

    def backbone_parts(self):
        """`(before, blocks, after)`: layers or variables before the repeated blocks, the blocks (a list of
        lists of layers, input to output) and the layers after them. (A frozen variable freezes only
        itself; BatchNorm follows its layer's flag.)"""
        raise NotImplementedError

    def apply_backbone_training(self):
        if self.train_backbone not in BACKBONE_TRAINING:
            raise ValueError(f"train_backbone must be one of {BACKBONE_TRAINING}, got {self.train_backbone!r}.")
        self.backbone.trainable = self.train_backbone != "frozen"
        if self.train_backbone != "last_n":
            return
        before, blocks, _ = self.backbone_parts()
        if not 1 <= self.trainable_blocks <= len(blocks):
            raise ValueError(f"trainable_blocks must be 1 to {len(blocks)} (the backbone's blocks), got "
                             f"{self.trainable_blocks}.")
        for part in list(before) + [layer for block in blocks[:-self.trainable_blocks] for layer in block]:
            part.trainable = False  # a layer (its variables and BatchNorm mode follow) or a variable

    def run_backbone(self, inputs, training=None):
        if self.train_backbone == "frozen":
            return ops.stop_gradient(self.backbone(inputs, training=False))
        return self.backbone(inputs, training=training)

    @property
    def backbone_variables(self):
        """The backbone's trainable variables (those the backbone learning-rate multiplier scales)."""
        return self.backbone.trainable_variables
