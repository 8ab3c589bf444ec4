"""The `cnn` image encoder: keras.applications CNNs cut at a feature map, their weights files, how much trains.

Sizes are small where the property does not depend on them (ResNet50 at 64 px: a 2 x 2 grid, VGG16 at
64 px: 4 x 4; training and export cut ResNet50 early, at `conv2_block3_out` / `conv3_block1_out`), and
the 224-px grids are checked on shapes alone. Nothing here downloads: `keras.utils.get_file` is
replaced by a stub wherever "imagenet" is asked for.
"""

import inspect
import os
import re

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications import resnet as keras_resnet
from keras.src.applications import vgg16 as keras_vgg16
from keras.src.applications import vgg19 as keras_vgg19
from keras.src.legacy.saving import legacy_h5_format

from tfcaption.layers.cnn_image_encoder import CnnImageEncoder, imagenet_file_name, keras_models_dir
from tfcaption.layers.image_encoder import TokenGrid
from tfcaption.models.vit import CheckpointNotFoundError

HIDDEN = 16
APPLICATIONS = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101,
                "resnet152": keras.applications.ResNet152, "vgg16": keras.applications.VGG16,
                "vgg19": keras.applications.VGG19}
PREPROCESS = {"resnet50": keras.applications.resnet50.preprocess_input,
              "vgg16": keras.applications.vgg16.preprocess_input}


def pixels(size=64, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def application(backbone, size):
    return APPLICATIONS[backbone](include_top=False, weights=None, input_shape=(size, size, 3))


def cut(model, layer):
    return keras.Model(model.input, model.get_layer(layer).output)


def copy_by_name(source, target):
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def numpy_tokens(encoder, x):
    return keras.ops.convert_to_numpy(encoder(x)[0])


@pytest.fixture(scope="module")
def resnet50():
    return CnnImageEncoder("resnet50", image_size=64, hidden_dim=HIDDEN)


@pytest.fixture(scope="module")
def vgg16():
    return CnnImageEncoder("vgg16", image_size=64, hidden_dim=HIDDEN)


# ---- grids and shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone, layer, grid", [
    ("resnet50", "", (7, 7, 2048)), ("resnet50", "conv4_block6_out", (14, 14, 1024)),
    ("resnet101", "", (7, 7, 2048)), ("resnet152", "", (7, 7, 2048)),
    ("vgg16", "", (14, 14, 512)), ("vgg19", "", (14, 14, 512)),
])
def test_grid_at_224_px_is_the_cut_layers_feature_map(backbone, layer, grid):
    encoder = CnnImageEncoder(backbone, layer, image_size=224, hidden_dim=HIDDEN)
    default = "conv5_block3_out" if backbone.startswith("resnet") else "block5_conv3"
    assert encoder.layer_name == (layer or default)
    assert tuple(encoder.backbone.output.shape) == (None,) + grid
    assert encoder.backbone.layers[-1].name == encoder.layer_name
    assert encoder.token_grid == TokenGrid(grid[0], grid[1], prefix=0)
    assert encoder.compute_output_shape((3, 224, 224, 3)) == ((3, grid[0] * grid[1], HIDDEN), None)
    assert encoder.example_shape == (224, 224, 3) and encoder.image_size == (224, 224)
    assert encoder.input_key == "images"
    assert encoder.serving_info()["token_grid"] == {"rows": grid[0], "cols": grid[1], "prefix": 0}


@pytest.mark.parametrize("backbone, layer, side", [
    ("resnet50", "", 2), ("resnet50", "conv4_block6_out", 4), ("vgg16", "", 4), ("vgg19", "", 4),
])
def test_tokens_at_64_px_are_one_per_cell_and_no_mask(backbone, layer, side):
    encoder = CnnImageEncoder(backbone, layer, image_size=64, hidden_dim=HIDDEN)
    tokens, mask = encoder(pixels(batch=3))
    assert tuple(tokens.shape) == (3, side * side, HIDDEN) and mask is None
    assert encoder.token_grid == TokenGrid(side, side)


@pytest.mark.parametrize("backbone, layer, valid", [
    ("resnet50", "conv9_block1_out", "conv4_block6_out"), ("vgg16", "block6_conv1", "block5_conv3"),
])
def test_unknown_layer_is_a_one_line_value_error_naming_layer_backbone_and_valid_names(backbone, layer, valid):
    with pytest.raises(ValueError) as error:
        CnnImageEncoder(backbone, layer, image_size=32)
    message = str(error.value)
    assert "\n" not in message and repr(layer) in message and backbone in message and valid in message


def test_unknown_backbone_and_tiny_images_are_value_errors():
    with pytest.raises(ValueError, match="backbone must be one of"):
        CnnImageEncoder("resnet18", image_size=64)
    with pytest.raises(ValueError, match="32 px"):
        CnnImageEncoder("vgg16", image_size=16)


