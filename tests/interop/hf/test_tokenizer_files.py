"""Tokenizer files: the vocabulary in id order (added tokens past vocab.txt), special tokens, lower-casing."""

import json
import shutil

import pytest

from tests.helpers.hf_fixture import BLIP_MODELS, HF_FIXTURES, manifest, model_dir
from tfcaption.interop.hf import HubCheckpoint, HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.tokenizer_files import read_tokenizer_files

ROLES = {"pad": "pad_token", "unk": "unk_token", "cls": "cls_token", "sep": "sep_token", "mask": "mask_token",
         "dec": "bos_token"}


def _manifest_vocabulary():
    return (HF_FIXTURES / manifest()["vocab"]).read_text().splitlines() + ["[DEC]", "[ENC]"]


@pytest.mark.parametrize("name", BLIP_MODELS)
def test_vocabulary_is_the_manifests_tokens_with_dec_and_enc_added_after_vocab_txt(name):
    tokenizer = HubCheckpoint(model_dir(name)).tokenizer
    assert tokenizer.vocabulary == _manifest_vocabulary()
    assert len(tokenizer.vocabulary) == manifest()["models"][name]["config"]["text_config"]["vocab_size"]
    ids = manifest()["models"][name]["token_ids"]
    assert tokenizer.special_ids == {role: ids[short] for short, role in ROLES.items()}
    assert tokenizer.additional_special_tokens == ["[ENC]"] and tokenizer.token_id("[ENC]") == ids["enc"]
    assert tokenizer.do_lower_case is True and tokenizer.tokenizer_class == "BertTokenizer"


def test_v5_layout_reads_the_vocabulary_from_tokenizer_json_alone():
    tokenizer = HubCheckpoint(model_dir("blip_b")).tokenizer
    assert tokenizer.files == ["tokenizer.json", "tokenizer_config.json"]
    assert not (model_dir("blip_b") / "vocab.txt").exists()


def test_published_layout_without_tokenizer_json_takes_added_tokens_from_tokenizer_config(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\ndog\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": False, "bos_token": {"content": "[DEC]"}, "sep_token": "[SEP]",
        "added_tokens_decoder": {"0": {"content": "[PAD]"}, "7": {"content": "[ENC]"}, "6": {"content": "[DEC]"}}}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "[PAD]",
                                                                  "additional_special_tokens": ["[ENC]"]}))
    tokenizer = read_tokenizer_files(tmp_path)
    assert tokenizer.vocabulary == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog", "[DEC]", "[ENC]"]
    assert tokenizer.special_ids == {"bos_token": 6, "sep_token": 3, "pad_token": 0}
    assert tokenizer.do_lower_case is False and tokenizer.additional_special_tokens == ["[ENC]"]


def test_lower_casing_falls_back_to_tokenizer_json_normalizer(tmp_path):
    shutil.copy(model_dir("blip_b") / "tokenizer.json", tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["normalizer"]["lowercase"] = False
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    assert read_tokenizer_files(tmp_path).do_lower_case is False


def test_tokenizer_errors_are_one_line(tmp_path):
    with pytest.raises(HubFilesNotFoundError, match=r"clip_full: no tokenizer \(vocab.txt or tokenizer.json\)"):
        HubCheckpoint(model_dir("clip_full")).tokenizer
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {"5": {"content": "[X]"}}}))
    with pytest.raises(HubCheckpointError, match=r"vocab.txt: token ids jump from 1 to 5 \('\[X\]'\)"):
        read_tokenizer_files(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"sep_token": "[SEP]"}))
    with pytest.raises(HubCheckpointError, match=r"special token '\[SEP\]' is not in the vocabulary"):
        read_tokenizer_files(tmp_path)
