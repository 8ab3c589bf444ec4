import numpy as np

import keras

from tfcaption.models import PRESETS, Captioner, CaptionerConfig


def _config(**overrides):
    return CaptionerConfig.from_preset(
        "small", image_size=32, patch_size=8, hidden_dim=32, key_dim=8, intermediate_dim=64, memory_slots=4,
        vocab_size=14, max_length=12, **overrides
    )


def test_presets_have_the_paper_sizes():
    m2 = CaptionerConfig.from_preset("m2", vocab_size=10201)
    assert (m2.hidden_dim, m2.num_heads, m2.key_dim, m2.intermediate_dim) == (512, 8, 64, 2048)
    assert (m2.num_encoder_layers, m2.num_decoder_layers, m2.memory_slots, m2.dropout) == (3, 3, 40, 0.1)
    assert m2.layer_norm_epsilon == 1e-5
    assert set(PRESETS) >= {"m2", "small", "m2_regions", "m2_reference"}


def test_m2_region_model_has_the_papers_parameter_count():
    # 38.44M for the released model (10,201 words, 2048-d regions), counting the frozen
    # positional table of 55 rows (28,160 values) as the authors' count does.
    model = Captioner(CaptionerConfig.from_preset("m2_reference", vocab_size=10201))
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    assert abs(total - 38.44e6) < 0.005e6, total
    assert total - sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 55 * 512


def test_config_round_trips_and_the_model_is_registered():
    model = Captioner(_config())
    clone = Captioner.from_config(model.get_config())
    assert clone.config == model.config
    restored = CaptionerConfig.from_dict(model.config.to_dict())
    assert restored == model.config
    assert keras.saving.get_registered_object("tfcaption>Captioner") is Captioner


def test_weights_survive_save_and_load(tmp_path):
    model = Captioner(_config())
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    tokens = np.array([[2, 5, 6], [2, 7, 1]])
    before = np.asarray(model({"images": images, "tokens": tokens}))
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    clone = Captioner(model.config)
    clone.load_weights(path)
    np.testing.assert_allclose(np.asarray(clone({"images": images, "tokens": tokens})), before, atol=1e-6)


def test_bfloat16_policy_keeps_logits_float32():
    model = Captioner(_config(dtype_policy="mixed_bfloat16"))
    logits = model({"images": np.zeros((1, 32, 32, 3), "float32"), "tokens": np.array([[2, 5]])})
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.decoder.word_embedding.compute_dtype == "bfloat16"
