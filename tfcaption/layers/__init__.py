from tfcaption.layers.bert_text_decoder import BertTextDecoder
from tfcaption.layers.blip_vision_tower import BlipVisionTower
from tfcaption.layers.blip_vit_image_encoder import BlipVitImageEncoder
from tfcaption.layers.clip_encoder_layer import ClipEncoderLayer
from tfcaption.layers.clip_image_encoder import ClipImageEncoder
from tfcaption.layers.clip_vision_tower import ClipVisionTower
from tfcaption.layers.cnn_image_encoder import CnnImageEncoder
from tfcaption.layers.conv_stem import ConvStem
from tfcaption.layers.cross_attention import CrossAttention
from tfcaption.layers.decoder import CaptionDecoder, MeshedDecoder, TransformerDecoder
from tfcaption.layers.decoder_layer import DecoderLayer, MeshedDecoderLayer, TransformerDecoderLayer
from tfcaption.layers.encoder import MemoryAugmentedEncoder
from tfcaption.layers.encoder_layer import MemoryAugmentedEncoderLayer
from tfcaption.layers.feed_forward import PositionWiseFeedForward
from tfcaption.layers.image_encoder import BackboneMixin, CheckpointNotFoundError, TokenGrid
from tfcaption.layers.memory_attention import MemoryAugmentedAttention
from tfcaption.layers.meshed_attention import MeshedCrossAttention
from tfcaption.layers.patch_encoder import PatchEncoder
from tfcaption.layers.patch_image_encoder import PatchImageEncoder
from tfcaption.layers.patches import Patches
from tfcaption.layers.region_encoder import RegionEncoder
from tfcaption.layers.tower_image_encoder import PretrainedTowerImageEncoder, TrainableTowerImageEncoder
from tfcaption.layers.vit import VisionTransformer, VitBlock
from tfcaption.layers.vit_image_encoder import VitImageEncoder

__all__ = [
    "BackboneMixin", "BertTextDecoder", "BlipVisionTower", "BlipVitImageEncoder", "CaptionDecoder",
    "CheckpointNotFoundError", "ClipEncoderLayer", "ClipImageEncoder", "ClipVisionTower", "CnnImageEncoder", "ConvStem",
    "CrossAttention", "DecoderLayer", "MemoryAugmentedAttention",
    "MemoryAugmentedEncoder", "MemoryAugmentedEncoderLayer", "MeshedCrossAttention", "MeshedDecoder",
    "MeshedDecoderLayer", "PatchEncoder", "PatchImageEncoder", "Patches", "PositionWiseFeedForward",
    "PretrainedTowerImageEncoder", "RegionEncoder", "TokenGrid", "TrainableTowerImageEncoder", "TransformerDecoder",
    "TransformerDecoderLayer",
    "VisionTransformer", "VitBlock", "VitImageEncoder",
]
