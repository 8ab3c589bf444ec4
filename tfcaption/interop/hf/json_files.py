"""Reading a Hub checkpoint's JSON files (config, tokenizer, processor, weights index), each a JSON object."""

from __future__ import annotations

import json
from pathlib import Path

from tfcaption.interop.hf.errors import HubCheckpointError

__all__ = ["read_json_object"]


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``.

    Raises:
        HubCheckpointError: (one line, naming the file) the file is not valid JSON or holds no JSON object.
    """
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise HubCheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise HubCheckpointError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
