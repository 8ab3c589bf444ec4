"""A small convolutional stem in front of patch extraction."""

import keras


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
        x = images
        for conv in self.convolutions:
            x = conv(x)
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
