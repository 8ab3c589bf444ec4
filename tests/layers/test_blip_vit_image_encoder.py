"""The `blip_vit` image encoder as a backbone: how much of BLIP's vision tower trains when fine-tuning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcaption.layers.blip_vit_image_encoder import BlipVitImageEncoder


def _encoder(**kwargs):
    encoder = BlipVitImageEncoder(32, 8, 16, 3, 2, 32, **kwargs)
    encoder.build()
    return encoder


def _names(variables):
    return {v.path.split("/", 2)[-1] for v in variables}


def test_all_trains_every_tower_weight():
    encoder = _encoder()
    assert len(encoder.trainable_weights) == len(encoder.weights) > 0
    assert _names(encoder.backbone_variables) == _names(encoder.weights)


def test_last_n_trains_exactly_the_last_blocks_and_the_post_layernorm():
    encoder = _encoder(train_backbone="last_n", trainable_blocks=1)
    trainable = _names(encoder.trainable_weights)
    tower = encoder.tower
    expected = _names(tower.blocks[-1].weights) | _names(tower.post_layernorm.weights)
    assert trainable == expected
    assert not trainable & _names(tower.blocks[0].weights + tower.blocks[1].weights + tower.patch_embedding.weights)
    assert not trainable & _names([tower.class_embedding, tower.position_embedding])


def test_frozen_has_no_trainable_weight_and_passes_no_gradient():
    encoder = _encoder(train_backbone="frozen")
    assert encoder.trainable_weights == []
    pixels = tf.Variable(np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        tokens, _ = encoder(pixels, training=True)
        loss = tf.reduce_sum(tokens)
    assert tape.gradient(loss, pixels) is None


def test_the_training_settings_and_resample_survive_get_config():
    encoder = _encoder(train_backbone="last_n", trainable_blocks=2, resample="bilinear")
    again = BlipVitImageEncoder.from_config(encoder.get_config())
    again.build()
    assert (again.train_backbone, again.trainable_blocks, again.resample) == ("last_n", 2, "bilinear")
    assert len(again.trainable_weights) == len(encoder.trainable_weights)


def test_last_n_beyond_the_tower_is_a_one_line_config_error():
    from tfcaption.config_fields import ConfigError
    from tfcaption.models.config import BlipVitConfig

    with pytest.raises(ConfigError, match="trainable_blocks 4 > the tower's 3 blocks"):
        BlipVitConfig(image_size=32, patch_size=8, width=16, num_layers=3, num_heads=2, mlp_dim=32,
                      train_backbone="last_n", trainable_blocks=4)
    with pytest.raises(ConfigError, match="needs model.image_encoder.trainable_blocks >= 1"):
        BlipVitConfig(train_backbone="last_n")
    assert keras.saving.get_registered_object("tfcaption>BlipVitImageEncoder") is BlipVitImageEncoder
