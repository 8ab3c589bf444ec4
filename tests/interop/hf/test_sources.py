"""hf:// sources: huggingface_hub's cache layout read offline, revisions pinned, and the one-line miss."""

import hashlib
import shutil

import numpy as np
import pytest

from tests.helpers.hf_fixture import model_dir
from tfcaption.interop.hf import HubCheckpoint, HubFilesNotFoundError
from tfcaption.interop.hf.sources import parse_hub_uri, resolve_source

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def _cache_snapshot(cache, repo_id, commit, src, refs=()):
    """Writes `src`'s files as huggingface_hub caches them: blobs by hash, snapshots/<commit>/ symlinks, refs."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in src.iterdir():
        if path.name == "expected.npz":
            continue
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(f"../../blobs/{blob.name}")
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    # huggingface_hub reads both variables once at import: tfcaption reads them again at each call.
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_uri_parses_owner_name_and_revision():
    assert parse_hub_uri("hf://Salesforce/blip-image-captioning-base") == ("Salesforce/blip-image-captioning-base", None)
    assert parse_hub_uri("hf://openai/clip-vit-base-patch32@" + COMMIT_A) == ("openai/clip-vit-base-patch32", COMMIT_A)
    for bad in ("hf://Salesforce", "hf://a/b/c", "hf://a/b@"):
        with pytest.raises(ValueError, match="not a Hub address; expected hf://OWNER/NAME"):
            parse_hub_uri(bad)


def test_cached_repository_reads_offline_at_main_a_tag_or_a_commit(offline_cache):
    _cache_snapshot(offline_cache, "tfcaption/blip-tiny", COMMIT_A, model_dir("blip_a"), refs=["main"])
    _cache_snapshot(offline_cache, "tfcaption/blip-tiny", COMMIT_B, model_dir("blip_b"), refs=["v2"])
    main = HubCheckpoint("hf://tfcaption/blip-tiny")
    assert main.directory == offline_cache / "models--tfcaption--blip-tiny" / "snapshots" / COMMIT_A
    assert main.weights.files == ["pytorch_model.bin"] and main.config["vision_config"]["hidden_size"] == 32
    local = HubCheckpoint(model_dir("blip_a"))
    key = "vision_model.embeddings.position_embedding"
    np.testing.assert_array_equal(main.require(key), local.require(key))
    assert main.tokenizer.vocabulary == local.tokenizer.vocabulary
    tagged = HubCheckpoint("hf://tfcaption/blip-tiny@v2")
    assert tagged.weights.files == ["model.safetensors"] and tagged.image_processor.size["height"] == 48
    pinned = HubCheckpoint(f"hf://tfcaption/blip-tiny@{COMMIT_B}")
    assert pinned.directory.name == COMMIT_B


def test_offline_miss_is_one_line_with_the_files_and_a_download_command(offline_cache):
    with pytest.raises(HubFilesNotFoundError) as error:
        resolve_source("hf://tfcaption/not-cached@v1")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"hf://tfcaption/not-cached@v1: not in the Hugging Face cache ({offline_cache}) "
                              "and offline (HF_HUB_OFFLINE); put its config.json, weights (model.safetensors, or "
                              "pytorch_model.bin, or the shards and index) and whichever of vocab.txt, "
                              "tokenizer.json, tokenizer_config.json, special_tokens_map.json, "
                              "preprocessor_config.json, processor_config.json, generation_config.json it has in a "
                              "directory")
    assert message.endswith("hf download tfcaption/not-cached --include '*.json' --include vocab.txt --include "
                            "'model*.safetensors' --include 'pytorch_model*.bin' --revision v1 "
                            "--local-dir ./not-cached")


def test_unreachable_hub_is_the_same_one_line_and_falls_back_to_a_cached_copy(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(HubFilesNotFoundError) as error:
        resolve_source("hf://tfcaption/unreachable")
    message = str(error.value)
    assert "\n" not in message and "the Hub cannot be reached (ConnectError: " in message
    assert "hf download tfcaption/unreachable --include" in message
    _cache_snapshot(tmp_path / "hub", "tfcaption/unreachable", COMMIT_A, model_dir("clip_vision"), refs=["main"])
    assert HubCheckpoint("hf://tfcaption/unreachable").architecture == "CLIPVisionModel"  # the cached copy
