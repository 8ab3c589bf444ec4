"""The `clip` image encoder: pixels -> CLIP's normalisation -> a CLIP vision tower (every token of one layer)
-> the captioner's width."""

import keras

from tfcaption.layers.clip_vision_tower import ClipVisionTower
from tfcaption.layers.tower_image_encoder import TrainableTowerImageEncoder


@keras.saving.register_keras_serializable(package="tfcaption")
class ClipImageEncoder(TrainableTowerImageEncoder):
    """Square images in, `1 + (image_size / patch_size)^2` tokens out (class token, then the patches row by
    row) from the tower's last or penultimate layer, linearly projected to `hidden_dim` when the tower's
    `width` differs.

    Pixels in [0, 255] are mapped to `(x / 255 - image_mean) / image_std` inside `call` (CLIP's rescale and
    normalisation), so training, evaluation and the SavedModel share it; the resize is the pipeline's, as
    for every pixel encoder. The tower's weights are random here:
    `tfcaption.models.pretrained.load_pretrained` copies a checkpoint in when a run starts. The layers past
    `output_layer` and `post_layernorm` hold the checkpoint's weights but never run, so they never train.

    Args:
        image_size: int. Input side in pixels (the checkpoint's `image_size`).
        patch_size, width, num_heads, num_layers, mlp_dim: ints, the tower's sizes.
        hidden_dim: int. The captioner's width (the output width).
        hidden_act: str. The tower's MLP activation (see `ClipEncoderLayer`).
        layer_norm_epsilon: float. The tower's LayerNorm epsilon.
        output_layer: "last" or "penultimate".
        image_mean, image_std: three floats each, the checkpoint's normalisation.
        train_backbone: "all", "last_n" or "frozen" (see `BackboneMixin`).
        trainable_blocks: int. With "last_n": how many of the last layers that run train.
        **kwargs: standard `keras.layers.Layer` arguments.

    Example:
    >>> encoder = ClipImageEncoder(32, 8, 48, 3, 2, 96, hidden_dim=64)
    >>> tokens, mask = encoder(keras.ops.zeros((2, 32, 32, 3)))
    >>> tuple(tokens.shape), mask, encoder.token_grid
    ((2, 17, 64), None, TokenGrid(rows=4, cols=4, prefix=1))

    Reference:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
    """

    def __init__(self, image_size, patch_size, width, num_heads, num_layers, mlp_dim, hidden_dim=512,
                 hidden_act="quick_gelu", layer_norm_epsilon=1e-5, output_layer="penultimate",
                 image_mean=(0.48145466, 0.4578275, 0.40821073), image_std=(0.26862954, 0.26130258, 0.27577711),
                 train_backbone="all", trainable_blocks=0, **kwargs):
        super().__init__(image_size, train_backbone=train_backbone, trainable_blocks=trainable_blocks, **kwargs)
        self.output_layer = output_layer
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.backbone = ClipVisionTower(self.image_size_px, patch_size, width, num_heads, num_layers, mlp_dim,
                                        hidden_act, layer_norm_epsilon, output_layer, dtype=self.dtype_policy,
                                        name="clip_vision_tower")
        self._project_to(hidden_dim)

    def _used_layers(self):
        return self.backbone.encoder_layers[:self.backbone.num_layers + 1 + self.backbone.output_layer]

    def backbone_parts(self):
        tower = self.backbone
        return ([tower.patch_embedding, tower.class_embedding, tower.position_embedding, tower.pre_layrnorm],
                [[layer] for layer in self._used_layers()], [])

    def build(self, input_shape=None):
        super().build(input_shape)
        for layer in self.backbone.encoder_layers[len(self._used_layers()):] + [self.backbone.post_layernorm]:
            layer.trainable = False  # loaded with the checkpoint, never run: no gradient would reach them

    def normalize(self, pixels):
        return self.standardize(pixels / 255.0, self.image_mean, self.image_std)

    def get_config(self):
        config = super().get_config()
        tower = self.backbone
        config.update({
            "hidden_dim": self.hidden_dim,
            "patch_size": tower.patch_size, "width": tower.hidden_dim, "num_heads": tower.num_heads,
            "num_layers": tower.num_layers, "mlp_dim": tower.intermediate_dim, "hidden_act": tower.hidden_act,
            "layer_norm_epsilon": tower.layer_norm_epsilon, "output_layer": self.output_layer,
            "image_mean": self.image_mean, "image_std": self.image_std,
        })
        return config
