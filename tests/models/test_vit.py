"""The native ViT backbone and Google's `.npz` checkpoints: a numpy forward pass, vit-keras, the loader's errors.

A tiny random checkpoint in Google's layout (patch 8, hidden 32, 4 heads, 2 layers, mlp 64, 32x32
images: a 4x4 grid) is written once per module. Nothing here downloads: the download error is checked
against an unreachable URL, and `urlopen` is replaced by a failing stub where a cached file must be used.
"""

import io
import math
import os
import shutil
import urllib.request

import keras
import numpy as np
import pytest
import scipy.ndimage

from tests.helpers import vit_checkpoint
from tests.helpers.optional import needs_vit_keras, vit_keras
from tests.helpers.vit_checkpoint import ATTENTION, BLOCK
from tfcaption.layers.vit import VisionTransformer, VitBlock
from tfcaption.models.vit import (
    ARCHITECTURES, CACHE_ENV, CheckpointNotFoundError, checkpoint_path, load_npz_weights, read_npz,
    resize_position_embedding, vit_from_npz,
)


PATCH, HIDDEN, HEADS, LAYERS, MLP, IMAGE = 8, 32, 4, 2, 64, 32
GRID = IMAGE // PATCH


def random_checkpoint(seed=0):
    return vit_checkpoint.random_checkpoint(seed, PATCH, HIDDEN, HEADS, LAYERS, MLP, GRID)


def images(height=IMAGE, width=IMAGE, batch=2, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, height, width, 3)).astype("float32")


# --- the numpy reference: Google's ViT forward pass (models_vit.py), written out ---------------------

_erf = np.vectorize(math.erf)


def _layer_norm(x, scale, bias, epsilon=1e-6):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * scale + bias


