"""A small convolutional stem in front of patch extraction."""

import keras
from keras import ops

from tfcaption.layers.xla import compiling_for_xla


def _same_padding(size, kernel, stride):
    """(output size, (before, after)) of TensorFlow's "same" padding along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def _windows_matmul(x, conv):
    """`conv(x)` for a "same"-padded, channels-last `keras.layers.Conv2D` as one matmul of its kernel with
    the input's strided k x k windows (im2col), the taps in the kernel's (row, column, channel) order."""
    (kh, kw), (sh, sw) = conv.kernel_size, conv.strides
    out_h, pad_h = _same_padding(x.shape[1], kh, sh)
    out_w, pad_w = _same_padding(x.shape[2], kw, sw)
    x = ops.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    windows = ops.concatenate([x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
                               for i in range(kh) for j in range(kw)], axis=-1)
    kernel = ops.cast(ops.reshape(conv.kernel, (-1, conv.filters)), x.dtype)
    return conv.activation(ops.matmul(windows, kernel) + ops.cast(conv.bias, x.dtype))


@keras.saving.register_keras_serializable(package="tfcaption")
class ConvStem(keras.layers.Layer):
    """Stride-2 3x3 convolutions with ReLU, each halving the image side.

    Replacing the first linear "patchify" step with a few convolutions makes
    transformers on pixels learn faster and more stably for a few percent more
    compute (Xiao et al.); on a 2-core CPU that is what lets the default shapes
    run reach its accuracy within minutes. Patches are then cut from the
    stem's feature map, so a patch still covers `patch_size` input pixels and
    the attention maps still line up with the image.

    Args:
        filters: sequence of ints, output channels of each convolution.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> tuple(ConvStem((16, 32))(keras.ops.zeros((2, 96, 96, 3))).shape)
    (2, 24, 24, 32)

    Reference:
        Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.convolutions = [
            keras.layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", dtype=self.dtype_policy,
                                name=f"conv_{i}")
            for i, f in enumerate(self.filters)
        ]

    @property
    def stride(self):
        return 2 ** len(self.filters)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convolutions:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.built = True

    def call(self, images):
        # Under XLA each convolution runs as one matmul over its strided windows: XLA's CPU convolutions
        # are slow to differentiate, so the stem's forward and backward were about half of the `small`
        # preset's XE step, and the matmul form makes that step faster (timings with their machine:
        # docs/results.md). Elsewhere oneDNN's convolutions are the faster ones. The Conv2D layers hold the
        # weights either way (their names are the weights file's paths).
        as_matmuls = compiling_for_xla() and images.shape[1] is not None and images.shape[2] is not None
        x = images
        for conv in self.convolutions:
            x = _windows_matmul(x, conv) if as_matmuls else conv(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convolutions:
            shape = conv.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update({"filters": list(self.filters)})
        return config
