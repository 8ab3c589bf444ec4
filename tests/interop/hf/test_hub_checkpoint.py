"""HubCheckpoint on the parity fixtures: every directory reads, tensors equal the files, tied weights, errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from tests.helpers.hf_fixture import BLIP_MODELS, CLIP_MODELS, manifest, model_dir
from tests.helpers.paths import REPO_ROOT
from tests.helpers.pickles import Writer
from tfcaption.interop.hf import HubCheckpoint, HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.torch_checkpoint import load_state_dict

DECODER_WEIGHT = "text_decoder.cls.predictions.decoder.weight"
DECODER_BIAS = "text_decoder.cls.predictions.decoder.bias"
WORD_EMBEDDINGS = "text_decoder.bert.embeddings.word_embeddings.weight"
LM_BIAS = "text_decoder.cls.predictions.bias"


def _file_tensors(name):
    """The weight file's tensors read directly: safetensors' numpy API or the restricted unpickler."""
    path = model_dir(name) / manifest()["models"][name]["weights_file"]
    if path.suffix == ".safetensors":
        with safe_open(path, framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    return load_state_dict(path)


@pytest.mark.parametrize("name", BLIP_MODELS + CLIP_MODELS)
def test_every_fixture_reads_with_its_architecture_and_the_files_tensors_as_float32(name):
    model = manifest()["models"][name]
    ckpt = HubCheckpoint(model_dir(name))
    assert ckpt.architecture == model["kind"]
    assert ckpt.config == model["config"]
    direct = _file_tensors(name)
    assert len(direct) == model["tensors_in_weights_file"]
    tensors = ckpt.tensors()
    assert set(direct) <= set(tensors)
    for key, value in direct.items():
        assert tensors[key].dtype == np.float32 and tensors[key].shape == value.shape, key
        np.testing.assert_array_equal(tensors[key], value.astype(np.float32), err_msg=key)


def test_float16_file_loads_as_float32_exactly_what_the_file_holds():
    with safe_open(model_dir("blip_b") / "model.safetensors", framework="np") as f:
        raw = f.get_tensor("vision_model.embeddings.patch_embedding.weight")
    assert raw.dtype == np.float16
    loaded = HubCheckpoint(model_dir("blip_b")).require("vision_model.embeddings.patch_embedding.weight")
    assert loaded.dtype == np.float32 and loaded.shape == (48, 3, 16, 16)
    np.testing.assert_array_equal(loaded, raw.astype(np.float32))


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_tied_lm_head_comes_from_the_word_embeddings_and_the_prediction_bias(name):
    ckpt = HubCheckpoint(model_dir(name))
    direct = _file_tensors(name)
    assert DECODER_WEIGHT not in direct and DECODER_BIAS not in direct
    assert manifest()["models"][name]["tied_weights_absent"] == [DECODER_WEIGHT, DECODER_BIAS]
    text = ckpt.config["text_config"]
    weight, bias = ckpt.require(DECODER_WEIGHT), ckpt.require(DECODER_BIAS)
    assert weight.shape == (text["vocab_size"], text["hidden_size"]) and bias.shape == (text["vocab_size"],)
    np.testing.assert_array_equal(weight, direct[WORD_EMBEDDINGS].astype(np.float32))
    np.testing.assert_array_equal(bias, direct[LM_BIAS].astype(np.float32))
    assert DECODER_WEIGHT in ckpt and ckpt.names[-2:] == [DECODER_WEIGHT, DECODER_BIAS]


def test_tied_mapping_is_the_callers_to_replace_and_empty_when_the_config_unties(tmp_path):
    ckpt = HubCheckpoint(model_dir("clip_full"), tied={"lm_head.weight": "logit_scale"})
    np.testing.assert_array_equal(ckpt.require("lm_head.weight"), ckpt.require("logit_scale"))
    directory = _copy(model_dir("blip_a"), tmp_path / "untied")
    config = json.loads((directory / "config.json").read_text())
    config["text_config"]["tie_word_embeddings"] = False
    (directory / "config.json").write_text(json.dumps(config))
    untied = HubCheckpoint(directory)
    assert untied.tied == {} and DECODER_WEIGHT not in untied
    with pytest.raises(HubCheckpointError, match=f"pytorch_model.bin: no tensor '{DECODER_WEIGHT}'"):
        untied.require(DECODER_WEIGHT)


def test_clip_models_vision_tensors_under_the_prefix_have_the_vision_models_names():
    full = HubCheckpoint(model_dir("clip_full")).tensors(prefix="vision_model.")
    assert len(full) == manifest()["models"]["clip_full"]["vision_tensors"]
    assert set(full) == set(HubCheckpoint(model_dir("clip_vision")).tensors())
    assert full["embeddings.patch_embedding.weight"].shape == (32, 3, 8, 8)


def test_sharded_safetensors_with_an_index_read_as_one_checkpoint(tmp_path):
    directory = _copy(model_dir("blip_b"), tmp_path / "sharded", weights=False)
    direct = _file_tensors("blip_b")
    names = list(direct)
    shards = {"model-00001-of-00002.safetensors": names[:50], "model-00002-of-00002.safetensors": names[50:]}
    for file, keys in shards.items():
        save_file({k: direct[k] for k in keys}, str(directory / file))
    weight_map = {k: file for file, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ckpt = HubCheckpoint(directory)
    assert ckpt.weights.files == list(shards)
    for key in (names[0], names[60], WORD_EMBEDDINGS):
        np.testing.assert_array_equal(ckpt.require(key), direct[key].astype(np.float32))
    np.testing.assert_array_equal(ckpt.require(DECODER_WEIGHT), direct[WORD_EMBEDDINGS].astype(np.float32))
    (directory / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(HubFilesNotFoundError, match="model-00002-of-00002.safetensors: missing; "
                                                    "model.safetensors.index.json names it as a shard"):
        HubCheckpoint(directory).names


def test_sharded_pytorch_bin_in_float16_and_bfloat16_loads_as_float32(tmp_path):
    directory = _copy(model_dir("clip_vision"), tmp_path / "bin", weights=False)
    direct = _file_tensors("clip_vision")
    half_key, bf16_key = "embeddings.patch_embedding.weight", "post_layernorm.weight"
    half = direct[half_key].astype(np.float16)
    bf16_bits = (direct[bf16_key].view(np.uint32) >> 16).astype(np.uint16)
    for file, key, data, storage in (("pytorch_model-00001-of-00002.bin", half_key, half, None),
                                     ("pytorch_model-00002-of-00002.bin", bf16_key, bf16_bits, "BFloat16Storage")):
        w = Writer(legacy=False)
        tensor = w.tensor(w.storage("0", data, storage), 0, data.shape, _strides(data.shape))
        w.write(directory / file, {key: tensor})
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": {
        half_key: "pytorch_model-00001-of-00002.bin", bf16_key: "pytorch_model-00002-of-00002.bin"}}))
    ckpt = HubCheckpoint(directory)
    assert ckpt.names == [half_key, bf16_key]
    np.testing.assert_array_equal(ckpt.require(half_key), half.astype(np.float32))
    expected = (bf16_bits.astype(np.uint32) << 16).view(np.float32)
    assert ckpt.require(bf16_key).dtype == np.float32
    np.testing.assert_array_equal(ckpt.require(bf16_key), expected)


def test_bfloat16_safetensors_loads_as_float32(tmp_path):
    directory = _copy(model_dir("clip_vision"), tmp_path / "bf16", weights=False)
    values = np.array([[1.5, -2.25], [3.0, 0.15625]], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(bits)]}}).encode()
    header += b" " * (-len(header) % 8)
    (directory / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bits)
    loaded = HubCheckpoint(directory).require("w")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, values)


def test_missing_tensor_is_one_line_naming_the_tensor_and_the_file():
    with pytest.raises(HubCheckpointError) as error:
        HubCheckpoint(model_dir("blip_a")).require("text_decoder.bert.pooler.dense.weight")
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith("blip_a/pytorch_model.bin: no tensor 'text_decoder.bert.pooler.dense.weight' "
                            "(91 tensors in it)")
    with pytest.raises(HubCheckpointError, match=r"blip_b/model.safetensors: no tensor 'nope'"):
        HubCheckpoint(model_dir("blip_b")).require("nope")


def test_tied_tensor_whose_source_is_missing_names_both(tmp_path):
    ckpt = HubCheckpoint(model_dir("clip_full"), tied={"a.weight": "b.weight"})
    with pytest.raises(HubCheckpointError, match=r"model.safetensors: no tensor 'b.weight', nor 'a.weight', "
                                                 "which is tied to it$"):
        ckpt.require("a.weight")


@pytest.mark.parametrize("config, named", [
    ({"architectures": ["BlipForQuestionAnswering"], "model_type": "blip"}, "architecture BlipForQuestionAnswering"),
    ({"model_type": "gpt2"}, "model_type 'gpt2' (no 'architectures' entry)"),
])
def test_unknown_architecture_is_one_line_naming_it_and_what_is_supported(tmp_path, config, named):
    directory = _copy(model_dir("clip_vision"), tmp_path / "other")
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubCheckpointError) as error:
        HubCheckpoint(directory)
    assert "\n" not in str(error.value)
    assert str(error.value) == (f"{directory / 'config.json'}: {named} is not supported; tfcaption reads "
                                "BlipForConditionalGeneration, CLIPModel, CLIPVisionModel")


def test_architectures_entry_decides_over_model_type(tmp_path):
    directory = _copy(model_dir("clip_full"), tmp_path / "named")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "architectures": ["CLIPModel"]}))
    assert HubCheckpoint(directory).architecture == "CLIPModel"


def test_missing_config_json_or_directory_or_weights_is_one_line(tmp_path):
    directory = _copy(model_dir("blip_a"), tmp_path / "noconfig")
    (directory / "config.json").unlink()
    with pytest.raises(HubFilesNotFoundError, match=r"noconfig: no config.json; a checkpoint directory needs "):
        HubCheckpoint(directory)
    with pytest.raises(HubFilesNotFoundError, match=r"nowhere: no such checkpoint directory"):
        HubCheckpoint(tmp_path / "nowhere")
    bare = _copy(model_dir("blip_a"), tmp_path / "noweights", weights=False)
    with pytest.raises(HubFilesNotFoundError, match=r"noweights: no weights file \(model.safetensors, "):
        HubCheckpoint(bare).tensors()


def _copy(src, dst, weights=True):
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if weights or not (path.name.endswith(".bin") or path.name.endswith(".safetensors")):
            shutil.copy(path, dst / path.name)
    return dst


def _strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return strides


def test_v4_clip_vision_file_with_the_vision_model_prefix_reads_under_v5s_names(tmp_path):
    directory = _copy(model_dir("clip_vision"), tmp_path / "v4", weights=False)
    direct = _file_tensors("clip_vision")
    save_file({"vision_model." + k: v for k, v in direct.items()}, str(directory / "model.safetensors"))
    ckpt = HubCheckpoint(directory)
    assert ckpt.names == list(direct)
    key = "encoder.layers.2.mlp.fc1.weight"
    np.testing.assert_array_equal(ckpt.require(key), direct[key])
    assert "vision_model." + key not in ckpt


def test_reading_a_checkpoint_loads_neither_torch_nor_tensorflow():
    script = (
        "import sys\n"
        "from tfcaption.interop.hf import HubCheckpoint\n"
        "for name in ('blip_a', 'blip_b'):\n"
        "    ckpt = HubCheckpoint(f'tests/fixtures/hf/{name}')\n"
        "    ckpt.tensors(), ckpt.tokenizer, ckpt.image_processor\n"
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
