"""Read PyTorch ``.pth`` checkpoints into numpy arrays without PyTorch.

Why this module exists: the released Meshed-Memory Transformer weights are a PyTorch 1.1 checkpoint and
Hugging Face repositories publish ``pytorch_model.bin`` files (PyTorch's zip serialisation), and tfcaption
must import them on machines that have TensorFlow but no PyTorch (and must not run the
authors' code). A ``.pth`` file is a pickle, and unpickling an untrusted file can execute arbitrary
code, so the reader uses a restricted ``pickle.Unpickler`` that resolves only an allow-list of names
(tensor rebuild functions, storage types, plain containers) to local stand-ins; everything else is
refused before it is imported or called.

Two serialisations are understood:

* legacy (PyTorch < 1.6 default, used by the released checkpoint): a sequence of pickles in one file:
  magic number, protocol version (1001), system info, the main object (tensors reference storages
  through persistent ids), the list of storage keys, then each storage's raw bytes in that order, each
  prefixed by its element count as a little-endian int64. Storage bytes are little-endian.
* zip (PyTorch >= 1.6 default): ``<archive>/data.pkl`` holds the main object, ``<archive>/data/<key>``
  each storage's raw bytes, ``<archive>/byteorder`` (when present) says ``little`` or ``big``.

Every failure (not a checkpoint, truncated file, corrupt pickle, unsupported dtype, unsafe global) is a
:class:`CheckpointError` whose message starts with the file name.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from tfcaption.interop.restricted_pickle import AllowListUnpickler, Guarded, MalformedPickle, load_or_raise

__all__ = ["CheckpointError", "load_torch_checkpoint", "load_state_dict"]

# The first pickle of a legacy file is this integer; torch uses it to recognise its own files.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """A checkpoint (or vocabulary) file that cannot be read safely; the message names the file."""


# --------------------------------------------------------------------------------------------------
# dtypes and storages


@dataclass(frozen=True, slots=True)
class _DType:
    """A torch element type: its numpy type (little-endian) and whether it needs widening.

    bfloat16 has no numpy type, so it is read as uint16 bit patterns and widened to float32 (exact).
    """

    name: str
    numpy: str  # numpy dtype string, little-endian
    bfloat16: bool = False

    @property
    def itemsize(self) -> int:
        return np.dtype(self.numpy).itemsize


_DTYPES = {
    d.name: d
    for d in (
        _DType("float64", "<f8"),
        _DType("float32", "<f4"),
        _DType("float16", "<f2"),
        _DType("bfloat16", "<u2", bfloat16=True),
        _DType("complex128", "<c16"),
        _DType("complex64", "<c8"),
        _DType("int64", "<i8"),
        _DType("int32", "<i4"),
        _DType("int16", "<i2"),
        _DType("int8", "i1"),
        _DType("uint8", "u1"),
        _DType("bool", "u1"),  # read as bytes, then != 0, so a stray byte value cannot make odd bools
    )
}

# torch.<Name>Storage (and torch.cuda.<Name>Storage in files saved from a GPU) -> element type.
_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "UntypedStorage": "uint8",  # numel counts bytes
}

# torch.<dtype> globals (used by _rebuild_tensor_v3, which pairs an untyped storage with a dtype).
_TORCH_DTYPE_NAMES = {
    "float64": "float64", "double": "float64",
    "float32": "float32", "float": "float32",
    "float16": "float16", "half": "float16",
    "bfloat16": "bfloat16",
    "complex128": "complex128", "cdouble": "complex128",
    "complex64": "complex64", "cfloat": "complex64",
    "int64": "int64", "long": "int64",
    "int32": "int32", "int": "int32",
    "int16": "int16", "short": "int16",
    "int8": "int8", "uint8": "uint8", "bool": "bool",
}


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for a ``torch.*Storage`` class named in a persistent id."""

    qualname: str
    dtype: _DType


@dataclass(frozen=True, slots=True)
class _TypeMarker:
    """Stand-in for ``torch.Tensor`` / ``torch.nn.Parameter`` passed to ``_rebuild_from_type_v2``."""

    qualname: str


@dataclass
class _StorageRef:
    """A storage named by a persistent id; its bytes are attached after the pickle is read.

    ``view`` is (element offset, element count) for the legacy format's storage views.
    """

    key: str
    dtype: _DType
    numel: int
    location: str
    view: tuple[int, int] | None = None


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it; turned into a numpy array once storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: _DType


