"""CLIP vision towers against transformers' CLIPModel / CLIPVisionModel on the parity fixtures
(tests/fixtures/hf): hidden states of the last and penultimate layer and the pooled output within
1e-4 * (1 + |reference|), given the fixtures' pixel_values; and the one-line errors."""

import numpy as np
import pytest

import keras

from tests.helpers import hf_fixture as hf
from tfcaption.interop.hf.clip_weights import (
    ClipWeightsError, clip_vision_arguments, clip_vision_state, load_clip_vision_weights)
from tfcaption.layers.clip_encoder_layer import ClipEncoderLayer
from tfcaption.layers.clip_vision_tower import ClipVisionTower


def _tower(name, output_layer=-1):
    tower = ClipVisionTower(**clip_vision_arguments(hf.config(name), output_layer=output_layer))
    return load_clip_vision_weights(tower, hf.tensors(name))


def _pixels(name):
    return hf.expected(name)["pixel_values"].transpose(0, 2, 3, 1)  # NCHW -> NHWC


@pytest.mark.parametrize("name", hf.CLIP_MODELS)
def test_hidden_states_and_pooled_output_match_transformers(name):
    reference = hf.expected(name)
    out = _tower(name).encode(_pixels(name))
    hf.assert_close(out["hidden_states"][-1], reference["last_hidden_state"])
    hf.assert_close(out["last_hidden_state"], reference["hidden_states_last"])
    hf.assert_close(out["hidden_states"][-2], reference["hidden_states_penultimate"])
    hf.assert_close(out["pooled_output"], reference["pooler_output"])


@pytest.mark.parametrize("name", hf.CLIP_MODELS)
@pytest.mark.parametrize("output_layer,key", [("last", "last_hidden_state"),
                                              ("penultimate", "hidden_states_penultimate")])
def test_call_returns_every_token_of_the_chosen_layer(name, output_layer, key):
    tower = _tower(name, output_layer)
    tokens = tower(_pixels(name))
    assert tokens.shape[1] == tower.num_tokens == 1 + tower.token_grid.cells
    hf.assert_close(tokens, hf.expected(name)[key])


def test_clip_model_file_gives_only_its_vision_tensors():
    state = hf.tensors("clip_full")
    vision = clip_vision_state(state)
    assert len(vision) == sum(name.startswith("vision_model.") for name in state) < len(state)
    assert not any(name.startswith(("text_model", "visual_projection", "logit_scale")) for name in vision)


def test_sizes_come_from_config_json():
    full, vision = (clip_vision_arguments(hf.config(name)) for name in hf.CLIP_MODELS)
    assert (full["hidden_dim"], full["patch_size"], full["image_size"], full["hidden_act"]) == (32, 8, 32, "quick_gelu")
    assert (vision["hidden_dim"], vision["num_heads"], vision["patch_size"], vision["image_size"],
            vision["hidden_act"], vision["layer_norm_epsilon"]) == (40, 4, 12, 36, "gelu", 1e-6)


def test_get_config_round_trips_and_keeps_the_numbers():
    tower = _tower("clip_vision", "penultimate")
    clone = ClipVisionTower.from_config(tower.get_config())
    assert clone.get_config() == tower.get_config() and clone.output_layer == -2
    clone.build((None, 36, 36, 3))
    clone.set_weights(tower.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(_pixels("clip_vision"))), np.asarray(tower(_pixels("clip_vision"))))
    layer = ClipEncoderLayer(8, 2, 16, "gelu", 1e-6)
    assert ClipEncoderLayer.from_config(layer.get_config()).get_config() == layer.get_config()


def test_missing_tensor_is_one_line_naming_it():
    state = dict(hf.tensors("clip_full"))
    del state["vision_model.encoder.layers.1.mlp.fc2.bias"]
    tower = ClipVisionTower(**clip_vision_arguments(hf.config("clip_full")))
    with pytest.raises(ClipWeightsError, match=r"^the weights file has no tensor "
                                               r"'vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias'\.$"):
        load_clip_vision_weights(tower, state)


def test_config_unlike_the_file_is_one_line():
    arguments = clip_vision_arguments(hf.config("clip_full"))
    with pytest.raises(ClipWeightsError, match="more than the config's 2 vision layers"):
        load_clip_vision_weights(ClipVisionTower(**{**arguments, "num_layers": 2}), hf.tensors("clip_full"))
    with pytest.raises(ClipWeightsError, match="shape"):
        load_clip_vision_weights(ClipVisionTower(**{**arguments, "intermediate_dim": 48}), hf.tensors("clip_full"))


@pytest.mark.parametrize("config,message", [
    ({"model_type": "blip"}, "model_type 'blip' is not a CLIP model"),
    ({"model_type": "clip_vision_model", "image_size": [32, 48]}, "image_size .* is not square"),
])
def test_config_errors_name_the_field(config, message):
    with pytest.raises(ClipWeightsError, match=message):
        clip_vision_arguments(config)


@pytest.mark.parametrize("arguments,message", [
    ({"hidden_act": "relu"}, "hidden_act must be one of"),
    ({"output_layer": -4}, "output_layer must be"),
    ({"output_layer": "first"}, "output_layer must be"),
    ({"image_size": 30}, "image_size 30 must be a positive multiple of patch_size 8"),
])
def test_constructor_errors_name_the_argument(arguments, message):
    base = dict(image_size=32, patch_size=8, hidden_dim=16, num_heads=2, num_layers=3, intermediate_dim=32)
    with pytest.raises(ValueError, match=message):
        ClipVisionTower(**{**base, **arguments})


def test_quick_gelu_and_gelu_forms():
    x = np.linspace(-4, 4, 17).astype("float32")
    from tfcaption.layers.clip_encoder_layer import activation

    np.testing.assert_allclose(np.asarray(activation(x, "quick_gelu")), x / (1 + np.exp(-1.702 * x)), rtol=1e-6,
                               atol=1e-7)
    np.testing.assert_allclose(np.asarray(activation(x, "gelu")), np.asarray(keras.ops.gelu(x, approximate=False)))


def test_xla_compiled_tower_gives_the_same_tokens():
    import tensorflow as tf

    tower = _tower("clip_full", "penultimate")
    pixels = _pixels("clip_full")
    compiled = tf.function(lambda x: tower(x), jit_compile=True)
    hf.assert_close(compiled(tf.constant(pixels)), hf.expected("clip_full")["hidden_states_penultimate"])
