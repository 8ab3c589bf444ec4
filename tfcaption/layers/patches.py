"""Split images into non-overlapping square patches."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfcaption")
class Patches(keras.layers.Layer):
    """Cuts a batch of images into flattened, non-overlapping patches.

    Implemented with reshapes and a transpose rather than
    `tf.image.extract_patches`, so it compiles with XLA on every backend and
    keeps the patch order row-major (top-left patch first), which is the order
    the attention maps are drawn in.

    Args:
        patch_size: int. Side of a square patch in pixels; the image height and
            width must be multiples of it.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> images = keras.ops.zeros((2, 96, 96, 3))
    >>> tuple(Patches(12)(images).shape)
    (2, 64, 432)

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021.
    """

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)

    def call(self, images):
        batch = ops.shape(images)[0]
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"Image size {height}x{width} is not a multiple of patch_size={p}."
            )
        rows, cols = height // p, width // p
        x = ops.reshape(images, (batch, rows, p, cols, p, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (batch, rows * cols, p * p * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        p = self.patch_size
        return (batch, (height // p) * (width // p), p * p * channels)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config
