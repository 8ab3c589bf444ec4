"""The captioning model (`Captioner`) and its configuration as data (`CaptionerConfig`, `PRESETS`).

`Captioner` is imported on first use, so reading configs and presets (the console scripts' argument
parsers) does not start TensorFlow before `tfcaption.cli.common.quiet_tensorflow` has run.
"""

from tfcaption.models.config import PRESETS, CaptionerConfig

__all__ = ["Captioner", "CaptionerConfig", "PRESETS"]


def __getattr__(name):
    if name == "Captioner":
        from tfcaption.models.captioner import Captioner

        return Captioner
    raise AttributeError(f"module 'tfcaption.models' has no attribute {name!r}")
