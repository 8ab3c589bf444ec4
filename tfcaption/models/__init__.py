from tfcaption.models.captioner import Captioner
from tfcaption.models.config import PRESETS, CaptionerConfig

__all__ = ["Captioner", "CaptionerConfig", "PRESETS"]
