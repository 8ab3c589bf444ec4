from tfcaption.layers.conv_stem import ConvStem
from tfcaption.layers.decoder import MeshedDecoder
from tfcaption.layers.decoder_layer import MeshedDecoderLayer
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.encoder_layer import MemoryAugmentedEncoderLayer
from tfcaption.layers.feed_forward import PositionWiseFeedForward
from tfcaption.layers.memory_attention import MemoryAugmentedAttention
from tfcaption.layers.meshed_attention import MeshedCrossAttention
from tfcaption.layers.patch_encoder import PatchEncoder
from tfcaption.layers.patches import Patches
from tfcaption.layers.region_encoder import RegionEncoder

__all__ = [
    "ConvStem", "MemoryAugmentedAttention", "MemoryAugmentedEncoder", "MemoryAugmentedEncoderLayer",
    "MeshedCrossAttention", "MeshedDecoder", "MeshedDecoderLayer", "PatchEncoder", "Patches",
    "PositionWiseFeedForward", "RegionEncoder",
]
