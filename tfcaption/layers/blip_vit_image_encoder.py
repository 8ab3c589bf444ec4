"""The `blip_vit` image encoder: pixels in [0, 255] -> BLIP's image processor normalisation -> BLIP's vision tower."""

import keras

from tfcaption.layers.blip_vision_tower import BlipVisionTower
from tfcaption.layers.tower_image_encoder import TrainableTowerImageEncoder


@keras.saving.register_keras_serializable(package="tfcaption")
class BlipVitImageEncoder(TrainableTowerImageEncoder):
    """Square images in, every token of BLIP's vision tower out: the class token, then the patches row by row,
    after the post LayerNorm, at the tower's own width (BLIP's decoder cross-attends from it: no projection).

    Pixels in [0, 255] are normalised inside `call` as the checkpoint's image processor does after its
    resize (`x * rescale_factor`, then `(x - image_mean) / image_std` per channel), so training, evaluation
    and the SavedModel share it; the resize itself is the pipeline's, with `resample`. There is no padding:
    the mask is None. The tower is the backbone that `train_backbone` freezes in part or whole (see
    `BackboneMixin`): its blocks are the transformer blocks; the patch embedding, class token and position
    table come before them, the post LayerNorm after (it trains with "last_n").

    Args:
        image_size: int. Input side in pixels (the tower's position table's size).
        patch_size, width, num_layers, num_heads, mlp_dim: ints, the tower's sizes (`vision_config`).
        layer_norm_epsilon: float. The tower's LayerNorm epsilon.
        hidden_act: str. The MLP activation as transformers names it.
        rescale_factor: float. The processor's rescale (1/255).
        image_mean, image_std: 3 floats each, the processor's normalisation (RGB).
        resample: "bicubic" (BLIP's processor) or "bilinear": how the pipeline resizes images to `image_size`.
        train_backbone: "all", "last_n" or "frozen" (see `BackboneMixin`).
        trainable_blocks: int. With "last_n": how many of the last blocks train.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = BlipVitImageEncoder(32, 8, 16, 1, 2, 32)
    >>> tokens, mask = encoder(keras.ops.zeros((2, 32, 32, 3)))
    >>> tuple(tokens.shape), mask, encoder.token_grid.prefix
    ((2, 17, 16), None, 1)
    """

    tower_attribute = "tower"
    normalize_dtype = "float32"

    def __init__(self, image_size, patch_size, width, num_layers, num_heads, mlp_dim, layer_norm_epsilon=1e-5,
                 hidden_act="gelu", rescale_factor=1 / 255, image_mean=(0.48145466, 0.4578275, 0.40821073),
                 image_std=(0.26862954, 0.26130258, 0.27577711), resample="bicubic", train_backbone="all",
                 trainable_blocks=0, **kwargs):
        super().__init__(image_size, train_backbone=train_backbone, trainable_blocks=trainable_blocks, **kwargs)
        self.rescale_factor = float(rescale_factor)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.resample = resample
        self.tower = BlipVisionTower(image_size, patch_size, width, num_layers, num_heads, mlp_dim,
                                     layer_norm_epsilon=layer_norm_epsilon, hidden_act=hidden_act,
                                     dtype=self.dtype_policy, name="tower")

    @property
    def backbone(self):
        """The tower (`BackboneMixin`'s name for it; the weights keep the name `tower`)."""
        return self.tower

    def backbone_parts(self):
        tower = self.tower
        return ([tower.patch_embedding, tower.class_embedding, tower.position_embedding],
                [[block] for block in tower.blocks], [tower.post_layernorm])

    @property
    def width(self):
        """The tokens' width: the tower's hidden size."""
        return self.tower.hidden_dim

    def normalize(self, pixels):
        return self.standardize(pixels * self.rescale_factor, self.image_mean, self.image_std)

    def get_config(self):
        config = super().get_config()
        tower = self.tower
        config.update({
            "patch_size": tower.patch_size, "width": tower.hidden_dim,
            "num_layers": tower.num_layers, "num_heads": tower.num_heads, "mlp_dim": tower.intermediate_dim,
            "layer_norm_epsilon": tower.layer_norm_epsilon, "hidden_act": tower.hidden_act,
            "rescale_factor": self.rescale_factor, "image_mean": list(self.image_mean),
            "image_std": list(self.image_std), "resample": self.resample,
        })
        return config
