"""An imported BLIP run (fixture blip_a) exported with tfcaption-export, read in a process that imports TensorFlow
only: transformers' generate() token ids, captions and beam scores (beam-3 through `serving_default`, greedy
through `sample` at temperature 0), with and without a baked prompt; the prompt signature, its errors and core
ops only; then tfcaption-serve's REST API and page on the export with prompts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import requests

from tests.helpers.exports import quiet_env
from tests.helpers.hf_fixture import BLIP_EXPORTED, baked_prompts, expected, images, manifest, new_tokens
from tests.helpers.paths import HELPERS_DIR
from tests.serving.servers import b64, predict

FIXTURE = BLIP_EXPORTED
PROMPT, OTHER_PROMPT = baked_prompts()  # "a picture of" (the fixture's generate() prompt, the default), "a dog"
NEW_TOKENS = new_tokens()

# Loads both exports, calls every signature as listed in a JSON file, and prints {call name: outputs or
# {"error": message}}, each export's ops, and the foreign modules imported (none may be).
CHILD = r"""
import json, sys
sys.path.append(sys.argv.pop())  # tests/helpers, for saved_models (TensorFlow alone)
import numpy as np
import tensorflow as tf
from saved_models import graph_ops

exports, calls = json.load(open(sys.argv[1])), json.load(open(sys.argv[3]))
images = list(np.load(sys.argv[2], allow_pickle=True))
loaded = {name: tf.saved_model.load(path) for name, path in exports.items()}
dtypes = {"temperature": tf.float32, "top_k": tf.int32, "top_p": tf.float32, "seed": tf.int64,
          "max_length": tf.int32, "prompt": tf.string}
answers = {}
for call in calls:
    feed = {"image_bytes": tf.constant([images[i] for i in call["rows"]])}
    feed.update({k: tf.constant(v, dtypes[k]) for k, v in call.get("inputs", {}).items()})
    try:
        out = loaded[call["export"]].signatures[call["signature"]](**feed)
        answers[call["name"]] = {k: np.char.decode(v.numpy().astype(bytes)).tolist() if v.dtype == tf.string
                                 else v.numpy().tolist() for k, v in out.items()}
    except tf.errors.InvalidArgumentError as error:
        answers[call["name"]] = {"error": error.message}
answers["ops"], answers["unregistered_ops"] = {}, {}
for name, path in exports.items():
    answers["ops"][name], answers["unregistered_ops"][name] = graph_ops(path)
    answers["signatures_" + name] = sorted(loaded[name].signatures)
answers["modules"] = sorted(m for m in sys.modules if m.startswith(("tfcaption", "tensorflow_text")))
print(json.dumps(answers))
"""

ROWS = [0, 1, 2]
GREEDY = {"temperature": [0.0] * 3, "top_k": [0] * 3, "top_p": [1.0] * 3, "seed": [0] * 3, "max_length": [0] * 3}
CALLS = [
    {"name": "beam3", "export": "plain", "signature": "serving_default", "rows": ROWS},
    {"name": "greedy", "export": "plain", "signature": "sample", "rows": ROWS, "inputs": GREEDY},
    {"name": "beam3_prompt", "export": "prompt", "signature": "serving_default", "rows": ROWS},
    {"name": "greedy_prompt", "export": "prompt", "signature": "sample", "rows": ROWS, "inputs": GREEDY},
    {"name": "attention_prompt", "export": "prompt", "signature": "caption_with_attention", "rows": ROWS},
    # The prompt signature: empty (the default), the default written out, with spaces around it.
    {"name": "asked_prompt", "export": "prompt", "signature": "caption_with_prompt", "rows": ROWS,
     "inputs": {"prompt": ["", PROMPT, f"  {PROMPT} "]}},
    # Each baked prompt decodes its own rows; the batch comes back in request order.
    {"name": "mixed_prompts", "export": "prompt", "signature": "caption_with_prompt", "rows": [1, 0, 2, 1],
     "inputs": {"prompt": [OTHER_PROMPT, PROMPT, OTHER_PROMPT, PROMPT]}},
    {"name": "other_alone", "export": "prompt", "signature": "caption_with_prompt", "rows": [1],
     "inputs": {"prompt": [OTHER_PROMPT]}},
    {"name": "unknown_prompt", "export": "prompt", "signature": "caption_with_prompt", "rows": [0, 1],
     "inputs": {"prompt": [PROMPT, "a cat"]}},
    {"name": "short_prompts", "export": "prompt", "signature": "caption_with_prompt", "rows": [0, 1],
     "inputs": {"prompt": [PROMPT]}},
]


@pytest.fixture(scope="module")
def child(blip_exports, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("blip_child")
    paths = {name: str(workdir / f"{name}.json") for name in ("exports", "calls")}
    with open(paths["exports"], "w") as f:
        json.dump({"plain": blip_exports["plain"], "prompt": blip_exports["prompt"]}, f)
    with open(paths["calls"], "w") as f:
        json.dump(CALLS, f)
    payload = str(workdir / "images.npy")
    np.save(payload, np.array([path.read_bytes() for path in images()], dtype=object), allow_pickle=True)
    # cwd: a folder without the repository's packages, so none of them can be imported by accident.
    result = subprocess.run([sys.executable, "-c", CHILD, paths["exports"], payload, paths["calls"], HELPERS_DIR],
                            capture_output=True, text=True, timeout=600, env=quiet_env(), cwd=str(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def reference(case):
    """transformers' captions and token ids for a generate() case (ids without the leading [DEC])."""
    return manifest()["models"][FIXTURE]["generation"]["captions"][case], expected(FIXTURE)[f"generate_{case}"][:, 1:]


