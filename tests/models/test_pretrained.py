"""Pretrained backbones inside the captioner: sizes from the file, weights copied in, and how much of
the backbone trains (frozen, the last n blocks, all with a learning-rate multiplier), checked on one
real training step of the `Trainer` on the tiny shapes dataset.

The ViT checkpoint is random, in Google's layout, with sizes that are not ViT-B's (patch 8, width 48,
3 heads, 2 layers, MLP 96, 32 x 32 images). Nothing downloads.
"""

import urllib.request

import numpy as np
import pytest

from tests.helpers.tiny import TINY_SIZES
from tests.helpers.vit_checkpoint import write_checkpoint
from tfcaption.config import RunConfig
from tfcaption.data.vocabulary import build_vocabulary
from tfcaption.evaluation import training_captions
from tfcaption.layers.vit import VisionTransformer
from tfcaption.models import CaptionerBackbone, CaptionerConfig
from tfcaption.models.pretrained import load_pretrained, with_checkpoint_sizes, with_sizes_of
from tfcaption.models.vit import ARCHITECTURES, CheckpointNotFoundError, vit_from_npz

SIZES = {"patch_size": 8, "width": 48, "num_heads": 3, "num_layers": 2, "mlp_dim": 96}


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("vit") / "vit_tiny.npz", patch=8, hidden=48, heads=3,
                            layers=2, mlp=96, grid=4)


def vit_config(npz, image_size=32, **image_encoder):
    """The `vit_m2` structure at test size, its ViT sizes left to the checkpoint."""
    return CaptionerConfig.from_preset(
        "vit_m2", vocab_size=20, max_length=12, encoder={"num_layers": 1, "memory_slots": 4},
        decoder={"num_layers": 1}, image_encoder={"image_size": image_size, "weights": npz, **image_encoder},
        **TINY_SIZES)


