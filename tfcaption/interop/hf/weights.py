"""A checkpoint's tensors by name, from whichever weight files its directory holds, as float32 numpy arrays.

Looked for in this order: ``model.safetensors``; ``model.safetensors.index.json`` (shards); ``pytorch_model.bin``;
``pytorch_model.bin.index.json``. safetensors files are read with safetensors' numpy API one tensor at a time
(bfloat16, which numpy lacks, from the file's bytes); ``pytorch_model.bin`` with tfcaption's restricted
unpickler, never torch (``tfcaption.interop.torch_checkpoint``). Floating-point tensors come out float32, so
float16 / bfloat16 files load as the float32 models expect; integer tensors keep their type.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from tfcaption.interop.hf.errors import HubCheckpointError, HubFilesNotFoundError
from tfcaption.interop.hf.json_files import read_json_object

__all__ = ["WeightFiles", "find_weights_file"]

_SAFETENSORS, _SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
_PYTORCH, _PYTORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def find_weights_file(directory: str | Path) -> str:
    """The name of the file a checkpoint directory's weights are read from, the first there of
    ``model.safetensors``, its shards' index, ``pytorch_model.bin``, its shards' index; found without reading it.

    Raises:
        HubFilesNotFoundError: (one line) none is there.
    """
    d = Path(directory)
    for name in (_SAFETENSORS, _SAFETENSORS_INDEX, _PYTORCH, _PYTORCH_INDEX):
        if (d / name).is_file():
            return name
    raise HubFilesNotFoundError(
        f"{d}: no weights file ({_SAFETENSORS}, {_SAFETENSORS_INDEX} with its shards, {_PYTORCH} or "
        f"{_PYTORCH_INDEX}); put the repository's weights file there")


class WeightFiles:
    """The tensor names a checkpoint directory's weight files hold, each read on request.

    Args:
        directory: the checkpoint directory.

    Raises:
        HubFilesNotFoundError: (one line) no weight file, or a shard an index names is missing.
        HubCheckpointError: (one line) an index or a file that cannot be read.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._loaded: dict[str, dict[str, np.ndarray]] = {}  # pytorch_model.bin files, read whole once
        self._files = self._index()  # name -> file name in the directory

    @property
    def names(self) -> list[str]:
        """The tensor names, in the files' order."""
        return list(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def file_of(self, name: str) -> str:
        """The file (relative to the directory) holding `name`; KeyError when none does."""
        return self._files[name]

    @property
    def files(self) -> list[str]:
        """The weight files, in the order their tensors come."""
        return list(dict.fromkeys(self._files.values()))

    def read(self, name: str) -> np.ndarray:
        """Tensor `name` as a numpy array, floating point widened to float32; KeyError when absent."""
        file = self._files[name]
        if file.endswith(".safetensors"):
            return _float32(self._read_safetensor(file, name))
        return _float32(self._read_pytorch(file)[name])

    def _index(self) -> dict[str, str]:
        d = self.directory
        name = find_weights_file(d)
        if name == _SAFETENSORS:
            return dict.fromkeys(_safetensors_header(d / _SAFETENSORS), _SAFETENSORS)
        if name == _PYTORCH:
            return dict.fromkeys(self._read_pytorch(_PYTORCH), _PYTORCH)  # a pickle lists its names only whole
        return self._sharded(name)

    def _sharded(self, index_name: str) -> dict[str, str]:
        path = self.directory / index_name
        weight_map = read_json_object(path).get("weight_map")
        if not (isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())):
            raise HubCheckpointError(f"{path}: not a weights index (a JSON object with a 'weight_map' of "
                                     "tensor name -> shard file)")
        for shard in dict.fromkeys(weight_map.values()):
            if not (self.directory / shard).is_file():
                raise HubFilesNotFoundError(f"{self.directory / shard}: missing; {index_name} names it as a shard")
        return dict(weight_map)

    def _read_safetensor(self, file: str, name: str) -> np.ndarray:
        from safetensors import safe_open  # the hub extra; only needed once a safetensors file is read

        path = self.directory / file
        with safe_open(path, framework="np") as f:
            if f.get_slice(name).get_dtype() != "BF16":
                return f.get_tensor(name)
        return _bfloat16_from_bytes(path, name)  # numpy has no bfloat16 for safetensors to return

    def _read_pytorch(self, file: str) -> dict[str, np.ndarray]:
        from tfcaption.interop.torch_checkpoint import CheckpointError, load_state_dict

        if file not in self._loaded:
            try:
                self._loaded[file] = load_state_dict(self.directory / file)
            except CheckpointError as error:
                raise HubCheckpointError(str(error)) from None
        return self._loaded[file]


def _float32(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _safetensors_header(path: Path) -> dict:
    """The file's JSON header (name -> dtype, shape, data_offsets), its metadata left out."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        assert isinstance(header, dict)
    except (struct.error, ValueError, AssertionError, MemoryError, OverflowError):
        raise HubCheckpointError(f"{path}: not a safetensors file (truncated or corrupt header)") from None
    header.pop("__metadata__", None)
    return header


def _bfloat16_from_bytes(path: Path, name: str) -> np.ndarray:
    entry = _safetensors_header(path)[name]
    begin, end = entry["data_offsets"]
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        f.seek(8 + size + begin)
        bits = np.frombuffer(f.read(end - begin), dtype="<u2")
    # bfloat16 is float32's upper half: widening is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