def assert_generate_tokens(tokens, reference_ids, fill):
    """The export's tokens begin with generate()'s ids (prompt pieces included); every later one is `fill`."""
    tokens = np.asarray(tokens)
    width = reference_ids.shape[1]
    assert tokens.shape[1] >= width
    np.testing.assert_array_equal(tokens[:, :width], reference_ids)
    assert (tokens[:, width:] == fill).all()


@pytest.mark.parametrize("case", ["greedy", "beam3", "greedy_prompt", "beam3_prompt"])
def test_exported_blip_captions_equal_transformers_generate_in_a_tensorflow_only_process(child, case):
    captions, ids = reference(case)
    out = child[case]
    assert out["caption"] == captions
    sep, pad = manifest()["models"][FIXTURE]["token_ids"]["sep"], manifest()["models"][FIXTURE]["token_ids"]["pad"]
    # A finished beam is filled with [SEP] (the pad id is 0), a finished greedy row with [PAD], as generate() does.
    assert_generate_tokens(out["tokens"], ids, sep if case.startswith("beam") else pad)
    if case.startswith("beam"):
        np.testing.assert_allclose(out["score"], expected(FIXTURE)[f"generate_{case}_sequences_scores"], atol=1e-4)
        assert [beams[0] for beams in out["beam_captions"]] == captions


def test_the_graph_has_core_tensorflow_ops_only_and_loads_without_tfcaption(child):
    assert child["modules"] == []
    forbidden = {"PyFunc", "EagerPyFunc", "PyFuncStateless", "HashTableV2", "LookupTableFindV2"}
    for name in ("plain", "prompt"):
        assert child["unregistered_ops"][name] == []  # tensorflow-text's ops would be unregistered here
        assert not forbidden & set(child["ops"][name])
    assert child["signatures_plain"] == ["caption_with_attention", "sample", "serving_default"]
    assert child["signatures_prompt"] == ["caption_with_attention", "caption_with_prompt", "sample",
                                          "serving_default"]


def test_the_attention_signature_decodes_as_serving_default_with_the_default_prompt(child):
    out = child["attention_prompt"]
    assert out["caption"] == child["beam3_prompt"]["caption"]
    attention = np.array(out["attention"])  # (B, T, 1 + patches): the class token, then the 4 x 4 patches
    assert attention.shape == (3, len(PROMPT.split()) + NEW_TOKENS, 17)
    assert out["patch_grid"] == [[4, 4]] * 3
    prompt_steps = len(PROMPT.split())
    assert (attention[:, :prompt_steps] == 0).all()  # the prompt's pieces are given, not generated
    np.testing.assert_allclose(attention[:, prompt_steps].sum(-1), 1.0, atol=1e-5)


def test_an_empty_prompt_is_the_default_and_a_prompt_matches_as_written_around_spaces(child):
    assert child["asked_prompt"]["caption"] == child["beam3_prompt"]["caption"]
    assert child["asked_prompt"]["tokens"] == child["beam3_prompt"]["tokens"]


def test_rows_with_different_prompts_in_one_call_come_back_in_request_order(child):
    mixed, beam3 = child["mixed_prompts"], child["beam3_prompt"]
    assert mixed["caption"][1] == beam3["caption"][0] and mixed["caption"][3] == beam3["caption"][1]
    assert mixed["caption"][0] == child["other_alone"]["caption"][0]
    assert all(caption.startswith(OTHER_PROMPT) for caption in (mixed["caption"][0], mixed["caption"][2]))
    # Tokens are padded to the longer prompt's length: the shorter prompt's rows end in fill.
    assert len({len(tokens) for tokens in mixed["tokens"]}) == 1
    assert mixed["tokens"][0][:len(child["other_alone"]["tokens"][0])] == child["other_alone"]["tokens"][0]


