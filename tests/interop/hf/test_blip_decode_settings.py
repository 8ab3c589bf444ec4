"""An imported BLIP run decodes as transformers' `generate()` by default (issue 30, items 2 and 4): its
`decode.beam_search` is "generate", so a beam size picks `GenerateBeamSampler` wherever the run is read
(`ImageCaptioner`, `tfcaption.load`, `tfcaption-evaluate`); its beam size and caption length are the checkpoint's
generate() defaults; `generate(prompt=...)` continues a text prompt, in memory from a Hub directory too."""

import dataclasses
import json
import shutil

import numpy as np
import pytest

import tfcaption
from tests.helpers.hf_fixture import expected, images, manifest, model_dir
from tfcaption import samplers
from tfcaption.config import RunConfig
from tfcaption.interop.hf.import_blip import IMPORT_RECORD, import_blip
from tfcaption.models.image_captioner import ImageCaptioner
from tfcaption.training.run_directory import RunDirectory

PROMPT = "a picture of"




def _paths():
    return [str(path) for path in images()]


def test_import_records_transformers_beam_search_and_generate_defaults(blip_runs):
    run = RunDirectory(blip_runs("blip_a"))
    config = RunConfig.load(run.config)
    assert (config.decode.beam_search, config.decode.beam_size, config.export.beam_size) == ("generate", 1, 1)
    assert config.data.max_decode_steps == 20 - 1  # transformers' max_length 20 counts [DEC]
    with open(run.join(IMPORT_RECORD)) as f:
        assert json.load(f)["generation"] == {"max_length": 20, "num_beams": 1}


def test_a_generation_config_sets_the_runs_beam_size_and_caption_length(tmp_path):
    source = tmp_path / "blip"
    shutil.copytree(model_dir("blip_a"), source)
    (source / "generation_config.json").write_text(json.dumps({"max_length": 12, "num_beams": 4}))
    captioner, run = import_blip(source, tmp_path / "run")
    config = RunConfig.load(run.config)
    assert (config.decode.beam_size, config.export.beam_size, config.data.max_decode_steps) == (4, 4, 11)
    for loaded in (captioner, ImageCaptioner.from_preset(run.path)):
        sampler = loaded.resolve_sampler()
        assert type(sampler) is samplers.GenerateBeamSampler and sampler.num_beams == 4


def test_auto_beam_search_is_transformers_for_a_blip_layout_model_and_m2_for_others(blip_runs):
    imported = RunConfig.load(RunDirectory(blip_runs("blip_a")).config)
    written_before = imported.replace(decode=dataclasses.replace(imported.decode, beam_search="auto"))
    assert (imported.beam_search, written_before.beam_search, RunConfig().beam_search) == ("generate", "generate", "m2")
    assert RunConfig().replace(decode=dataclasses.replace(imported.decode, beam_search="generate")).beam_search == \
        "generate"


def test_a_beam_size_on_an_imported_run_runs_transformers_beam_search(blip_runs):
    sampler = tfcaption.load(blip_runs("blip_a"), beam_size=3).backend.sampler
    assert type(sampler) is samplers.GenerateBeamSampler and sampler.num_beams == 3
    captioner = ImageCaptioner.from_preset(blip_runs("blip_a"))
    assert type(captioner.default_sampler(1)) is samplers.GreedySampler
    assert type(captioner.resolve_sampler("beam")) is samplers.BeamSampler  # asked for by name: M2's
    assert type(ImageCaptioner.from_config(captioner.get_config()).default_sampler(2)) is samplers.GenerateBeamSampler


@pytest.mark.parametrize("sampler, case", [("greedy", "greedy_prompt"), ("generate_beam", "beam3_prompt")])
def test_generate_with_a_prompt_on_a_hub_directory_gives_transformers_captions(sampler, case):
    captioner = ImageCaptioner.from_preset(model_dir("blip_b"))
    out = captioner.generate(_paths(), sampler=sampler, max_length=8, prompt=PROMPT, return_details=True)
    reference = expected("blip_b")[f"generate_{case}"][:, 1:]
    np.testing.assert_array_equal(np.array([o["tokens"] for o in out])[:, :reference.shape[1]], reference)
    assert [o["caption"] for o in out] == manifest()["models"]["blip_b"]["generation"]["captions"][case]