def pixels(size=32, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def test_sizes_come_from_the_checkpoint_and_a_contradicting_size_is_a_one_line_error(npz):
    config = with_checkpoint_sizes(vit_config(npz))
    part = config.image_encoder
    assert {name: getattr(part, name) for name in SIZES} == SIZES and part.architecture == "custom"
    assert with_checkpoint_sizes(config) == config
    with pytest.raises(ValueError) as error:
        with_checkpoint_sizes(vit_config(npz, num_layers=12))
    assert "num_layers=12 (the file has 2)" in str(error.value) and "\n" not in str(error.value)


def test_a_resumed_run_compares_equal_once_its_saved_sizes_fill_the_zeros(npz):
    saved = with_checkpoint_sizes(vit_config(npz))
    assert vit_config(npz) != saved and with_sizes_of(vit_config(npz), saved) == saved
    assert with_sizes_of(vit_config(npz, num_layers=1), saved) != saved


@pytest.mark.parametrize("size", [32, 48])
def test_image_encoder_tokens_are_the_checkpoints_tokens_of_scaled_pixels_projected(npz, size):
    model = CaptionerBackbone.from_model_config(with_checkpoint_sizes(vit_config(npz, image_size=size)))
    described = load_pretrained(model)
    assert npz in described and ("resized 4x4 -> 6x6" in described) == (size == 48)
    images = pixels(size)
    tokens, mask = model.image_encoder(images)
    reference = vit_from_npz(npz, image_size=size)(images / 127.5 - 1.0)  # its own check: tests/models/test_vit.py
    projection = model.image_encoder.projection
    expected = np.asarray(reference) @ np.asarray(projection.kernel) + np.asarray(projection.bias)
    grid = size // 8
    assert mask is None and model.token_grid.to_dict() == {"rows": grid, "cols": grid, "prefix": 1}
    np.testing.assert_allclose(np.asarray(tokens), expected, atol=1e-5)


def test_an_unreachable_checkpoint_is_one_line_naming_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("TFCAPTION_VIT_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as error:
        with_checkpoint_sizes(CaptionerConfig.from_preset("cptr", vocab_size=20))
    message = str(error.value)
    assert str(tmp_path / "ViT-B_16.npz") in message and "\n" not in message


def test_real_size_vit_b16_has_vit_b16s_parameter_count_without_the_head():
    sizes = {k: v for k, v in ARCHITECTURES["vit_b16"].items() if k != "file"}
    backbone = VisionTransformer(**sizes)
    backbone.build()
    assert backbone.count_params() == 85_798_656


def test_full_size_presets_build_their_papers_structure():
    cptr = CaptionerConfig.from_preset("cptr", vocab_size=20)
    assert (cptr.image_encoder.type, cptr.image_encoder.image_size, cptr.encoder.num_layers) == ("vit", 384, 0)
    assert (cptr.decoder.type, cptr.decoder.num_layers, cptr.hidden_dim, cptr.num_heads) == ("transformer", 4, 768, 12)
    vit_m2 = CaptionerConfig.from_preset("vit_m2", vocab_size=20)
    assert (vit_m2.encoder.num_layers, vit_m2.encoder.memory_slots, vit_m2.decoder.type) == (3, 40, "meshed")
    spatial = RunConfig.from_preset("spatial_attention")
    part = spatial.model.image_encoder
    assert (part.type, part.backbone, part.positions, spatial.model.encoder.scale) == (
        "cnn", "vgg16", "sinusoid_2d", "sqrt_len_plus_dk")
    assert (spatial.model.intermediate_dim, spatial.train.learning_rate, spatial.data.max_caption_words) == (
        1024, 3e-4, 14)
    model = CaptionerBackbone.from_model_config(
        cptr.replace(image_encoder={**cptr.image_encoder.__dict__, "weights": ""}))
    assert model.token_grid.to_dict() == {"rows": 24, "cols": 24, "prefix": 1}
    assert model.image_encoder.projection is None  # CPTR's decoder reads ViT-B's 768-wide tokens as they are


# ---- one training step ------------------------------------------------------------------------------


def one_step(config, tiny_shapes, tmp_path, **train):
    """A Trainer of `config` on the tiny shapes data: its model before and after one training step."""
    from tfcaption.training.trainer import Trainer

    vocab = build_vocabulary("word", training_captions(tiny_shapes))
    run_config = RunConfig(model=config.replace(vocab_size=vocab.size, max_length=22))
    run_config.data.max_caption_words = 20
    for key, value in {"output_dir": str(tmp_path / "run"), "batch_size": 8, "warmup_steps": 0, "jit_compile": False,
                       "learning_rate_schedule": "constant", "learning_rate": 1e-3, **train}.items():
        setattr(run_config.train, key, value)
    trainer = Trainer(run_config, tiny_shapes, vocab, log=lambda *a: None)
    assert load_pretrained(trainer.model) is not None or not config.image_encoder.weights
    before = {v.path: np.array(v) for v in trainer.model.variables}
    trainer._train_step(next(iter(trainer._train_batches(0))))
    after = {v.path: np.array(v) for v in trainer.model.variables}
    return trainer, before, after


def changed(before, after):
    return {path for path in before if not np.array_equal(before[path], after[path])}


def test_a_frozen_vit_backbone_is_bit_identical_after_a_training_step(npz, tiny_shapes, tmp_path):
    trainer, before, after = one_step(vit_config(npz, train_backbone="frozen"), tiny_shapes, tmp_path)
    moved = changed(before, after)
    backbone = {v.path for v in trainer.model.image_encoder.backbone.variables}
    assert backbone and not moved & backbone
    assert any("projection" in path for path in moved) and any(path.startswith("decoder") for path in moved)


def test_last_n_trains_exactly_the_last_blocks_and_the_final_norm(npz, tiny_shapes, tmp_path):
    trainer, before, after = one_step(vit_config(npz, train_backbone="last_n", trainable_blocks=1), tiny_shapes,
                                      tmp_path)
    vit = trainer.model.image_encoder.backbone
    moved = changed(before, after)
    last = {v.path for v in vit.blocks[-1].variables + vit.encoder_norm.variables}
    assert {p for p in moved if p in {v.path for v in vit.variables}} == last


def test_backbone_learning_rate_multiplier_scales_the_backbones_first_adam_step(npz, tiny_shapes, tmp_path):
    # Adam's first step moves every weight with a non-zero gradient by the learning rate (m / sqrt(v) = +-1).
    trainer, before, after = one_step(vit_config(npz, backbone_lr_multiplier=0.1), tiny_shapes, tmp_path)
    backbone = {v.path for v in trainer.model.image_encoder.backbone.variables}
    steps = {path: np.abs(after[path] - before[path]).max() for path in changed(before, after)}
    assert max(steps[p] for p in steps if p in backbone) == pytest.approx(1e-4, rel=1e-2)
    assert steps["image_encoder/projection/kernel"] == pytest.approx(1e-3, rel=1e-2)
    assert "backbone_optimizer_state" in trainer.checkpoint._trackable_children()


def test_a_frozen_cnn_backbone_keeps_its_weights_and_batchnorm_statistics_after_a_training_step(tiny_shapes,
                                                                                                  tmp_path):
    config = CaptionerConfig.from_preset(
        "vit_m2", vocab_size=20, max_length=12, encoder={"num_layers": 1, "memory_slots": 4}, decoder={"num_layers": 1},
        image_encoder={"type": "cnn", "backbone": "resnet50", "image_size": 64, "train_backbone": "frozen"},
        **TINY_SIZES)
    trainer, before, after = one_step(config, tiny_shapes, tmp_path)
    backbone = trainer.model.image_encoder.backbone
    statistics = {v.path for v in backbone.non_trainable_variables if "moving" in v.path}
    assert statistics and {v.path for v in backbone.variables} >= statistics
    moved = changed(before, after)
    assert not moved & {v.path for v in backbone.variables}
    assert any("patch_encoder" in path for path in moved)


@pytest.mark.parametrize("name", ["cptr", "vit_m2", "spatial_attention", "clip_m2", "clip_transformer"])
def test_pretrained_presets_in_mixed_bfloat16_give_float32_logits_close_to_float32(name):
    from tests.helpers.tiny import example_inputs, tiny_preset

    full = CaptionerBackbone.from_model_config(tiny_preset(name))
    mixed = CaptionerBackbone.from_model_config(tiny_preset(name, dtype_policy="mixed_bfloat16"))
    mixed.set_weights(full.get_weights())
    inputs = example_inputs(full)
    logits = np.asarray(mixed(inputs))
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, np.asarray(full(inputs)), atol=0.15)  # measured up to 0.044 (logits ~3)


# ---- CLIP vision towers (Hugging Face checkpoints: tests/fixtures/hf) ----------------------------------


def clip_config(name="clip_full", **image_encoder):
    """`clip_m2`'s structure at test size, the tower's sizes left to the fixture checkpoint `name`."""
    from tests.helpers import hf_fixture

    return CaptionerConfig.from_preset(
        "clip_m2", vocab_size=20, max_length=12, encoder={"num_layers": 1, "memory_slots": 4},
        decoder={"num_layers": 1}, image_encoder={"weights": str(hf_fixture.model_dir(name)), **image_encoder},
        **TINY_SIZES)


@pytest.mark.parametrize("name", ["clip_full", "clip_vision"])
@pytest.mark.parametrize("output_layer,key", [("last", "last_hidden_state"),
                                              ("penultimate", "hidden_states_penultimate")])
def test_clip_encoder_tokens_are_transformers_hidden_states_projected(name, output_layer, key):
    from tests.helpers import hf_fixture

    config = with_checkpoint_sizes(clip_config(name, output_layer=output_layer, train_backbone="all"))
    model = CaptionerBackbone.from_model_config(config)
    assert load_pretrained(model) == f"CLIP vision weights ({output_layer} layer) from {hf_fixture.model_dir(name)}"
    encoder, reference = model.image_encoder, hf_fixture.expected(name)
    # the fixture's normalised pixels back in [0, 255], as the pipeline hands them over
    pixels = hf_fixture.expected(name)["pixel_values"].transpose(0, 2, 3, 1) * encoder.image_std + encoder.image_mean
    tokens, mask = encoder((pixels * 255).astype("float32"))
    assert mask is None and encoder.token_grid.prefix == 1
    expected = reference[key]
    if name == "clip_vision":  # 40 wide: projected to the captioner's d 32 (clip_full is 32 wide: as it is)
        kernel, bias = (np.asarray(w) for w in encoder.projection.weights)
        expected = expected @ kernel + bias
    else:
        assert encoder.projection is None
    np.testing.assert_allclose(np.asarray(tokens), expected, atol=1e-4)


def test_clip_sizes_come_from_config_json_and_a_contradiction_is_one_line():
    part = with_checkpoint_sizes(clip_config("clip_vision")).image_encoder
    assert (part.image_size, part.patch_size, part.width, part.num_heads, part.num_layers, part.mlp_dim,
            part.hidden_act, part.layer_norm_epsilon, part.architecture) == (36, 12, 40, 4, 3, 80, "gelu", 1e-6, "custom")
    with pytest.raises(ValueError) as error:
        with_checkpoint_sizes(clip_config("clip_vision", num_layers=12, image_size=224))
    message = str(error.value)
    assert "num_layers=12 (the file has 3)" in message and "image_size=224 (the file has 36" in message
    assert "\n" not in message
    saved = with_checkpoint_sizes(clip_config("clip_vision"))
    assert with_sizes_of(clip_config("clip_vision"), saved).image_encoder.num_layers == 3


@pytest.mark.parametrize("weights,message", [
    ("hf://openai/clip-vit-base-patch16", "hf download openai/clip-vit-base-patch16"),
    ("/no/such/dir", "/no/such/dir: no such checkpoint directory"),
])
def test_an_unreadable_clip_checkpoint_is_one_line_naming_what_to_put_where(weights, message, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an hf:// source not in the cache, as on a machine without network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CheckpointNotFoundError) as error:
        with_checkpoint_sizes(clip_config(weights=weights))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("train_backbone,trainable_blocks", [("frozen", 0), ("last_n", 1), ("all", 0)])
def test_clip_backbone_trains_as_configured_and_unused_layers_never(train_backbone, trainable_blocks, tiny_shapes,
                                                                   tmp_path):
    config = with_checkpoint_sizes(clip_config(train_backbone=train_backbone, trainable_blocks=trainable_blocks))
    trainer, before, after = one_step(config, tiny_shapes, tmp_path)
    tower = trainer.model.image_encoder.backbone  # 3 layers, penultimate: layers 0 and 1 run
    moved = changed(before, after) & {v.path for v in tower.variables}
    unused = {v.path for v in tower.encoder_layers[2].variables + tower.post_layernorm.variables}
    if train_backbone == "frozen":
        assert not moved
    elif train_backbone == "last_n":
        assert moved == {v.path for v in tower.encoder_layers[1].variables}
    else:
        assert moved == {v.path for v in tower.variables} - unused
    assert any(path.startswith("decoder") for path in changed(before, after))
