"""What every image encoder tells the rest of tfcaption: its input, its preprocessing, its token grid.

An image encoder turns the model's image input into tokens `(B, R, d)` and a padding mask (or None).
The pipeline, the trainer, evaluation, inference and the export ask it, never the config:

- `input_key` / `example_shape`: the batch key and the per-example shape it reads, `"images"`
  (H, W, 3) float32 pixel values in [0, 255] after decode and resize (the data path is the same for
  every pixel encoder), or `"features"` (None, feature_dim) float32 with all-zero rows as padding;
- `normalize(pixels)`: its own input scaling, applied inside `call` (so exports and training share it);
- `token_grid`: how its tokens lie over the image (`TokenGrid`), or None for a set of regions, so
  attention maps are drawn without recomputing `image_size // patch_size` anywhere else.
"""

import dataclasses


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