def test_a_prompt_not_baked_in_fails_the_call_naming_the_row_and_the_baked_prompts(child):
    message = child["unknown_prompt"]["error"]
    assert "prompt[1]: not a prompt baked into this export at export time, got [a cat]" in message
    assert f"it takes [{PROMPT}], [{OTHER_PROMPT}]" in message and "prompt[0]" not in message
    assert "prompt must hold one string per image" in child["short_prompts"]["error"]


def test_the_export_records_its_prompts_beam_search_and_tokenizer(blip_exports):
    with open(os.path.join(blip_exports["prompt"], "assets", "config.json")) as f:
        serving = json.load(f)["serving"]
    assert serving["prompts"]["default"] == PROMPT and serving["prompts"]["baked"] == [PROMPT, OTHER_PROMPT]
    assert serving["prompts"]["signature"] == "caption_with_prompt"
    # generate()'s prompt: [DEC] in place of the processor's [CLS], its final [SEP] left out
    dec = manifest()["models"][FIXTURE]["token_ids"]["dec"]
    assert serving["prompts"]["ids"][0] == [dec, *expected(FIXTURE)["prompt_input_ids"][0, 1:-1].tolist()]
    assert serving["beam_search"] == "generate_beam" and serving["resample"] == "bicubic"
    assert serving["signatures"] == ["serving_default", "caption_with_attention", "sample", "caption_with_prompt"]
    assets = sorted(os.listdir(os.path.join(blip_exports["prompt"], "assets")))
    assert assets == ["config.json", "tokenizer_config.json", "vocab.txt"]
    with open(os.path.join(blip_exports["plain"], "assets", "config.json")) as f:
        assert "prompts" not in json.load(f)["serving"]


def test_a_prompt_needs_a_tokenizer_that_takes_one():
    from tests.helpers.exports import WORDS
    from tfcaption.data.tokenizer import Vocabulary
    from tfcaption.export.saved_model import prompt_ids_of

    with pytest.raises(ValueError, match="--prompt needs a run whose tokenizer takes a prompt"):
        prompt_ids_of(Vocabulary.build([" ".join(WORDS)]), ["a red"], max_steps=4, max_length=10)


def test_a_prompt_too_long_for_the_position_table_is_one_line(blip_exports, tmp_path, capsys):
    from tfcaption.cli.export import main

    words = " ".join(["picture"] * 40)
    assert main(["--model", blip_exports["run"], "--export-root", str(tmp_path), "--prompt", words]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positions: shorten the prompt or lower --max-steps" in err[0]


def test_tfcaption_serve_answers_rest_predict_with_the_same_captions(blip_server, child):
    pictures = [b64(path.read_bytes()) for path in images()]
    response = predict(blip_server.url, "prompt", {"instances": pictures})
    assert response.status_code == 200, response.text
    assert [p["caption"] for p in response.json()["predictions"]] == child["beam3_prompt"]["caption"]
    instances = [{"image_bytes": picture, "prompt": prompt}
                 for picture, prompt in zip(pictures, ["", PROMPT, f" {PROMPT}"])]
    response = predict(blip_server.url, "prompt", {"instances": instances}, signature="caption_with_prompt")
    assert response.status_code == 200, response.text
    assert [p["caption"] for p in response.json()["predictions"]] == child["beam3_prompt"]["caption"]
    response = predict(blip_server.url, "prompt", {"instances": [{"image_bytes": pictures[0], "prompt": "a cat"}]},
                       signature="caption_with_prompt")
    assert response.status_code == 400
    assert "prompt[0]: not a prompt baked into this export at export time, got [a cat]" in response.json()["error"]


def test_tfcaption_serve_page_loads_and_lists_the_prompt_signature(blip_server):
    page = requests.get(blip_server.url + "/", timeout=30)
    assert page.status_code == 200 and "<html" in page.text.lower()
    models = {m["name"]: m for m in requests.get(blip_server.url + "/tfcaption/models", timeout=30).json()["models"]}
    assert set(models) == {"prompt"}
    prompt = models["prompt"]
    assert set(prompt["signatures"]["caption_with_prompt"]["inputs"]) == {"image_bytes", "prompt"}
    assert prompt["serving"]["prompts"]["default"] == PROMPT
