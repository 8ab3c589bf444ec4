"""Parity of tfcaption's M2 with the authors' released implementation, on the shared reference fixture.

The fixture (`shared/fixtures/m2_reference`) is a small M2 saved in the released checkpoint formats,
with what the authors' PyTorch code computes for it (see its README). A converted model must give
the same encoder outputs, teacher-forced log-probabilities and beams, to float32 rounding.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.m2_fixture import FILES, FIXTURE, requires_fixture
from tfcaption.data.tokenizer import SpecialIds, Vocabulary
from tfcaption.interop.m2.vocab import load_m2_vocab
from tfcaption.decoding import decode
from tfcaption.samplers import BeamSampler
from tfcaption.interop.m2.convert import convert_m2, infer_config
from tfcaption.interop.torch_checkpoint import load_state_dict

pytestmark = requires_fixture(*FILES)

TOLERANCE = 1e-5  # encoder outputs and log-probs, max abs difference (float32 against the float32 reference)
BEAM_TOLERANCE = 1e-4  # beam scores and per-step log-probs


@pytest.fixture(scope="module")
def reference():
    config = json.loads((FIXTURE / "config.json").read_text())
    inputs = dict(np.load(FIXTURE / "inputs.npz"))
    expected = dict(np.load(FIXTURE / "expected.npz"))
    state_dict = load_state_dict(FIXTURE / "m2_tiny.pth")
    itos = load_m2_vocab(FIXTURE / "vocab.pkl")
    model = convert_m2(state_dict, itos, num_heads=config["h"])
    return {"config": config, "inputs": inputs, "expected": expected, "state_dict": state_dict, "itos": itos,
            "model": model, "ids": SpecialIds.of(Vocabulary(itos))}  # the converted run's vocabulary's


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def test_inferred_config_is_the_fixture_model(reference):
    c, model = reference["config"], reference["model"]
    mc = model.config
    assert (mc.image_encoder.feature_dim, mc.hidden_dim, mc.num_heads, mc.key_dim, mc.intermediate_dim) == (
        c["d_in"], c["d_model"], c["h"], c["d_k"], c["d_ff"])
    assert (mc.encoder.num_layers, mc.decoder.num_layers, mc.encoder.memory_slots, mc.max_length) == (
        c["n_enc"], c["n_dec"], c["m"], c["max_len"])
    assert mc.vocab_size == c["vocab_size"] == len(reference["itos"])
    ids = reference["ids"]  # the special ids are the vocabulary's, and they are M2's
    assert (ids.bos_id, ids.eos_id, ids.pad_id) == (c["bos_idx"], c["eos_idx"], c["pad_idx"])
    assert not {"bos_id", "eos_id", "pad_id"} & set(mc.to_dict())
    assert mc.image_encoder.padding_mask == "released" and mc.encoder.memory_init == "released"
    assert model.dtype_policy.name == "float32" and mc.decoder.type == "meshed"
    assert all(w.dtype == "float32" for w in model.weights)


def test_every_encoder_layer_matches_the_reference(reference):
    model, expected = reference["model"], reference["expected"]
    outputs, _ = model.encode(reference["inputs"]["features"], training=False)
    outputs = np.asarray(outputs)
    assert outputs.shape == expected["encoder_output_f32"].shape == (3, 3, 10, 64)
    for layer in range(outputs.shape[1]):
        diff = _max_diff(outputs[:, layer], expected["encoder_output_f32"][:, layer])
        assert diff < TOLERANCE, f"encoder layer {layer}: max abs diff {diff:.2e}"
        # The float32 reference itself is within this of the float64 one; so are we.
        assert _max_diff(outputs[:, layer], expected["encoder_output_f64"][:, layer]) < TOLERANCE
    # The outputs carry signal (not a degenerate match of zeros).
    assert float(np.abs(outputs).mean()) > 0.1


def test_released_padding_mask_attends_to_everything(reference):
    model, expected, features = reference["model"], reference["expected"], reference["inputs"]["features"]
    released = expected["encoder_mask_f32"]  # True = masked, shape (B, 1, 1, R)
    assert released.shape == (3, 1, 1, 10) and not released.any()
    padded_rows = ~np.any(features != 0, axis=-1)
    assert padded_rows.sum(axis=1).tolist() == [0, 1, 3]  # the fixture really has padding ...
    _, mask = model.encode(features, training=False)
    mask = np.asarray(mask)  # ours: True = attend
    assert mask.all()  # ... and, as released, it is attended to
    np.testing.assert_array_equal(~mask, released[:, 0, 0, :])


def test_teacher_forced_log_probs_match_the_reference(reference):
    model, inputs, expected = reference["model"], reference["inputs"], reference["expected"]
    tokens = inputs["tokens"]
    assert (tokens == reference["ids"].pad_id).any()  # padded captions: the mask is what M2's padding does
    logits = model({"features": inputs["features"], "tokens": tokens,
                    "padding_mask": tokens != reference["ids"].pad_id}, training=False)
    log_probs = tf.nn.log_softmax(logits).numpy()
    assert log_probs.shape == expected["log_probs_f32"].shape == (3, 9, 30)
    diff = _max_diff(log_probs, expected["log_probs_f32"])
    assert diff < TOLERANCE, f"log-probs max abs diff {diff:.2e}"
    # Same argmax everywhere: the match is not merely within tolerance of a flat distribution.
    np.testing.assert_array_equal(log_probs.argmax(-1), expected["log_probs_f32"].argmax(-1))


@pytest.mark.parametrize("stop_early", [False, True], ids=["released-fixed-steps", "stop-early"])
def test_beam_search_matches_the_reference(reference, stop_early):
    model, inputs, expected = reference["model"], reference["inputs"], reference["expected"]
    config = reference["config"]
    encoder_outputs, mask = model.encode(inputs["features"], training=False)
    sampler = BeamSampler(num_beams=config["beam_size"], fill_token_id=0, length_penalty=0.0, stop_early=stop_early)
    beams = decode(model, encoder_outputs, mask, sampler, config["beam_max_len"], special_ids=reference["ids"])
    tokens = beams["tokens"].numpy()
    assert tokens.shape == expected["beam_tokens_f32"].shape == (3, 3, 12)
    np.testing.assert_array_equal(tokens, expected["beam_tokens_f32"])
    score_diff = _max_diff(beams["scores"], expected["beam_scores_f32"])
    step_diff = _max_diff(beams["log_probs"], expected["beam_step_log_probs_f32"])
    assert score_diff < BEAM_TOLERANCE, f"beam scores max abs diff {score_diff:.2e}"
    assert step_diff < BEAM_TOLERANCE, f"beam step log-probs max abs diff {step_diff:.2e}"
    # Scores are the sums of the step log-probs (0 after <eos>), best beam first.
    np.testing.assert_allclose(beams["log_probs"].numpy().sum(-1), beams["scores"].numpy(), atol=1e-4)
    assert np.all(np.diff(beams["scores"].numpy(), axis=-1) <= 0)
    ended = (tokens == config["eos_idx"]).any(-1)
    assert ended.any(-1).tolist() == [False, True, True]  # two images end with <eos>, one does not


def test_legacy_and_zip_checkpoints_convert_to_identical_weights(reference):
    zipped = load_state_dict(FIXTURE / "m2_tiny_zip.pth")
    assert infer_config(zipped, num_heads=reference["config"]["h"]) == reference["model"].config
    other = convert_m2(zipped, reference["itos"], num_heads=reference["config"]["h"])
    ours = {w.path: w.numpy() for w in reference["model"].weights}
    theirs = {w.path: w.numpy() for w in other.weights}
    assert list(ours) == list(theirs) and len(ours) > 100
    for path in ours:
        np.testing.assert_array_equal(ours[path], theirs[path], err_msg=path)
    # And those weights are the checkpoint's (the output layer, stored (out, in) by PyTorch).
    np.testing.assert_array_equal(ours["decoder/logits/kernel"], reference["state_dict"]["decoder.fc.weight"].T)
