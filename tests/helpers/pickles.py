"""Opcode-level pickle writers, to produce the files torch.save and the M2 release write without torch.

`dumps` writes a protocol-2 pickle of plain values plus the stand-ins below (a GLOBAL reference, a
REDUCE call, a persistent id, memo puts and gets, a spliced stdlib pickle); `Writer` lays a state_dict out
in either of PyTorch's serialisations (legacy or zip); `vocab_pickle` writes the released M2 ``vocab.pkl``
layout (protocol 3, class ``data.vocab.Vocab``), whose ``data.vocab`` module is deliberately not importable.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np


class G:
    """A global reference (GLOBAL opcode)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class Call:
    """func(*args) (REDUCE opcode)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args


class PersId:
    """A persistent id (BINPERSID opcode)."""

    def __init__(self, value: tuple):
        self.value = value


class Put:
    """Memoise obj under index (BINPUT), as pickle does for objects referenced twice."""

    def __init__(self, obj, index: int):
        self.obj, self.index = obj, index


class Get:
    """Refer to a memoised object (BINGET)."""

    def __init__(self, index: int):
        self.index = index


class Raw:
    """The body of a stdlib protocol-2 pickle, spliced in (it memoises only its own objects)."""

    def __init__(self, obj, numpy1x: bool = False):
        data = pickle.dumps(obj, protocol=2)
        assert data[:2] == b"\x80\x02" and data[-1:] == b"."
        self.body = data[2:-1]
        if numpy1x:  # numpy 1.x named its pickling helpers numpy.core.multiarray.*
            self.body = self.body.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def emit(obj, out: bytearray) -> None:
    """Appends the opcodes that build `obj` to `out` (no protocol header, no STOP)."""
    if obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 2**31:
            out += b"J" + struct.pack("<i", obj)
        else:
            raw = obj.to_bytes((obj.bit_length() + 8) // 8, "little", signed=True)
            out += b"\x8a" + bytes([len(raw)]) + raw
    elif isinstance(obj, float):
        out += b"G" + struct.pack(">d", obj)
    elif isinstance(obj, str):
        enc = obj.encode("utf-8")
        out += b"X" + struct.pack("<I", len(enc)) + enc
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            emit(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            emit(key, out)
            emit(value, out)
        out += b"u"
    elif isinstance(obj, G):
        out += b"c" + obj.module.encode() + b"\n" + obj.name.encode() + b"\n"
    elif isinstance(obj, Call):
        emit(obj.func, out)
        emit(tuple(obj.args), out)
        out += b"R"
    elif isinstance(obj, PersId):
        emit(obj.value, out)
        out += b"Q"
    elif isinstance(obj, Raw):
        out += obj.body
    elif isinstance(obj, Put):
        emit(obj.obj, out)
        out += b"q" + bytes([obj.index])
    elif isinstance(obj, Get):
        out += b"h" + bytes([obj.index])
    else:
        raise TypeError(obj)


def dumps(obj) -> bytes:
    out = bytearray(b"\x80\x02")
    emit(obj, out)
    return bytes(out + b".")


STORAGE = {np.dtype(k): v for k, v in {
    "float32": "FloatStorage", "float64": "DoubleStorage", "float16": "HalfStorage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage"}.items()}


class Writer:
    """Collects storages and writes a checkpoint in either serialisation."""

    def __init__(self, legacy: bool):
        self.legacy = legacy
        self.storages: dict[str, tuple[bytes, int]] = {}

    def storage(self, key: str, data: np.ndarray, type_name: str | None = None, view=None,
                module: str = "torch", location: str = "cpu"):
        data = np.ascontiguousarray(data).ravel()
        type_name = type_name or STORAGE[data.dtype]
        le = data.astype(data.dtype.newbyteorder("<")) if data.dtype.itemsize > 1 else data
        self.storages[key] = (le.tobytes(), data.size)
        pid = ("storage", G(module, type_name), key, location, data.size)
        if self.legacy:
            pid = pid + (view,)
        return PersId(pid)

    def tensor(self, storage, offset, size, stride, fn="_rebuild_tensor_v2"):
        return Call(G("torch._utils", fn), storage, offset, tuple(size), tuple(stride), False,
                    Call(G("collections", "OrderedDict")))

    def write(self, path: Path, obj, byteorder: str | None = "little", big_data=None) -> Path:
        main = dumps(obj)
        if self.legacy:
            out = bytearray()
            out += pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
            out += pickle.dumps(1001, protocol=2)
            out += pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
            out += main
            keys = sorted(self.storages)
            out += pickle.dumps(keys, protocol=2)
            for key in keys:
                raw, numel = self.storages[key]
                out += struct.pack("<q", numel) + raw
            path.write_bytes(bytes(out))
        else:
            with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("archive/data.pkl", main)
                if byteorder:
                    zf.writestr("archive/byteorder", byteorder)
                for key, (raw, _) in self.storages.items():
                    zf.writestr(f"archive/data/{key}", (big_data or {}).get(key, raw))
                zf.writestr("archive/version", "3\n")
        return path


def vocab_pickle(itos, stoi="auto", cls=("data.vocab", "Vocab"), plain_stoi=False) -> bytes:
    """A protocol-3 pickle laid out like the released file: Vocab() then BUILD with its __dict__."""
    out = bytearray(b"\x80\x03")
    emit(G(*cls), out)
    out += b")\x81"  # EMPTY_TUPLE, NEWOBJ
    state = bytearray(b"}(")
    emit("freqs", state)
    emit(G("collections", "Counter"), state)
    emit({w: 5 for w in itos if isinstance(w, str) and not w.startswith("<")}, state)
    state += b"\x85R"  # TUPLE1, REDUCE: Counter({...})
    emit("itos", state)
    emit(list(itos), state)
    if stoi is not None:
        emit("stoi", state)
        if plain_stoi:
            state += b"}"
        else:
            emit(G("collections", "defaultdict"), state)
            emit(G("data.vocab", "_default_unk_index"), state)
            state += b"\x85R"  # defaultdict(_default_unk_index)
        pairs = {w: i for i, w in enumerate(itos)} if stoi == "auto" else stoi
        state += b"("
        for key, value in pairs.items():
            emit(key, state)
            emit(value, state)
        state += b"u"
    emit("vectors", state)
    emit(None, state)
    state += b"u"
    return bytes(out + state + b"b.")
