"""Where a Hub checkpoint's files come from: a local directory in the Hub's layout, or ``hf://OWNER/NAME``.

``hf://OWNER/NAME`` (keras-hub's prefix) and ``hf://OWNER/NAME@REVISION`` (a branch, tag or commit) are
fetched with ``huggingface_hub.snapshot_download`` into huggingface_hub's own cache, only the files tfcaption
reads. Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) files already in the cache are used; otherwise
the error is one line giving the files and a command that puts them in a directory to pass instead.

``HF_HUB_CACHE``, ``HF_HOME`` and ``HF_HUB_OFFLINE`` are read here at each call, because huggingface_hub reads
them once when it is imported and a later change (a test, a notebook cell) would otherwise go unseen.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tfcaption.interop.hf.errors import HubFilesNotFoundError

__all__ = [
    "HUB_PREFIX", "CONFIG_FILE", "METADATA_FILES", "SAFETENSORS_FILES", "PYTORCH_FILES", "WEIGHT_FILES",
    "parse_hub_uri", "is_hub_uri", "resolve_source",
]

HUB_PREFIX = "hf://"
CONFIG_FILE = "config.json"
# Everything tfcaption reads besides the weights; a repository has some of them.
METADATA_FILES = (
    CONFIG_FILE, "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "preprocessor_config.json", "processor_config.json", "generation_config.json",
)
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
PYTORCH_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")
WEIGHT_FILES = SAFETENSORS_FILES + PYTORCH_FILES

# OWNER/NAME as the Hub spells repository ids; REVISION is a branch, tag or commit (branches may hold "/").
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's own reading of a boolean variable


def is_hub_uri(source) -> bool:
    """Whether `source` is an ``hf://`` address rather than a local path."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def parse_hub_uri(uri: str) -> tuple[str, str | None]:
    """``hf://OWNER/NAME[@REVISION]`` -> (``OWNER/NAME``, REVISION or None).

    Example:

    >>> parse_hub_uri("hf://Salesforce/blip-image-captioning-base@main")
    ('Salesforce/blip-image-captioning-base', 'main')
    """
    body = uri[len(HUB_PREFIX):] if is_hub_uri(uri) else uri
    repo_id, _, revision = body.partition("@")
    if not _REPO_ID.match(repo_id) or (_ and not revision):
        raise ValueError(f"{uri}: not a Hub address; expected hf://OWNER/NAME or hf://OWNER/NAME@REVISION")
    return repo_id, revision or None


def resolve_source(source: str | os.PathLike) -> Path:
    """A local directory holding the checkpoint's files: `source` itself, or the ``hf://`` snapshot.

    Raises:
        HubFilesNotFoundError: (one line) a directory that does not exist, or an ``hf://`` repository that is
            neither cached nor reachable (offline, no network), naming the files and a directory to use.
        ImportError: (one line) an ``hf://`` source without huggingface_hub installed.
    """
    if not is_hub_uri(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise HubFilesNotFoundError(
                f"{source}: no such checkpoint directory (a directory with {CONFIG_FILE} and model.safetensors or "
                f"pytorch_model.bin, or hf://OWNER/NAME)")
        return path
    repo_id, revision = parse_hub_uri(source)
    try:
        import huggingface_hub.constants
        import huggingface_hub.errors
    except ImportError:
        raise ImportError(f"{source}: reading hf:// sources needs huggingface_hub: pip install 'tfcaption[hub]'"
                          ) from None
    offline = _offline(huggingface_hub)
    directory = _snapshot(huggingface_hub, source, repo_id, revision, METADATA_FILES + SAFETENSORS_FILES, offline)
    # Both weight formats are often published; the safetensors file is fetched when there is one, so
    # pytorch_model.bin (as large) is fetched only for repositories that have nothing else.
    if not any(directory.glob("*.safetensors")):
        directory = _snapshot(huggingface_hub, source, repo_id, revision, PYTORCH_FILES, offline)
    return directory


def _offline(huggingface_hub) -> bool:
    # huggingface_hub's rule (the first of the two variables set), read now rather than at its import.
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.upper() in _TRUE
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None  # huggingface_hub's default


def _snapshot(huggingface_hub, source, repo_id, revision, patterns, offline) -> Path:
    try:
        path = huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=list(patterns), cache_dir=_cache_dir(),
            local_files_only=offline)
    except (huggingface_hub.errors.LocalEntryNotFoundError, huggingface_hub.errors.IncompleteSnapshotError) as error:
        reason = "offline (HF_HUB_OFFLINE)" if offline else f"the Hub cannot be reached ({_first_line(error)})"
        raise HubFilesNotFoundError(_miss_message(source, repo_id, revision, reason)) from None
    except (huggingface_hub.errors.RepositoryNotFoundError, huggingface_hub.errors.RevisionNotFoundError,
            huggingface_hub.errors.GatedRepoError, huggingface_hub.errors.HfHubHTTPError) as error:
        raise HubFilesNotFoundError(f"{source}: {type(error).__name__}: {_first_line(error)}") from None
    except OSError as error:  # a network failure huggingface_hub lets through
        reason = f"the Hub cannot be reached ({type(error).__name__}: {_first_line(error)})"
        raise HubFilesNotFoundError(_miss_message(source, repo_id, revision, reason)) from None
    return Path(path)


def _miss_message(source, repo_id, revision, reason) -> str:
    cache = _cache_dir() or "huggingface_hub's default cache"
    pin = f" --revision {revision}" if revision else ""
    return (f"{source}: not in the Hugging Face cache ({cache}) and {reason}; put its config.json, weights "
            f"(model.safetensors, or pytorch_model.bin, or the shards and index) and whichever of "
            f"{', '.join(METADATA_FILES[1:])} it has in a directory and pass that instead, e.g. where there is a "
            f"network: hf download {repo_id} --include '*.json' --include vocab.txt --include 'model*.safetensors' "
            f"--include 'pytorch_model*.bin'{pin} --local-dir ./{repo_id.split('/')[1]}")


def _first_line(error) -> str:
    text = str(error).strip().removeprefix("Got: ")  # huggingface_hub's own prefix on a network failure
    return text.splitlines()[0] if text else type(error).__name__
