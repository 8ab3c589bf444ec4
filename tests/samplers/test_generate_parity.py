"""Decoding reproduces transformers' `generate()` for BLIP: every fixture case (greedy and beam-3, with and
without the prompt, min_length, repetition_penalty, no_repeat_ngram_size) gives the fixture's token ids,
and the beam cases' `sequences_scores` within 1e-4 (`assert_close`).

transformers' rows are cut at the longest returned row; tfcaption's are `max_steps` wide after the prompt, so
the columns past the fixture's hold the fill token (greedy: [PAD]; beams: transformers' fill rule).
"""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.hf_fixture import BLIP_MODELS, assert_close, config, expected, manifest, tensors
from tfcaption import samplers
from tfcaption.data.tokenizer import SpecialIds
from tfcaption.decoding.captioning import decode
from tfcaption.interop.hf.blip_weights import bert_text_decoder_from_hf, blip_vision_tower_from_hf

CONTROLS = ("min_length", "repetition_penalty", "no_repeat_ngram_size")


@functools.lru_cache(maxsize=None)
def _model(name):
    weights = tensors(name)
    return blip_vision_tower_from_hf(config(name), weights), bert_text_decoder_from_hf(config(name), weights)


@functools.lru_cache(maxsize=None)
def _image_tokens(name):
    tower, _ = _model(name)
    return tower(np.transpose(expected(name)["pixel_values"], (0, 2, 3, 1)))[:, None]  # (B, 1, 1 + P, d)


def _cases(name):
    return manifest()["models"][name]["generation"]["cases"]


def _special_ids(name):
    text = config(name)["text_config"]
    return SpecialIds(pad_id=text["pad_token_id"], bos_id=text["bos_token_id"], eos_id=text["sep_token_id"])


def _prompt_ids(name):
    """generate()'s prompt: the processor's ids with [DEC] first and the final [SEP] dropped."""
    ids = expected(name)["prompt_input_ids"].copy()
    ids[:, 0] = config(name)["text_config"]["bos_token_id"]
    return tf.constant(ids[:, :-1], tf.int32)


def _sampler(case):
    controls = {key: case[key] for key in CONTROLS if key in case}
    if case["num_beams"] > 1:
        return samplers.GenerateBeamSampler(num_beams=case["num_beams"], **controls)
    return samplers.GreedySampler(**controls)


def _decode(name, case, jit_compile=False):
    _, decoder = _model(name)
    model = SimpleNamespace(decoder=decoder)
    prompt = _prompt_ids(name) if case["prompt"] else None

    def run(image_tokens):
        out = decode(model, image_tokens, None, _sampler(case), case["max_new_tokens"], special_ids=_special_ids(name),
                     prompt_ids=prompt)
        return out["tokens"][:, 0], out["scores"][:, 0]

    if jit_compile:
        run = tf.function(run, jit_compile=True)
    tokens, scores = run(_image_tokens(name))
    return tokens.numpy(), scores.numpy()


def _check(name, case_name, tokens, scores):
    case = _cases(name)[case_name]
    reference = expected(name)[f"generate_{case_name}"]
    width = reference.shape[1] - 1  # transformers' rows start with [DEC]; tfcaption's do not
    np.testing.assert_array_equal(tokens[:, :width], reference[:, 1:])
    fill = _special_ids(name).pad_id if case["num_beams"] == 1 else reference[:, -1:]
    if tokens.shape[1] > width:
        # Past transformers' cut every row has ended: only the fill token follows.
        np.testing.assert_array_equal(tokens[:, width:], np.broadcast_to(fill, tokens[:, width:].shape))
    if case["num_beams"] > 1:
        assert_close(scores, expected(name)[f"generate_{case_name}_sequences_scores"])


@pytest.mark.parametrize("name", BLIP_MODELS)
@pytest.mark.parametrize("case_name", sorted(_cases("blip_a")))
def test_generate_case_gives_transformers_ids_and_scores(name, case_name):
    tokens, scores = _decode(name, _cases(name)[case_name])
    _check(name, case_name, tokens, scores)


@pytest.mark.parametrize("name", BLIP_MODELS)
@pytest.mark.parametrize("case_name", ["beam3", "beam3_prompt", "greedy_prompt", "beam3_prompt_repetition_penalty",
                                       "beam3_prompt_no_repeat_ngram", "beam3_prompt_min_length"])
def test_generate_case_under_xla_gives_transformers_ids_and_scores(name, case_name):
    tokens, scores = _decode(name, _cases(name)[case_name], jit_compile=True)
    _check(name, case_name, tokens, scores)


def test_one_prompt_for_every_image_and_m2_beams_take_the_prompt_too():
    """A (P,) prompt equals the same prompt given per image, and the M2 `BeamSampler` with one beam feeds it
    as greedy does (its fill token after the end is [PAD], as greedy's)."""
    name = "blip_a"
    _, decoder = _model(name)
    model, ids = SimpleNamespace(decoder=decoder), _special_ids(name)
    reference = expected(name)["generate_greedy_prompt"][:, 1:]
    for sampler, prompt in ((samplers.GreedySampler(), _prompt_ids(name)[0]),
                            (samplers.BeamSampler(num_beams=1), _prompt_ids(name))):
        out = decode(model, _image_tokens(name), None, sampler, 8, special_ids=ids, prompt_ids=prompt)
        assert out["tokens"].shape[-1] == prompt.shape[-1] - 1 + 8  # the prompt's pieces, then 8 new tokens
        np.testing.assert_array_equal(out["tokens"][:, 0, :reference.shape[1]].numpy(), reference)
        assert np.all(out["log_probs"][:, 0, :prompt.shape[-1] - 1].numpy() == 0.0)
