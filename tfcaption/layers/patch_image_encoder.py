"""The `patches` image encoder: pixels -> conv stem -> patches -> projected tokens with positions."""

import keras
from keras import ops

from tfcaption.layers.conv_stem import ConvStem
from tfcaption.layers.image_encoder import SquarePixelsMixin, TokenGrid
from tfcaption.layers.patch_encoder import PatchEncoder
from tfcaption.layers.patches import Patches


@keras.saving.register_keras_serializable(package="tfcaption")
class PatchImageEncoder(SquarePixelsMixin, keras.layers.Layer):
    """Square images in, `(image_size / patch_size)^2` tokens out, row-major.

    Pixels in [0, 255] are scaled to [-1, 1] (`x / 127.5 - 1`, the ViT convention), go through an
    optional `ConvStem` of stride-2 convolutions, and the stem's feature map is cut into patches that
    each cover `patch_size` input pixels; with `patch_size` equal to the stem's stride every cell of
    the feature map is a token (a CNN grid). `PatchEncoder` projects them and adds positions.

    Args:
        image_size: int. Input side in pixels.
        patch_size: int. Patch side in input pixels (a multiple of the stem's stride).
        stem_filters: sequence of ints, the stem's channels; () for linear patches (ViT).
        hidden_dim: int. Token width.
        positions: "learned" or "sinusoid_2d".
        layer_norm_epsilon: float.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = PatchImageEncoder(96, 16, (16, 32), hidden_dim=64)
    >>> tokens, mask = encoder(keras.ops.zeros((2, 96, 96, 3)))
    >>> tuple(tokens.shape), mask, encoder.token_grid
    ((2, 36, 64), None, TokenGrid(rows=6, cols=6, prefix=0))
    """

    def __init__(self, image_size, patch_size, stem_filters=(), hidden_dim=512, positions="learned",
                 layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.image_size_px = int(image_size)
        self.patch_size = int(patch_size)
        self.stem_filters = tuple(int(f) for f in stem_filters)
        self.hidden_dim = int(hidden_dim)
        self.positions = positions
        self.layer_norm_epsilon = layer_norm_epsilon
        stride = 2 ** len(self.stem_filters)
        if self.image_size_px % self.patch_size or self.patch_size % stride:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}, and "
                             f"patch_size a multiple of the stem's stride {stride}.")
        self.stem = ConvStem(self.stem_filters, dtype=self.dtype_policy, name="stem") if self.stem_filters else None
        self.patches = Patches(self.patch_size // stride, dtype=self.dtype_policy, name="patches")
        side = self.image_size_px // self.patch_size
        self.patch_encoder = PatchEncoder(side * side, hidden_dim, layer_norm_epsilon, positions, (side, side),
                                          dtype=self.dtype_policy, name="patch_encoder")

    @property
    def token_grid(self):
        side = self.image_size_px // self.patch_size
        return TokenGrid(side, side)

    def build(self, input_shape=None):
        shape, channels = (None,) + self.example_shape, 3
        if self.stem is not None:
            self.stem.build(shape)
            channels = self.stem_filters[-1]
        cell = self.patch_size // 2 ** len(self.stem_filters)
        self.patch_encoder.build((None, self.token_grid.cells, cell * cell * channels))
        self.built = True

    @staticmethod
    def normalize(pixels):
        return pixels / 127.5 - 1.0

    def call(self, pixels, training=None):
        x = self.normalize(ops.cast(pixels, self.compute_dtype))
        if self.stem is not None:
            x = self.stem(x)
        return self.patch_encoder(self.patches(x)), None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.token_grid.cells, self.hidden_dim), None

    def get_config(self):
        config = super().get_config()
        config.update({
            "image_size": self.image_size_px, "patch_size": self.patch_size, "stem_filters": list(self.stem_filters),
            "hidden_dim": self.hidden_dim, "positions": self.positions, "layer_norm_epsilon": self.layer_norm_epsilon,
        })
        return config