def _check_int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise MalformedPickle(f"tensor {what} must be a tuple of non-negative ints, found {value!r}")
    return tuple(int(v) for v in value)


def _make_tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: _DType | None = None):
    if not isinstance(storage, _StorageRef):
        raise MalformedPickle(f"tensor rebuild expects a storage, found {type(storage).__name__}")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise MalformedPickle(f"tensor storage offset must be a non-negative int, found {offset!r}")
    size_t = _check_int_tuple(size, "size")
    stride_t = _check_int_tuple(stride, "stride")
    if len(size_t) != len(stride_t):
        raise MalformedPickle(f"tensor size {size_t} and stride {stride_t} differ in length")
    return _TensorRef(storage, int(offset), size_t, stride_t, dtype or storage.dtype)


# Stand-ins for torch's rebuild functions: they only record what to build.
def _rebuild_tensor(storage, storage_offset, size, stride):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    return _make_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    if not isinstance(dtype, _DType):
        raise MalformedPickle(f"_rebuild_tensor_v3 expects a torch dtype, found {dtype!r}")
    return _make_tensor(storage, storage_offset, size, stride, dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise MalformedPickle(f"_rebuild_parameter expects a tensor, found {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


_REBUILDERS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter,
               _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensor subclasses pickle as (rebuild function, class, args, state): allow plain Tensor/Parameter."""
    if (not isinstance(func, Guarded) or func.fn not in _REBUILDERS
            or not isinstance(new_type, _TypeMarker) or not isinstance(args, tuple)):
        raise MalformedPickle("_rebuild_from_type_v2 with an unsupported rebuild function or tensor type")
    return func(*args)


# numpy values (numpy scalars for metrics, arrays for numpy's RNG state) appear in training
# checkpoints; they are rebuilt with numpy's own constructors, restricted to plain ndarrays.
try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy._core.multiarray import scalar as _np_scalar_impl
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct_impl
    from numpy.core.multiarray import scalar as _np_scalar_impl

_NDARRAY = _TypeMarker("numpy.ndarray")


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise MalformedPickle("numpy array reconstruction is allowed for numpy.ndarray only")
    return _np_reconstruct_impl(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype):
        raise MalformedPickle("numpy scalar without a numpy dtype")
    return _np_scalar_impl(dtype) if data is None else _np_scalar_impl(dtype, data)


def _np_dtype(spec, align=False, copy=False):
    """``numpy.dtype`` that always returns a fresh copy, so BUILD never touches numpy's singletons."""
    return np.dtype(spec, align=bool(align), copy=True)


def _codecs_encode(text, encoding="utf-8"):
    """Protocol-2 pickles store bytes as ``_codecs.encode(str, 'latin1')``; no other codec is run."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in (
        "latin1", "latin-1", "iso-8859-1", "utf-8", "utf8"
    ):
        raise MalformedPickle(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode(encoding)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    functions = {
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("numpy", "dtype"): _np_dtype,
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy.core.multiarray", "scalar"): _np_scalar,
        ("numpy._core.multiarray", "scalar"): _np_scalar,
        ("_codecs", "encode"): _codecs_encode,
    }
    allowed: dict[tuple[str, str], Any] = {
        key: Guarded(fn, ".".join(key)) for key, fn in functions.items()
    }
    allowed.update({
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
        ("torch._tensor", "Tensor"): _TypeMarker("torch.Tensor"),
        ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.parameter.Parameter"),
        ("numpy", "ndarray"): _NDARRAY,
    })
    for builtins_name in ("builtins", "__builtin__"):
        for name, value in (("set", set), ("frozenset", frozenset), ("complex", complex),
                            ("bytearray", bytearray), ("slice", slice)):
            allowed[(builtins_name, name)] = value
    for module in ("torch", "torch.cuda"):
        for name, dtype_name in _STORAGE_DTYPES.items():
            allowed[(module, name)] = _StorageType(f"{module}.{name}", _DTYPES[dtype_name])
    for name, dtype_name in _TORCH_DTYPE_NAMES.items():
        allowed[("torch", name)] = _DTYPES[dtype_name]
    return allowed


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(AllowListUnpickler):
    """Resolves only allow-listed globals; storages become :class:`_StorageRef` placeholders."""

    def __init__(self, file: BinaryIO, allowed: Mapping[tuple[str, str], Any], storages=None,
                 legacy: bool = False):
        super().__init__(file, allowed)
        self._storages = storages  # key -> _StorageRef, shared between tensors; None: no persistent ids
        self._legacy = legacy

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise MalformedPickle(f"unexpected persistent id {pid!r}")
        if not isinstance(pid, tuple) or not pid:
            raise MalformedPickle(f"persistent id must be a tuple, found {pid!r}")
        if pid[0] == "module":
            raise MalformedPickle("the file pickles a whole nn.Module (source code), not tensors; "
                             "save model.state_dict() instead")
        if pid[0] != "storage" or len(pid) < 5:
            raise MalformedPickle(f"unsupported persistent id {pid[:2]!r}")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise MalformedPickle(f"persistent id names {storage_type!r}, not a storage type")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise MalformedPickle(f"bad storage key/size in persistent id {pid!r}")
        root = self._storages.get(key)
        if root is None:
            root = _StorageRef(key, storage_type.dtype, int(numel), str(location))
            self._storages[key] = root
        elif root.dtype != storage_type.dtype or root.numel != numel:
            raise MalformedPickle(f"storage {key} is referenced with two different types or sizes")
        view = pid[5] if (self._legacy and len(pid) > 5) else None
        if view is None:
            return root
        # Legacy storage view: (view_key, element offset, element count) into the root storage.
        if (not isinstance(view, tuple) or len(view) != 3 or not all(isinstance(v, int) for v in view[1:])
                or view[1] < 0 or view[2] < 0 or view[1] + view[2] > root.numel):
            raise MalformedPickle(f"bad storage view {view!r} of storage {key}")
        return _StorageRef(key, root.dtype, root.numel, root.location, (view[1], view[2]))


def _unpickle(path: str, stream: BinaryIO, what: str, storages=None, legacy=False,
              allowed=_ALLOWED) -> Any:
    """Run the restricted unpickler, turning every failure into a CheckpointError naming ``what``."""
    return load_or_raise(
        _RestrictedUnpickler(stream, allowed, storages, legacy), CheckpointError, path, what,
        f" in {what}; only tensors, numbers, strings and plain containers can be loaded (refused without "
        "importing or calling it)")


# --------------------------------------------------------------------------------------------------
# storage bytes -> arrays


def _storage_array(raw: bytes, ref: _StorageRef, big_endian: bool) -> np.ndarray:
    dt = np.dtype(ref.dtype.numpy)
    if big_endian and dt.itemsize > 1:
        dt = dt.newbyteorder(">")
    return np.frombuffer(raw, dtype=dt, count=ref.numel)


def _materialise(path: str, obj: Any, arrays: dict[str, np.ndarray], big_endian: bool) -> Any:
    """Replace tensor/storage placeholders by numpy arrays, in place for dicts and lists."""
    done: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, converted)
    active: set[int] = set()  # containers on the current path, to survive self-referencing pickles

    def tensor(ref: _TensorRef, where: str) -> np.ndarray:
        base = arrays[ref.storage.key]
        if ref.storage.view is not None:
            start, count = ref.storage.view
            base = base[start:start + count]
        if ref.dtype != ref.storage.dtype:
            # _rebuild_tensor_v3: the storage's bytes reinterpreted with the tensor's own dtype.
            target = np.dtype(ref.dtype.numpy)
            if big_endian and target.itemsize > 1:
                target = target.newbyteorder(">")
            raw = base.view(np.uint8)
            base = raw[: (raw.size // target.itemsize) * target.itemsize].view(target)
        out_dtype = np.dtype(ref.dtype.numpy).newbyteorder("=")
        where = where or "<top level>"
        try:
            if any(s == 0 for s in ref.size):
                result = np.zeros(ref.size, dtype=out_dtype)
            else:
                last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride))
                if last >= base.size:
                    raise CheckpointError(
                        f"{path}: tensor {where} (size {list(ref.size)}, stride {list(ref.stride)}, "
                        f"offset {ref.offset}) reads element {last} but storage {ref.storage.key} has "
                        f"{base.size} elements")
                view = np.lib.stride_tricks.as_strided(
                    base[ref.offset:], shape=ref.size,
                    strides=tuple(st * base.dtype.itemsize for st in ref.stride), writeable=False)
                result = np.array(view, dtype=out_dtype, copy=True, order="C")
        except (MemoryError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{path}: cannot build tensor {where} of size {list(ref.size)} "
                                  f"({type(exc).__name__}: {exc})") from None
        if ref.dtype.bfloat16:
            result = (result.astype(np.uint32) << 16).view(np.float32)
        elif ref.dtype.name == "bool":
            result = result != 0
        return result

    def walk(value: Any, where: str) -> Any:
        key = id(value)
        if key in done:  # a tensor or container the pickle shares (memo): convert it once
            return done[key][1]
        if isinstance(value, _StorageRef):  # a bare storage: its elements as a 1-D tensor
            count = value.view[1] if value.view else value.numel
            result = tensor(_TensorRef(value, 0, (count,), (1,), value.dtype), where)
        elif isinstance(value, _TensorRef):
            result = tensor(value, where)
        elif isinstance(value, (dict, list, tuple)):
            if key in active:  # a container that holds itself
                return value
            active.add(key)
            try:
                if isinstance(value, dict):
                    for k in list(value.keys()):
                        value[k] = walk(value[k], f"{where}/{k}" if where else str(k))
                    result = value
                elif isinstance(value, list):
                    for i, item in enumerate(value):
                        value[i] = walk(item, f"{where}[{i}]")
                    result = value
                else:
                    items = tuple(walk(item, f"{where}[{i}]") for i, item in enumerate(value))
                    result = items if any(a is not b for a, b in zip(items, value)) else value
            finally:
                active.discard(key)
        else:
            return value
        done[key] = (value, result)  # holding ``value`` keeps its id from being reused meanwhile
        return result

    return walk(obj, "")


def _require(path: str, condition: bool, message: str) -> None:
    if not condition:
        raise CheckpointError(f"{path}: {message}")


# --------------------------------------------------------------------------------------------------
# the two container formats


def _load_zip(path: str) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({exc})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        _require(path, len(pickles) == 1,
                 f"zip archive is not a PyTorch checkpoint: expected one '<name>/data.pkl', "
                 f"found {pickles or 'none'}")
        prefix = pickles[0][: -len("data.pkl")]
        big_endian = False
        if prefix + "byteorder" in names:
            try:
                order = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
                raise CheckpointError(f"{path}: corrupt byteorder record ({exc})") from None
            _require(path, order in ("little", "big"), f"byteorder record says {order!r}")
            big_endian = order == "big"
        storages: dict[str, _StorageRef] = {}
        try:
            with archive.open(pickles[0]) as stream:
                obj = _unpickle(path, stream, pickles[0], storages)
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error) as exc:
            raise CheckpointError(f"{path}: corrupt zip member {pickles[0]} ({exc})") from None
        archive_size = os.path.getsize(path)
        arrays: dict[str, np.ndarray] = {}
        for key, ref in storages.items():
            member = f"{prefix}data/{key}"
            expected = ref.numel * ref.dtype.itemsize
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise CheckpointError(f"{path}: storage {key} is missing (no member {member})") from None
            _require(path, info.file_size >= expected,
                     f"truncated: storage {key} has {info.file_size} bytes, expected {expected}")
            _require(path, info.compress_type != zipfile.ZIP_STORED or info.compress_size <= archive_size,
                     f"corrupt zip entry for storage {key}")
            try:
                with archive.open(info) as stream:
                    raw = stream.read(expected)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, MemoryError) as exc:
                raise CheckpointError(
                    f"{path}: corrupt storage {key} ({type(exc).__name__}: {exc})") from None
            _require(path, len(raw) == expected,
                     f"truncated: storage {key} has {len(raw)} bytes, expected {expected}")
            arrays[key] = _storage_array(raw, ref, big_endian)
        return _materialise(path, obj, arrays, big_endian)


def _load_legacy(path: str, stream: BinaryIO, file_size: int) -> Any:
    no_globals: dict = {}
    magic_pickle = pickle.dumps(_LEGACY_MAGIC, protocol=2)
    head = stream.read(len(magic_pickle))
    _require(path, not (len(head) < len(magic_pickle) and magic_pickle.startswith(head)),
             f"truncated: the file ends after {len(head)} bytes, inside PyTorch's magic number")
    stream.seek(0)
    try:
        magic = _RestrictedUnpickler(stream, no_globals).load()
    except Exception:  # garbage: whatever the pickle machinery says, it is not our format
        magic = None
    _require(path, isinstance(magic, int) and magic == _LEGACY_MAGIC,
             "not a PyTorch checkpoint (neither a zip archive nor a legacy file starting with "
             "PyTorch's magic number)")
    version = _unpickle(path, stream, "protocol version record", allowed=no_globals)
    _require(path, version == _LEGACY_PROTOCOL,
             f"unsupported legacy protocol version {version!r} (expected {_LEGACY_PROTOCOL})")
    sys_info = _unpickle(path, stream, "system info record", allowed=no_globals)
    _require(path, isinstance(sys_info, dict), "corrupt system info record")
    storages: dict[str, _StorageRef] = {}
    obj = _unpickle(path, stream, "main pickle", storages, legacy=True)
    keys = _unpickle(path, stream, "storage key list", allowed=no_globals)
    _require(path, isinstance(keys, list) and all(isinstance(k, str) for k in keys),
             "corrupt storage key list")
    _require(path, set(keys) == set(storages) and len(keys) == len(storages),
             f"storage key list ({len(keys)} keys) does not match the {len(storages)} storages "
             "the main pickle references")
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        ref = storages[key]
        header = stream.read(8)
        _require(path, len(header) == 8,
                 f"truncated: storage {key} has {len(header)} bytes of its element count, expected 8 "
                 f"(file ends at byte {file_size})")
        (count,) = struct.unpack("<q", header)
        _require(path, count == ref.numel,
                 f"storage {key} holds {count} elements, but the pickle says {ref.numel}")
        expected = ref.numel * ref.dtype.itemsize
        available = file_size - stream.tell()
        _require(path, available >= expected,
                 f"truncated: storage {key} has {max(available, 0)} bytes, expected {expected}")
        raw = stream.read(expected)
        _require(path, len(raw) == expected,
                 f"truncated: storage {key} has {len(raw)} bytes, expected {expected}")
        arrays[key] = _storage_array(raw, ref, big_endian=False)
    return _materialise(path, obj, arrays, big_endian=False)


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a ``.pth`` file (legacy or zip serialisation) with tensors as numpy arrays.

    Returns the file's top-level object - for training checkpoints a dict such as
    ``{"epoch": ..., "state_dict": OrderedDict(name -> ndarray), ...}`` - with every tensor replaced by
    a C-contiguous numpy array of its dtype (bfloat16 widened to float32), honouring storage offsets
    and strides; tensors that shared a storage become independent copies, while one tensor pickled
    twice (tied weights) becomes one array object. Device locations are ignored (CUDA tensors load to
    host memory). Raises :class:`CheckpointError` for anything that is not a
    readable, safe PyTorch checkpoint, and ``FileNotFoundError`` for a missing file.
    """
    path = os.fspath(path)
    with open(path, "rb") as stream:  # a missing file raises FileNotFoundError here, as open() does
        try:
            head = stream.read(4)
            file_size = os.fstat(stream.fileno()).st_size
            _require(path, len(head) > 0, "empty file, not a PyTorch checkpoint")
            if head == b"PK\x03\x04" or (head[:2] == b"PK" and zipfile.is_zipfile(stream)):
                return _load_zip(path)
            stream.seek(0)
            return _load_legacy(path, stream, file_size)
        except CheckpointError:
            raise
        except Exception as exc:  # last line of defence: a corrupt file never leaks a raw error
            raise CheckpointError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Return the checkpoint's parameters as ``{name: ndarray}`` in the file's order.

    The ``state_dict`` entry when the top-level object is a dict holding one (training checkpoints,
    like the released M2 file), else the top-level mapping itself when all its values are tensors
    (``torch.save(model.state_dict())``). Anything else is a :class:`CheckpointError`.
    """
    path = os.fspath(path)
    obj = load_torch_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        state, where = obj["state_dict"], "'state_dict'"
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, np.ndarray) for v in obj.values()):
        state, where = obj, "the top-level mapping"
    else:
        if isinstance(obj, Mapping):
            described = f"a mapping with keys {list(obj)[:10]} whose values are not all tensors"
        else:
            described = f"a {type(obj).__name__}"
        raise CheckpointError(f"{path}: no state_dict: the top-level object is {described}")
    _require(path, len(state) > 0, f"{where} is empty")
    result: dict[str, np.ndarray] = {}
    for name, value in state.items():
        _require(path, isinstance(name, str), f"{where} has a non-string key {name!r}")
        _require(path, isinstance(value, np.ndarray),
                 f"{where} entry {name!r} is a {type(value).__name__}, not a tensor")
        result[name] = value
    return result
