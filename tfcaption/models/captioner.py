"""`Captioner(config)`: the `CaptionerBackbone` built from a `CaptionerConfig`, as the trainer, converters and
older code build it. There is one network class; this name keeps `Captioner(config)` and `.keras` files saved
as `tfcaption>Captioner` (`{"config": {...}}`) working."""

import keras

from tfcaption.models.captioner_backbone import (  # noqa: F401  (the builders' former home)
    CaptionerBackbone, backbone_kwargs, build_decoder, build_encoder, build_image_encoder,
)
from tfcaption.models.config import CaptionerConfig


@keras.saving.register_keras_serializable(package="tfcaption")
class Captioner(CaptionerBackbone):
    """A `CaptionerBackbone` built from a `CaptionerConfig` (or its dict, in any saved layout).

    Args:
        config: a `CaptionerConfig` or its dict.
        **kwargs: standard `keras.Model` arguments.

    Example:
    >>> model = Captioner(CaptionerConfig.from_preset("small", vocab_size=40))
    >>> tokens = keras.ops.ones((2, 5), dtype="int32")
    >>> tuple(model({"images": keras.ops.zeros((2, 96, 96, 3)), "tokens": tokens}).shape), model.token_grid
    ((2, 5, 40), TokenGrid(rows=6, cols=6, prefix=0))
    """

    def __init__(self, config, **kwargs):
        super().__init__(**backbone_kwargs(config), **kwargs)

    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