# ---- preprocessing and the forward pass ------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_normalize_is_the_backbones_own_preprocess_input(backbone, resnet50, vgg16):
    encoder = {"resnet50": resnet50, "vgg16": vgg16}[backbone]
    x = pixels(size=8)
    expected = PREPROCESS[backbone](x.copy())  # the numpy path works in place
    np.testing.assert_allclose(keras.ops.convert_to_numpy(encoder.normalize(x)), expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(expected[..., 0], x[..., 2] - 103.939, atol=1e-4)  # BGR, caffe means


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_tokens_are_the_keras_application_on_preprocessed_pixels_row_major_through_the_patch_encoder(
        backbone, resnet50, vgg16):
    encoder = {"resnet50": resnet50, "vgg16": vgg16}[backbone]
    model = application(backbone, 64)
    copy_by_name(encoder.backbone, model)
    x = pixels(seed=3)
    tokens = numpy_tokens(encoder, x)
    features = keras.ops.convert_to_numpy(cut(model, encoder.layer_name)(PREPROCESS[backbone](x.copy()),
                                                                          training=False))
    rows, cols = encoder.token_grid.rows, encoder.token_grid.cols
    cells = np.stack([features[:, r, c] for r in range(rows) for c in range(cols)], axis=1)
    expected = keras.ops.convert_to_numpy(encoder.patch_encoder(cells))
    np.testing.assert_allclose(tokens, expected, atol=1e-5, rtol=0)


# ---- backbone parts --------------------------------------------------------------------------------------


def test_resnet_parts_are_the_stem_then_one_group_per_residual_unit_up_to_the_cut():
    encoder = CnnImageEncoder("resnet50", "conv3_block2_out", image_size=32, hidden_dim=HIDDEN)
    before, blocks, after = encoder.backbone_parts()
    assert [layer.name for layer in before] == ["conv1_pad", "conv1_conv", "conv1_bn", "conv1_relu", "pool1_pad",
                                                "pool1_pool"]
    units = [{re.match(r"conv\d+_block\d+", layer.name).group() for layer in block} for block in blocks]
    assert units == [{"conv2_block1"}, {"conv2_block2"}, {"conv2_block3"}, {"conv3_block1"}, {"conv3_block2"}]
    assert all(layer.name.startswith(("conv2_block", "conv3_block")) for block in blocks for layer in block)
    assert blocks[-1][-1].name == "conv3_block2_out" and after == []
    assert {"conv3_block1_0_conv", "conv3_block1_add"} <= {layer.name for layer in blocks[3]}
    grouped = before + [layer for block in blocks for layer in block]
    assert len(grouped) == len(encoder.backbone.layers) - 1  # everything but the InputLayer


def test_vgg_parts_are_block1_to_block5_conv_and_pool_layers_up_to_the_cut(vgg16):
    before, blocks, after = vgg16.backbone_parts()
    assert before == [] and after == []
    assert [[layer.name for layer in block] for block in blocks] == [
        ["block1_conv1", "block1_conv2", "block1_pool"], ["block2_conv1", "block2_conv2", "block2_pool"],
        ["block3_conv1", "block3_conv2", "block3_conv3", "block3_pool"],
        ["block4_conv1", "block4_conv2", "block4_conv3", "block4_pool"],
        ["block5_conv1", "block5_conv2", "block5_conv3"],
    ]
    shallow = CnnImageEncoder("vgg16", "block2_conv1", image_size=32, hidden_dim=HIDDEN)
    assert [[layer.name for layer in block] for block in shallow.backbone_parts()[1]] == [
        ["block1_conv1", "block1_conv2", "block1_pool"], ["block2_conv1"]]


# ---- weights ---------------------------------------------------------------------------------------------


def write_legacy_h5(model, path):
    """The layout of Keras's own ImageNet files: weights only, `layer_names` at the root."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("backbone, suffix", [("resnet50", ".weights.h5"), ("vgg16", ".h5")])
def test_weights_file_of_the_keras_application_loads_and_gives_its_features_exactly(backbone, suffix, tmp_path):
    model = application(backbone, 64)
    path = str(tmp_path / f"{backbone}{suffix}")
    if suffix == ".h5":
        write_legacy_h5(model, path)
    else:
        model.save_weights(path)
    encoder = CnnImageEncoder(backbone, image_size=64, hidden_dim=HIDDEN, weights=path)
    assert encoder.load_pretrained_weights() == f"{backbone} weights from {path}"
    for layer in [layer for layer in encoder.backbone.layers if layer.weights]:
        for mine, theirs in zip(layer.weights, model.get_layer(layer.name).weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))
    x = PREPROCESS[backbone](pixels(seed=5))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(encoder.backbone(x, training=False)),
                                  keras.ops.convert_to_numpy(cut(model, encoder.layer_name)(x, training=False)))


KERAS_IMAGENET = {  # keras.applications' own (origin, md5) of each no-top file
    "resnet50": (keras_resnet.BASE_WEIGHTS_PATH + imagenet_file_name("resnet50"),
                 keras_resnet.WEIGHTS_HASHES["resnet50"][1]),
    "resnet101": (keras_resnet.BASE_WEIGHTS_PATH + imagenet_file_name("resnet101"),
                  keras_resnet.WEIGHTS_HASHES["resnet101"][1]),
    "resnet152": (keras_resnet.BASE_WEIGHTS_PATH + imagenet_file_name("resnet152"),
                  keras_resnet.WEIGHTS_HASHES["resnet152"][1]),
    "vgg16": (keras_vgg16.WEIGHTS_PATH_NO_TOP, "6d6bbae143d832006294945121d1f1fc"),
    "vgg19": (keras_vgg19.WEIGHTS_PATH_NO_TOP, "253f8cb515780f3b799900260a226db6"),
}
# the VGG hashes are literals inside keras.applications' get_file calls: check they are Keras's own
assert all(KERAS_IMAGENET[name][1] in inspect.getsource(module) for name, module in [("vgg16", keras_vgg16),
                                                                                    ("vgg19", keras_vgg19)])


@pytest.mark.parametrize("backbone", list(KERAS_IMAGENET))
def test_imagenet_offline_is_a_one_line_checkpoint_not_found_error_naming_kerass_file_and_folder(
        backbone, monkeypatch):
    asked = []

    def offline(fname, origin, **kwargs):
        asked.append((fname, origin, kwargs))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    encoder = CnnImageEncoder(backbone, image_size=32, hidden_dim=HIDDEN, weights="imagenet")
    with pytest.raises(CheckpointNotFoundError) as error:
        encoder.load_pretrained_weights()
    message, file_name = str(error.value), f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert "\n" not in message and file_name in message and keras_models_dir() in message
    origin, md5 = KERAS_IMAGENET[backbone]
    assert asked == [(file_name, origin, {"cache_subdir": "models", "file_hash": md5})]
    assert keras_models_dir().endswith(os.path.join(".keras", "models"))


def test_imagenet_weights_come_from_kerass_cached_file(monkeypatch, tmp_path):
    model = application("vgg16", 32)
    cached = str(tmp_path / imagenet_file_name("vgg16"))
    write_legacy_h5(model, cached)
    monkeypatch.setattr(keras.utils, "get_file", lambda fname, origin, **kwargs: cached)
    encoder = CnnImageEncoder("vgg16", image_size=32, hidden_dim=HIDDEN, weights="imagenet")
    assert encoder.load_pretrained_weights() == f"vgg16 imagenet weights from {cached}"
    for mine, theirs in zip(encoder.backbone.weights, cut(model, "block5_conv3").weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs))


def test_missing_weights_file_is_a_one_line_checkpoint_not_found_error(tmp_path):
    path = str(tmp_path / "nowhere.weights.h5")
    encoder = CnnImageEncoder("vgg16", image_size=32, hidden_dim=HIDDEN, weights=path)
    with pytest.raises(CheckpointNotFoundError) as error:
        encoder.load_pretrained_weights()
    assert "\n" not in str(error.value) and path in str(error.value) and "vgg16" in str(error.value)
    assert isinstance(error.value, FileNotFoundError)


def test_weights_of_another_backbone_are_a_one_line_value_error(tmp_path):
    path = str(tmp_path / "vgg19.weights.h5")
    application("vgg19", 32).save_weights(path)
    encoder = CnnImageEncoder("vgg16", image_size=32, hidden_dim=HIDDEN, weights=path)
    with pytest.raises(ValueError) as error:
        encoder.load_pretrained_weights()
    assert "\n" not in str(error.value) and path in str(error.value)


def test_no_weights_load_nothing_and_say_random(vgg16):
    before = [keras.ops.convert_to_numpy(v) for v in vgg16.backbone.weights]
    assert "random" in vgg16.load_pretrained_weights()
    for old, v in zip(before, vgg16.backbone.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(v))


# ---- how much of the backbone trains ---------------------------------------------------------------------


def trained(train_backbone, trainable_blocks=0):
    """A shallow ResNet50 (stem + the three conv2 units), its weights before and after one Adam step."""
    encoder = CnnImageEncoder("resnet50", "conv2_block3_out", image_size=64, hidden_dim=HIDDEN,
                              train_backbone=train_backbone, trainable_blocks=trainable_blocks)
    x = pixels(seed=7)
    encoder(x)
    before = {id(v): keras.ops.convert_to_numpy(v).copy() for v in encoder.weights}
    target = np.random.default_rng(8).normal(size=(2, encoder.token_grid.cells, HIDDEN)).astype("float32")
    variables = encoder.trainable_variables
    with tf.GradientTape() as tape:
        tokens, _ = encoder(x, training=True)
        loss = keras.ops.mean(tokens * target)
    gradients = tape.gradient(loss, variables)
    keras.optimizers.Adam(learning_rate=1e-2).apply_gradients(zip(gradients, variables))
    changed = {id(v) for v in encoder.weights if not np.array_equal(before[id(v)], keras.ops.convert_to_numpy(v))}
    return encoder, changed


def ids(layers):
    return {id(v) for layer in layers for v in layer.weights}


def moving_statistics(layers):
    return {id(v) for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)}


def test_frozen_backbone_is_bit_identical_after_an_adam_step_while_the_projection_changes():
    encoder, changed = trained("frozen")
    assert not changed & ids(encoder.backbone.layers)
    assert moving_statistics(encoder.backbone.layers)  # BatchNorm statistics are among the unchanged
    assert ids([encoder.patch_encoder.projection]) <= changed
    assert encoder.backbone_variables == []


def test_last_n_1_changes_exactly_the_last_residual_unit_and_keeps_frozen_batchnorm_statistics():
    encoder, changed = trained("last_n", trainable_blocks=1)
    before, blocks, _ = encoder.backbone_parts()
    assert changed & ids(encoder.backbone.layers) == ids(blocks[-1])
    assert moving_statistics(blocks[-1]) <= changed
    assert not changed & (ids(before) | ids(blocks[0]) | ids(blocks[1]))
    assert moving_statistics(before + blocks[0] + blocks[1])
    assert ids([encoder.patch_encoder.projection]) <= changed
    assert {id(v) for v in encoder.backbone_variables} == {id(v) for layer in blocks[-1]
                                                           for v in layer.trainable_weights}


def test_all_trains_every_backbone_variable_and_batchnorm_statistics():
    encoder, changed = trained("all")
    assert ids(encoder.backbone.layers) <= changed
    assert len(encoder.backbone_variables) == len(encoder.backbone.trainable_weights) > 0


def test_trainable_blocks_outside_the_backbones_blocks_are_a_value_error():
    with pytest.raises(ValueError, match="trainable_blocks must be 1 to 3"):
        CnnImageEncoder("resnet50", "conv2_block3_out", image_size=32, train_backbone="last_n", trainable_blocks=4)


# ---- dtype, config, export -------------------------------------------------------------------------------


def test_mixed_bfloat16_builds_the_backbone_in_bfloat16_and_tokens_are_close_to_float32():
    kwargs = dict(backbone="resnet50", layer="conv3_block1_out", image_size=64, hidden_dim=HIDDEN)
    full = CnnImageEncoder(**kwargs)
    mixed = CnnImageEncoder(**kwargs, dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert {layer.dtype_policy.name for layer in mixed.backbone.layers[1:]} == {"mixed_bfloat16"}
    x = pixels(seed=9)
    full(x), mixed(x)
    mixed.set_weights(full.get_weights())
    tokens = mixed(x)[0]
    assert keras.backend.standardize_dtype(tokens.dtype) == "bfloat16"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(tokens, "float32")),
                               numpy_tokens(full, x), atol=0.1, rtol=0)


def test_get_config_round_trip_gives_the_same_layer_and_identical_outputs():
    encoder = CnnImageEncoder("vgg16", "block3_pool", image_size=32, hidden_dim=HIDDEN, positions="learned",
                              weights="imagenet", train_backbone="last_n", trainable_blocks=2, name="image_encoder")
    x = pixels(size=32, seed=11)
    expected = numpy_tokens(encoder, x)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert isinstance(clone, CnnImageEncoder) and clone.get_config() == encoder.get_config()
    clone(x)
    clone.set_weights(encoder.get_weights())
    np.testing.assert_array_equal(numpy_tokens(clone, x), expected)
    assert len(clone.trainable_variables) == len(encoder.trainable_variables)


def test_saved_model_export_has_core_ops_only_and_same_tokens(tmp_path):
    from tests.helpers.saved_models import assert_core_ops_only

    encoder = CnnImageEncoder("resnet50", "conv3_block1_out", image_size=64, hidden_dim=HIDDEN)
    x = pixels(seed=13)
    expected = numpy_tokens(encoder, x)
    path = str(tmp_path / "saved_cnn")
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint("serve", lambda images: encoder(images, training=False)[0],
                         input_signature=[tf.TensorSpec((None, 64, 64, 3), tf.float32)])
    archive.write_out(path, verbose=False)
    assert_core_ops_only(path)
    loaded = tf.saved_model.load(path)  # kept: the function needs the object that holds the variables
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-5, rtol=0)