def test_the_default_length_counts_the_prompt_as_transformers_max_length(blip_runs):
    captioner = ImageCaptioner.from_preset(blip_runs("blip_b"))
    prompt_ids = captioner.preprocessor.prompt_ids(PROMPT)
    np.testing.assert_array_equal(prompt_ids, expected("blip_b")["prompt_input_ids"][0, :-1] * [0, 1, 1, 1]
                                  + [captioner.preprocessor.bos_id, 0, 0, 0])  # [DEC], then the processor's pieces
    out = captioner.generate(_paths()[:1], prompt=PROMPT, return_details=True)
    assert len(out[0]["tokens"]) == 20 - 1  # [DEC] + prompt + new tokens = max_length 20
    assert out[0]["caption"].startswith(PROMPT)


def test_one_prompt_per_image_equals_the_prompt_for_all(blip_runs):
    captioner = ImageCaptioner.from_preset(blip_runs("blip_a"))
    shared = captioner.generate(_paths(), sampler="greedy", max_length=4, prompt=PROMPT)
    assert captioner.generate(_paths(), sampler="greedy", max_length=4, prompt=[PROMPT] * 3) == shared
    shorter = captioner.generate(_paths(), sampler="greedy", max_length=4, prompt="a", return_details=True)
    assert [o["tokens"][0] for o in shorter] == [captioner.preprocessor.vocabulary.token_to_id("a")] * 3
    with pytest.raises(ValueError, match=r"the prompts give \[1, 3\] tokens"):
        captioner.generate(_paths()[:2], sampler="greedy", max_length=4, prompt=[PROMPT, "a"])
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        captioner.generate(_paths(), sampler="greedy", max_length=4, prompt=[PROMPT, PROMPT])


def test_evaluate_on_an_imported_run_scores_transformers_beam_search_captions(blip_runs, tiny_shapes, tmp_path, capsys):
    from tfcaption.cli import evaluate as evaluate_cli
    from tfcaption.data import pipeline
    from tfcaption.data.records import load_manifest
    from tfcaption.decoding import caption_batches

    output = tmp_path / "evaluation.json"
    assert evaluate_cli.main(["--model", blip_runs("blip_a"), "--data", tiny_shapes, "--splits", "test", "--beam-size", "3",
                              "--max-steps", "8", "--no-java", "--output", str(output)]) == 0
    table = capsys.readouterr().out
    assert "test/model" in table and "CIDEr-D" in table
    report = json.loads(output.read_text())
    predictions = report["predictions"]["test"]
    assert len(predictions) == load_manifest(tiny_shapes)["splits"]["test"]["images"]
    assert 0.0 <= report["report"]["test"]["model"]["cider_d"]
    # The run's beam search: transformers' (length-normalised scores), not M2's.
    captioner = ImageCaptioner.from_preset(blip_runs("blip_a"))
    encoder = captioner.backbone.image_encoder
    reference = caption_batches(captioner.backbone, captioner.preprocessor.vocabulary,
                                pipeline.eval_dataset(tiny_shapes, "test", 100, encoder.image_size, encoder.resample),
                                sampler=samplers.GenerateBeamSampler(num_beams=3), max_steps=8)
    assert [p["caption"] for p in predictions] == [r["caption"] for r in reference]
    np.testing.assert_allclose([p["score"] for p in predictions], [r["score"] for r in reference], rtol=1e-5)
    assert not any("[" in p["caption"] for p in predictions)  # [UNK], [PAD] and [SEP] are not caption text


@pytest.mark.parametrize("text, message", [('{"num_beams": 0}', "generation num_beams must be an integer >= 1, got 0"),
                                           ("{", "generation_config.json: not valid JSON")])
def test_a_bad_generation_config_is_one_line_and_exit_2(tmp_path, capsys, text, message):
    from tfcaption.cli.import_hub import main

    source = tmp_path / "blip"
    shutil.copytree(model_dir("blip_a"), source)
    (source / "generation_config.json").write_text(text)
    assert main([str(source), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
