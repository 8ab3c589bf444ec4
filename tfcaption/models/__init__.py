"""The captioning task (`ImageCaptioner`: a `CaptionerBackbone` and a `CaptionerPreprocessor`), the network
(`CaptionerBackbone`, from keyword arguments or `CaptionerBackbone.from_model_config(config)`), and its
configuration as data (`CaptionerConfig`, `PRESETS`).

The model classes are imported on first use, so reading configs and presets (the console scripts' argument
parsers) does not start TensorFlow before `tfcaption.cli.common.quiet_tensorflow` has run.
"""

from tfcaption.models.config import PRESETS, CaptionerConfig

__all__ = ["CaptionerBackbone", "CaptionerConfig", "CaptionerPreprocessor", "ImageCaptioner", "PRESETS"]

_LAZY = {
    "CaptionerBackbone": "tfcaption.models.captioner_backbone",
    "CaptionerPreprocessor": "tfcaption.models.captioner_preprocessor",
    "ImageCaptioner": "tfcaption.models.image_captioner",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfcaption.models' has no attribute {name!r}")
