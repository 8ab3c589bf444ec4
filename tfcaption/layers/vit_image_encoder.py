"""The `vit` image encoder: pixels -> a ViT backbone (all its tokens) -> the captioner's width."""

import keras

from tfcaption.layers.tower_image_encoder import TrainableTowerImageEncoder
from tfcaption.layers.vit import VisionTransformer


@keras.saving.register_keras_serializable(package="tfcaption")
class VitImageEncoder(TrainableTowerImageEncoder):
    """Square images in, `1 + (image_size / patch_size)^2` tokens out: the class token, then the patches
    row by row, as the ViT's `encoder_norm` gives them, linearly projected to `hidden_dim` when the
    backbone's `width` differs (CPTR feeds ViT-B's 768-wide tokens to its decoder as they are).

    Pixels in [0, 255] are scaled to [-1, 1] (`x / 127.5 - 1`, what Google's checkpoints expect) inside
    `call`, so training, evaluation and the SavedModel share it. The backbone's weights are random here:
    `tfcaption.models.pretrained.load_pretrained` copies a checkpoint in when a run starts.

    Args:
        image_size: int. Input side in pixels (a multiple of `patch_size`).
        patch_size, width, num_heads, num_layers, mlp_dim: ints, the ViT's sizes.
        hidden_dim: int. The captioner's width (the output width).
        gelu: "tanh" or "erf" (see `tfcaption.layers.vit.VitBlock`).
        dropout: float. The backbone's dropout.
        train_backbone: "all", "last_n" or "frozen" (see `BackboneMixin`).
        trainable_blocks: int. With "last_n": how many of the last blocks train (`encoder_norm` with them).
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = VitImageEncoder(32, 8, 48, 3, 2, 96, hidden_dim=64)
    >>> tokens, mask = encoder(keras.ops.zeros((2, 32, 32, 3)))
    >>> tuple(tokens.shape), mask, encoder.token_grid
    ((2, 17, 64), None, TokenGrid(rows=4, cols=4, prefix=1))

    Reference:
        Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Liu et al., "CPTR: Full
        Transformer Network for Image Captioning", 2021.
    """

    def __init__(self, image_size, patch_size, width, num_heads, num_layers, mlp_dim, hidden_dim=512, gelu="tanh",
                 dropout=0.0, train_backbone="all", trainable_blocks=0, **kwargs):
        super().__init__(image_size, train_backbone=train_backbone, trainable_blocks=trainable_blocks, **kwargs)
        self.backbone = VisionTransformer(patch_size, width, num_heads, num_layers, mlp_dim, self.image_size_px,
                                          dropout=dropout, gelu=gelu, dtype=self.dtype_policy,
                                          name="vision_transformer")
        self._project_to(hidden_dim)

    def backbone_parts(self):
        vit = self.backbone
        return ([vit.patch_embedding, vit.class_token, vit.position_embedding], [[block] for block in vit.blocks],
                [vit.encoder_norm])

    @staticmethod
    def normalize(pixels):
        return pixels / 127.5 - 1.0

    def get_config(self):
        config = super().get_config()
        vit = self.backbone
        config.update({
            "hidden_dim": self.hidden_dim,
            "patch_size": vit.patch_size, "width": vit.hidden_dim, "num_heads": vit.num_heads,
            "num_layers": vit.num_layers, "mlp_dim": vit.mlp_dim, "gelu": vit.gelu, "dropout": vit.dropout,
        })
        return config