def _gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_vit(arrays, pixels, gelu, pos_embedding=None):
    """All tokens after `encoder_norm`, in float64; `pos_embedding` overrides the checkpoint's."""
    a = {k: v.astype("float64") for k, v in arrays.items()}
    kernel = a["embedding/kernel"]
    patch, hidden = kernel.shape[0], kernel.shape[-1]
    batch, height, width, _ = pixels.shape
    rows, cols = height // patch, width // patch
    cells = pixels.astype("float64").reshape(batch, rows, patch, cols, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    x = cells.reshape(batch, rows * cols, -1) @ kernel.reshape(-1, hidden) + a["embedding/bias"]
    x = np.concatenate([np.broadcast_to(a["cls"], (batch, 1, hidden)), x], axis=1)
    pos = a["Transformer/posembed_input/pos_embedding"] if pos_embedding is None else pos_embedding
    x = x + pos
    for i in range(len({k.split("/")[1] for k in a if k.startswith("Transformer/encoderblock_")})):
        p = BLOCK.format(i) + "/"
        y = _layer_norm(x, a[p + "LayerNorm_0/scale"], a[p + "LayerNorm_0/bias"])
        q, k, v = (np.einsum("bnd,dhk->bnhk", y, a[f"{p}{ATTENTION}/{n}/kernel"]) + a[f"{p}{ATTENTION}/{n}/bias"]
                   for n in ("query", "key", "value"))
        weights = _softmax(np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(q.shape[-1]))
        attended = np.einsum("bhqs,bshk->bqhk", weights, v)
        x = x + np.einsum("bqhk,hkd->bqd", attended, a[f"{p}{ATTENTION}/out/kernel"]) + a[f"{p}{ATTENTION}/out/bias"]
        y = _layer_norm(x, a[p + "LayerNorm_2/scale"], a[p + "LayerNorm_2/bias"])
        y = _gelu(y @ a[p + "MlpBlock_3/Dense_0/kernel"] + a[p + "MlpBlock_3/Dense_0/bias"], gelu)
        x = x + y @ a[p + "MlpBlock_3/Dense_1/kernel"] + a[p + "MlpBlock_3/Dense_1/bias"]
    return _layer_norm(x, a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"])


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arrays():
    return random_checkpoint()


@pytest.fixture(scope="module")
def npz(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("vit") / "tiny_vit.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def models(npz):
    """`vit_from_npz` at the checkpoint's size, for both GELU forms."""
    return {gelu: vit_from_npz(npz, gelu=gelu) for gelu in ("tanh", "erf")}


@pytest.fixture
def no_download(monkeypatch):
    """Any download attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected download: {args[0] if args else kwargs}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# --- the architecture and the forward pass --------------------------------------------------------------


def test_architecture_is_inferred_from_the_arrays(npz):
    checkpoint = read_npz(npz)
    assert (checkpoint.patch_size, checkpoint.hidden_dim, checkpoint.num_heads, checkpoint.num_layers,
            checkpoint.mlp_dim) == (PATCH, HIDDEN, HEADS, LAYERS, MLP)
    assert checkpoint.grid == (GRID, GRID) and checkpoint.image_size == (IMAGE, IMAGE)
    assert checkpoint.architecture is None  # not one of Google's sizes
    assert "head/kernel" in checkpoint.arrays  # kept, not loaded
    assert ARCHITECTURES["vit_l32"]["file"] == "ViT-L_32.npz" and ARCHITECTURES["vit_l16"]["num_layers"] == 24


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_tokens_equal_numpy_reference(models, arrays, gelu):
    pixels = images()
    tokens = keras.ops.convert_to_numpy(models[gelu](pixels))
    assert tokens.shape == (2, 1 + GRID * GRID, HIDDEN) and tokens.dtype == np.float32
    np.testing.assert_allclose(tokens, numpy_vit(arrays, pixels, gelu), atol=1e-5, rtol=0)


def test_tanh_and_erf_gelu_give_measurably_different_tokens(models):
    pixels = images()
    tanh, erf = (keras.ops.convert_to_numpy(models[g](pixels)) for g in ("tanh", "erf"))
    difference = np.abs(tanh - erf).max()
    assert 1e-4 < difference < 5e-2, difference  # far above the 1e-5 tolerance, far below a wrong model


def test_tokens_at_a_non_square_size_use_zoomed_position_embeddings(npz, arrays):
    model = vit_from_npz(npz, image_size=(32, 48))
    pixels = images(32, 48, batch=1)
    pos = arrays["Transformer/posembed_input/pos_embedding"].astype("float64")
    grid = scipy.ndimage.zoom(pos[0, 1:].reshape(GRID, GRID, HIDDEN), (4 / GRID, 6 / GRID, 1), order=1)
    expected = numpy_vit(arrays, pixels, "tanh", np.concatenate([pos[:, :1], grid.reshape(1, 24, HIDDEN)], 1))
    tokens = keras.ops.convert_to_numpy(model(pixels))
    assert tokens.shape == (1, 25, HIDDEN)
    np.testing.assert_allclose(tokens, expected, atol=1e-5, rtol=0)


@needs_vit_keras
@pytest.mark.filterwarnings("ignore::UserWarning")  # vit-keras warns about resizing and unused keys
@pytest.mark.parametrize("size", [IMAGE, 48], ids=["checkpoint_size", "resized_48"])
def test_erf_tokens_equal_vit_keras_encoder_norm_output(npz, size):
    reference = vit_keras.vit.build_model(image_size=size, patch_size=PATCH, num_layers=LAYERS, hidden_size=HIDDEN,
                                          num_heads=HEADS, name="vit_keras_tiny", mlp_dim=MLP, classes=10,
                                          dropout=0.0, include_top=False)
    vit_keras.utils.load_weights_numpy(reference, npz, pretrained_top=False, num_x_patches=size // PATCH,
                                       num_y_patches=size // PATCH)
    tokens_model = keras.Model(reference.input, reference.get_layer("Transformer_encoder_norm").output)
    pixels = images(size, size)
    expected = keras.ops.convert_to_numpy(tokens_model(pixels))
    tokens = keras.ops.convert_to_numpy(vit_from_npz(npz, image_size=size, gelu="erf")(pixels))
    assert tokens.shape == expected.shape == (2, 1 + (size // PATCH) ** 2, HIDDEN)
    np.testing.assert_allclose(tokens, expected, atol=1e-5, rtol=0)


# --- position embeddings --------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [6, (3, 5)])
def test_resize_position_embedding_is_scipy_zoom_on_the_grid_and_keeps_the_class_row(arrays, grid):
    pos = arrays["Transformer/posembed_input/pos_embedding"]
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    resized = resize_position_embedding(pos, grid)
    assert resized.shape == (1, 1 + rows * cols, HIDDEN) and resized.dtype == pos.dtype
    np.testing.assert_array_equal(resized[:, 0], pos[:, 0])
    zoomed = scipy.ndimage.zoom(pos[0, 1:].reshape(GRID, GRID, HIDDEN), (rows / GRID, cols / GRID, 1), order=1)
    np.testing.assert_allclose(resized[0, 1:], zoomed.reshape(rows * cols, HIDDEN), rtol=0, atol=0)
    np.testing.assert_array_equal(resized[0, 1], pos[0, 1])  # linear zoom keeps the corners
    np.testing.assert_array_equal(resized[0, -1], pos[0, -1])
    assert resize_position_embedding(pos, GRID) is pos


# --- errors and the cache --------------------------------------------------------------------------------


def test_missing_key_error_names_the_key_and_the_file(arrays, tmp_path):
    path = tmp_path / "broken.npz"
    key = "Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias"
    np.savez(path, **{k: v for k, v in arrays.items() if k != key})
    with pytest.raises(ValueError) as error:
        read_npz(path)
    message = str(error.value)
    assert key in message and str(path) in message and "\n" not in message


def test_inconsistent_shape_error_names_the_key_and_both_shapes(arrays, tmp_path):
    path = tmp_path / "inconsistent.npz"
    key = f"Transformer/encoderblock_1/{ATTENTION}/out/kernel"
    np.savez(path, **{**arrays, key: np.zeros((HEADS, HIDDEN // HEADS, HIDDEN + 1), "float32")})
    with pytest.raises(ValueError, match="out/kernel' has shape") as error:
        read_npz(path)
    message = str(error.value)
    assert str(path) in message and "(4, 8, 33)" in message and "(4, 8, 32)" in message and "\n" not in message


def test_not_an_npz_error_names_the_file(tmp_path):
    for name, write in (("text.npz", lambda p: p.write_text("not numpy\nat all\n")),
                        ("single.npy", lambda p: np.save(p, np.zeros(3)))):
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match="is not an .npz archive") as error:
            read_npz(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_local_file_and_unknown_name_are_one_line_errors(tmp_path, no_download):
    missing = str(tmp_path / "nowhere.npz")
    for call in (lambda: checkpoint_path(missing), lambda: read_npz(missing), lambda: vit_from_npz(missing)):
        with pytest.raises(CheckpointNotFoundError, match="nowhere.npz") as error:
            call()
        assert "\n" not in str(error.value) and isinstance(error.value, OSError)


def test_offline_download_error_names_the_cache_path(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointNotFoundError) as error:
        checkpoint_path("http://127.0.0.1:9/ViT-B_16.npz", cache_dir=str(cache))
    message = str(error.value)
    assert f"put it at {cache / 'ViT-B_16.npz'}" in message and CACHE_ENV in message and "\n" not in message
    assert not any(cache.iterdir())  # no partial file left behind


def test_unreachable_default_url_for_a_name_names_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setattr("tfcaption.models.vit.DEFAULT_URL", "http://127.0.0.1:9/{file}")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(CheckpointNotFoundError, match="http://127.0.0.1:9/ViT-L_16.npz") as error:
        checkpoint_path("vit_l16")
    assert f"put it at {tmp_path / 'ViT-L_16.npz'}" in str(error.value)


class _Response(io.BytesIO):
    """What `urlopen` returns, enough for a download."""


def test_download_goes_to_the_cache_once_and_an_error_page_is_not_kept(npz, tmp_path, monkeypatch):
    with open(npz, "rb") as f:
        payload = f.read()
    calls = []

    def serve(url, timeout=None):
        calls.append(url)
        return _Response(b"<html>quota exceeded</html>" if "bad" in url else payload)

    monkeypatch.setattr(urllib.request, "urlopen", serve)
    with pytest.raises(CheckpointNotFoundError, match="not an .npz archive"):
        checkpoint_path("https://example.com/bad/ViT-B_16.npz", cache_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())
    for _ in range(2):
        path = checkpoint_path("https://example.com/good/ViT-B_16.npz", cache_dir=str(tmp_path))
    assert calls[1:] == ["https://example.com/good/ViT-B_16.npz"] and os.listdir(tmp_path) == ["ViT-B_16.npz"]
    assert read_npz(path).num_layers == LAYERS


def test_file_already_in_the_cache_is_used_without_downloading(npz, tmp_path, monkeypatch, no_download):
    shutil.copy(npz, tmp_path / "ViT-B_16.npz")
    expected = str(tmp_path / "ViT-B_16.npz")
    for name in ("vit_b16", "ViT-B_16", "ViT-B_16.npz", "https://storage.googleapis.com/x/ViT-B_16.npz"):
        assert checkpoint_path(name, cache_dir=str(tmp_path)) == expected
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))  # the variable, when no argument is given
    assert checkpoint_path("vit_b16") == expected
    assert vit_from_npz("vit_b16").output.shape == (None, 1 + GRID * GRID, HIDDEN)
    assert checkpoint_path(npz) == npz  # a local path as is
    # vit-keras's download of the same checkpoint (keras.utils.get_file into ~/.keras/weights) is reused
    shutil.copy(npz, tmp_path / "ViT-B_32_imagenet21k.npz")
    assert checkpoint_path("vit_b32", cache_dir=str(tmp_path)) == str(tmp_path / "ViT-B_32_imagenet21k.npz")


def test_default_cache_is_keras_weights_folder(monkeypatch, tmp_path, no_download):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    os.makedirs(tmp_path / ".keras" / "weights")
    shutil.copy(__file__, tmp_path / ".keras" / "weights" / "ViT-L_32.npz")
    assert checkpoint_path("vit_l32") == str(tmp_path / ".keras" / "weights" / "ViT-L_32.npz")


def test_load_npz_weights_refuses_a_backbone_of_other_sizes(arrays):
    backbone = VisionTransformer(PATCH, HIDDEN, HEADS, LAYERS + 1, MLP, IMAGE)
    with pytest.raises(ValueError, match="num_layers"):
        load_npz_weights(backbone, arrays)


def test_image_size_must_be_a_multiple_of_the_patch_size():
    with pytest.raises(ValueError, match="multiples of patch_size"):
        VisionTransformer(PATCH, HIDDEN, HEADS, LAYERS, MLP, (32, 36))
    with pytest.raises(ValueError, match="gelu"):
        VitBlock(HIDDEN, HEADS, MLP, gelu="sigmoid")


# --- serialisation, precision, XLA, export ------------------------------------------------------------------


def test_get_config_round_trip_gives_same_outputs_with_same_weights(models):
    backbone = models["erf"].get_layer("vision_transformer")
    pixels = images()
    clone = VisionTransformer.from_config(backbone.get_config())
    clone.build((None, IMAGE, IMAGE, 3))
    clone.set_weights(backbone.get_weights())
    assert clone.gelu == "erf" and clone.image_size == (IMAGE, IMAGE)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(pixels)),
                                  keras.ops.convert_to_numpy(backbone(pixels)))
    block = backbone.blocks[1]
    block_clone = VitBlock.from_config(block.get_config())
    block_clone.build((None, 17, HIDDEN))
    block_clone.set_weights(block.get_weights())
    tokens = np.random.default_rng(2).standard_normal((2, 17, HIDDEN)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(block_clone(tokens)),
                                  keras.ops.convert_to_numpy(block(tokens)))


def test_keras_file_save_and_load_gives_identical_outputs(models, tmp_path):
    path = str(tmp_path / "vit.keras")
    models["tanh"].save(path)
    loaded = keras.saving.load_model(path)  # registered layers: no custom_objects, no unsafe Lambda
    pixels = images()
    assert isinstance(loaded.get_layer("vision_transformer"), VisionTransformer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(pixels)),
                                  keras.ops.convert_to_numpy(models["tanh"](pixels)))


def test_mixed_bfloat16_tokens_are_close_to_float32(models, npz):
    mixed = vit_from_npz(npz, dtype="mixed_bfloat16")
    backbone = mixed.get_layer("vision_transformer")
    assert backbone.compute_dtype == "bfloat16" and backbone.position_embedding.dtype == "float32"
    pixels = images()
    tokens = keras.ops.convert_to_numpy(keras.ops.cast(mixed(pixels), "float32"))
    reference = keras.ops.convert_to_numpy(models["tanh"](pixels))
    assert np.abs(tokens - reference).mean() < 0.02
    np.testing.assert_allclose(tokens, reference, atol=0.15, rtol=0)


def test_xla_compiled_backbone_gives_the_same_tokens(models):
    import tensorflow as tf

    backbone = models["tanh"].get_layer("vision_transformer")
    pixels = images()
    compiled = tf.function(lambda x: backbone(x, training=False), jit_compile=True)
    np.testing.assert_allclose(compiled(tf.constant(pixels)).numpy(),
                               keras.ops.convert_to_numpy(backbone(pixels)), atol=1e-5, rtol=0)


def test_saved_model_export_has_core_ops_only_and_same_tokens(models, tmp_path):
    import tensorflow as tf
    from tests.helpers.saved_models import assert_core_ops_only

    path = str(tmp_path / "saved_vit")
    models["tanh"].export(path, format="tf_saved_model", verbose=False)
    assert_core_ops_only(path)
    pixels = images()
    loaded = tf.saved_model.load(path)  # kept: the function needs the object that holds the variables
    served = loaded.serve(tf.constant(pixels))
    np.testing.assert_allclose(served.numpy(), keras.ops.convert_to_numpy(models["tanh"](pixels)),
                               atol=1e-5, rtol=0)
