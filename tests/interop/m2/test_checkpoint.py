"""Tests for the torch-free .pth reader.

The M2 fixture files were written by real PyTorch (legacy and zip serialisations); synthetic files
are written opcode by opcode with tests/helpers/pickles.py (PyTorch is not installed), to reach
strides, offsets, dtypes and hostile pickles the fixture does not contain.
"""

from __future__ import annotations

import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.m2_fixture import FIXTURE, requires_fixture
from tests.helpers.paths import REPO_ROOT
from tests.helpers.pickles import Call, G, Get, PersId, Put, Raw, Writer, dumps, emit
from tfcaption.interop.torch_checkpoint import CheckpointError, load_state_dict, load_torch_checkpoint

LEGACY = FIXTURE / "m2_tiny.pth"
ZIPPED = FIXTURE / "m2_tiny_zip.pth"
needs_fixture = requires_fixture("m2_tiny.pth", "m2_tiny_zip.pth", "config.json")


def _cut(src: Path, dst: Path, n: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n])
    return dst


# ---------------------------------------------------------------------------------------------
# the real fixture


@needs_fixture
def test_fixture_state_dicts_match_config_and_each_other():
    config = json.loads((FIXTURE / "config.json").read_text())["state_dict_keys"]
    legacy = load_state_dict(LEGACY)
    zipped = load_state_dict(ZIPPED)
    assert list(legacy) == list(config) == list(zipped)
    for name, shape in config.items():
        assert list(legacy[name].shape) == shape, name
        assert legacy[name].dtype == zipped[name].dtype, name
        np.testing.assert_array_equal(legacy[name], zipped[name], err_msg=name)
    assert legacy["decoder.fc.weight"].dtype == np.float32
    assert legacy["decoder.running_mask_self_attention"].dtype == np.bool_
    assert legacy["decoder.running_seq"].dtype == np.int64
    assert legacy["decoder.running_seq"].tolist() == [0]
    # Parameters are real numbers, not zeros or garbage: trained weights, LayerNorm gains near 1.
    gain = legacy["encoder.layers.0.mhatt.layer_norm.weight"]
    assert np.all(np.isfinite(gain)) and 0.5 < float(gain.mean()) < 1.5
    assert float(np.abs(legacy["decoder.fc.weight"]).mean()) > 1e-3


@needs_fixture
@pytest.mark.parametrize("path", [LEGACY, ZIPPED], ids=["legacy", "zip"])
def test_fixture_tensors_are_the_files_own_little_endian_bytes(path):
    # Independent of the reader's layout logic: every whole-storage float tensor must appear
    # byte for byte in the file (storages are uncompressed in both formats).
    data = path.read_bytes()
    state = load_state_dict(path)
    checked = 0
    for name, value in state.items():
        if value.size and value.dtype == np.float32:
            pos = data.find(value.astype("<f4").tobytes())
            assert pos >= 0, name
            if path == LEGACY:  # the legacy format prefixes each storage with its element count
                assert struct.unpack("<q", data[pos - 8:pos])[0] == value.size, name
            checked += 1
    assert checked >= 150


@needs_fixture
def test_fixture_top_level_keys_and_rng_state_agree_in_both_formats():
    legacy = load_torch_checkpoint(LEGACY)
    zipped = load_torch_checkpoint(ZIPPED)
    expected = {"epoch", "val_loss", "val_cider", "best_cider", "use_rl", "state_dict", "torch_rng_state"}
    assert set(legacy) == set(zipped) == expected
    assert isinstance(legacy["state_dict"], collections.OrderedDict)
    assert legacy["epoch"] == 0 and legacy["use_rl"] is False
    rng = legacy["torch_rng_state"]
    assert rng.dtype == np.uint8 and rng.shape == (5056,)
    np.testing.assert_array_equal(rng, zipped["torch_rng_state"])


@needs_fixture
def test_reader_needs_no_torch(tmp_path):
    """Load both files in a fresh interpreter where any attempt to import torch fails."""
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys
        attempts = []
        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    attempts.append(name)
                    raise ImportError("torch is blocked in this test")
                return None
        sys.meta_path.insert(0, BlockTorch())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch import was not blocked")
        attempts.clear()

        def load(name, rel):
            # By file path: the reader itself must not need torch (nor the package's other modules).
            spec = importlib.util.spec_from_file_location(name, {REPO_ROOT!r} + "/" + rel)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module

        tc = load("isolated_torch_checkpoint", "tfcaption/interop/torch_checkpoint.py")
        mv = load("isolated_m2_vocab", "tfcaption/interop/m2/vocab.py")
        a = tc.load_state_dict({str(LEGACY)!r})
        b = tc.load_state_dict({str(ZIPPED)!r})
        itos = mv.load_m2_vocab({str(FIXTURE / "vocab.pkl")!r})
        assert list(a) == list(b) and len(a) == 165
        assert all((a[k] == b[k]).all() for k in a)
        assert itos[:4] == ["<unk>", "<pad>", "<bos>", "<eos>"] and len(itos) == 30
        assert "torch" not in sys.modules and not attempts, attempts
        print("OK", len(a), len(itos))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("OK 165 30")


@needs_fixture
@pytest.mark.parametrize("cut", [1, 10, 40, 120, 5000, 29100, 32700, 32800, 32803 + 100, 700_000, -1])
def test_truncated_legacy_fixture_is_an_error_naming_the_file_and_the_short_storage(tmp_path, cut):
    size = LEGACY.stat().st_size
    path = _cut(LEGACY, tmp_path / "cut.pth", cut if cut > 0 else size + cut)
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)
    if cut >= 32800 or cut < 0:  # inside the storage bytes: says which storage and by how much
        assert "truncated: storage" in str(info.value) and "expected" in str(info.value)


@needs_fixture
@pytest.mark.parametrize("cut", [4, 100, 30_000, 700_000, -22, -1])
def test_truncated_zip_fixture_is_a_zip_archive_error_naming_the_file(tmp_path, cut):
    size = ZIPPED.stat().st_size
    path = _cut(ZIPPED, tmp_path / "cut.pth", cut if cut > 0 else size + cut)
    with pytest.raises(CheckpointError, match="zip archive") as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kind", ["empty", "random1", "random100", "random5000", "zipmagic", "pickle"])
def test_garbage_is_rejected(tmp_path, kind):
    rng = np.random.default_rng(0)
    payload = {
        "empty": b"",
        "random1": rng.bytes(1),
        "random100": rng.bytes(100),
        "random5000": rng.bytes(5000),
        "zipmagic": b"PK\x03\x04" + rng.bytes(2000),
        "pickle": pickle.dumps({"state_dict": {"w": [1.0, 2.0]}}),
    }[kind]
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(payload)
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)
    if kind == "pickle":
        assert "not a PyTorch checkpoint" in str(info.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch_checkpoint(tmp_path / "nope.pth")


# ---------------------------------------------------------------------------------------------
# hostile pickles


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
@pytest.mark.parametrize("module", ["posix", "os"])
def test_os_system_is_refused_and_never_called(tmp_path, legacy, module):
    marker = tmp_path / "pwned"
    writer = Writer(legacy)
    obj = {"state_dict": {"w": writer.tensor(writer.storage("0", np.ones(2, np.float32)), 0, [2], [1])},
           "x": Call(G(module, "system"), f"touch {marker}")}
    path = writer.write(tmp_path / "evil.pth", obj)
    with pytest.raises(CheckpointError, match=rf"unsafe pickle global '{module}\.system'") as info:
        load_torch_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_stdlib_pickled_os_system_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    head = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    path.write_bytes(head + pickle.dumps({}, protocol=2) + pickle.dumps(os.system, protocol=2))
    with pytest.raises(CheckpointError, match=r"unsafe pickle global '(posix|nt)\.system'"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("target", [G("builtins", "eval"), G("builtins", "getattr"),
                                    G("torch.nn.modules.linear", "Linear"), G("numpy", "load")])
def test_other_globals_are_refused(tmp_path, target):
    writer = Writer(legacy=False)
    path = writer.write(tmp_path / "evil.pth", {"a": Call(target, "1")})
    with pytest.raises(CheckpointError, match=rf"unsafe pickle global '{target.module}\.{target.name}'"):
        load_torch_checkpoint(path)


def test_build_cannot_tamper_with_stand_ins(tmp_path):
    # BUILD with a (None, slotstate) pair would setattr on the allow-listed rebuild function.
    body = bytearray(b"\x80\x02")
    emit(G("torch._utils", "_rebuild_tensor_v2"), body)
    emit((None, {"__defaults__": (1, 2, 3)}), body)
    body += b"b."
    path = tmp_path / "tamper.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", bytes(body))
    with pytest.raises(CheckpointError, match="malformed .*set state on torch._utils._rebuild_tensor_v2"):
        load_torch_checkpoint(path)
    from tfcaption.interop import torch_checkpoint

    assert torch_checkpoint._rebuild_tensor_v2.__defaults__ == (False, None, None)


# ---------------------------------------------------------------------------------------------
# synthetic checkpoints: strides, offsets, dtypes, both formats


def _strided_checkpoint(tmp_path: Path, legacy: bool) -> Path:
    w = Writer(legacy)
    s = w.storage("10", np.arange(24, dtype=np.float32))
    obj = {
        "state_dict": Call(G("collections", "OrderedDict"), [
            ("full", w.tensor(s, 0, [2, 3, 4], [12, 4, 1])),
            ("transposed", w.tensor(s, 0, [4, 3], [1, 4])),
            ("offset", w.tensor(s, 5, [2, 3], [3, 1])),
            ("expanded", w.tensor(s, 1, [3, 2], [0, 1])),
            ("scalar", w.tensor(s, 7, [], [])),
            ("empty", w.tensor(s, 0, [0, 5], [5, 1])),
            ("param", Call(G("torch._utils", "_rebuild_parameter"), w.tensor(s, 2, [2, 2], [1, 2]), True,
                           Call(G("collections", "OrderedDict")))),
            ("f64", w.tensor(w.storage("2", np.array([0.1, -2.5, 1e300])), 1, [2], [1])),
            ("f16", w.tensor(w.storage("3", np.array([0.5, -1.25, 65504], np.float16)), 0, [3], [1])),
            ("i64", w.tensor(w.storage("4", np.array([-(2**40), 7, 2**62], np.int64)), 0, [3], [1])),
            ("i32", w.tensor(w.storage("5", np.arange(6, dtype=np.int32) - 3), 0, [3, 2], [1, 3])),
            ("u8", w.tensor(w.storage("6", np.array([0, 255, 128], np.uint8)), 0, [3], [1])),
            ("bool", w.tensor(w.storage("7", np.array([1, 0, 1], np.uint8), "BoolStorage"), 0, [3], [1])),
            ("bf16", w.tensor(w.storage("8", np.array([0x3F80, 0xC040, 0x4049], np.uint16),
                                        "BFloat16Storage"), 0, [3], [1])),
            ("i16", w.tensor(w.storage("9", np.array([-300, 300], np.int16)), 0, [2], [1])),
        ]),
        "epoch": 3,
        "val_cider": Raw(np.float64(1.25)),  # numpy scalars, as the released training script stored
        "numpy_rng_state": Raw(np.random.RandomState(0).get_state()),
        "betas": (0.9, 0.98),
    }
    return w.write(tmp_path / ("legacy.pth" if legacy else "zip.pth"), obj)


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_strides_offsets_and_dtypes_load_as_contiguous_numpy_copies(tmp_path, legacy):
    ckpt = load_torch_checkpoint(_strided_checkpoint(tmp_path, legacy))
    sd = ckpt["state_dict"]
    base = np.arange(24, dtype=np.float32)
    np.testing.assert_array_equal(sd["full"], base.reshape(2, 3, 4))
    np.testing.assert_array_equal(sd["transposed"], base[:12].reshape(3, 4).T)
    np.testing.assert_array_equal(sd["offset"], [[5, 6, 7], [8, 9, 10]])
    np.testing.assert_array_equal(sd["expanded"], [[1, 2], [1, 2], [1, 2]])
    assert sd["scalar"].shape == () and float(sd["scalar"]) == 7.0
    assert sd["empty"].shape == (0, 5) and sd["empty"].dtype == np.float32
    np.testing.assert_array_equal(sd["param"], [[2, 4], [3, 5]])
    for name in ("full", "transposed", "expanded", "param"):
        assert sd[name].flags.c_contiguous and sd[name].flags.writeable
    assert sd["f64"].dtype == np.float64 and sd["f64"].tolist() == [-2.5, 1e300]
    assert sd["f16"].dtype == np.float16 and sd["f16"].tolist() == [0.5, -1.25, 65504.0]
    assert sd["i64"].dtype == np.int64 and sd["i64"].tolist() == [-(2**40), 7, 2**62]
    assert sd["i32"].dtype == np.int32 and sd["i32"].tolist() == [[-3, 0], [-2, 1], [-1, 2]]
    assert sd["u8"].dtype == np.uint8 and sd["u8"].tolist() == [0, 255, 128]
    assert sd["bool"].dtype == np.bool_ and sd["bool"].tolist() == [True, False, True]
    assert sd["bf16"].dtype == np.float32 and sd["bf16"].tolist() == [1.0, -3.0, 3.140625]
    assert sd["i16"].dtype == np.int16 and sd["i16"].tolist() == [-300, 300]
    # Copies, not views: writing one tensor leaves the others sharing its storage untouched.
    sd["full"][...] = -1
    assert sd["offset"][0, 0] == 5
    assert ckpt["epoch"] == 3 and ckpt["betas"] == (0.9, 0.98)
    assert isinstance(ckpt["val_cider"], np.float64) and ckpt["val_cider"] == 1.25
    state = ckpt["numpy_rng_state"]
    assert state[0] == "MT19937" and state[1].dtype == np.uint32
    np.testing.assert_array_equal(state[1], np.random.RandomState(0).get_state()[1])


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_memoised_tensors_and_tuples_load_as_one_shared_object(tmp_path, legacy):
    # Tied weights pickle one tensor twice (memo); a shared tuple of tensors must be converted too.
    w = Writer(legacy)
    s = w.storage("0", np.arange(6, dtype=np.float32))
    obj = {"a": Put(w.tensor(s, 0, [2, 3], [3, 1]), 200), "b": Get(200),
           "pair": Put((w.tensor(s, 1, [2], [1]), w.tensor(s, 4, [2], [1])), 201), "again": Get(201)}
    ckpt = load_torch_checkpoint(w.write(tmp_path / "shared.pth", obj))
    np.testing.assert_array_equal(ckpt["a"], np.arange(6).reshape(2, 3))
    assert ckpt["b"] is ckpt["a"]
    assert isinstance(ckpt["again"], tuple) and ckpt["again"] is ckpt["pair"]
    assert [t.tolist() for t in ckpt["again"]] == [[1.0, 2.0], [4.0, 5.0]]


def test_zip_big_endian_storages_load_as_native_values(tmp_path):
    w = Writer(legacy=False)
    values = np.array([1.5, -2.0, 3.25, 1e-3], np.float32)
    ints = np.array([1, -2, 2**40], np.int64)
    obj = {"a": w.tensor(w.storage("0", values), 0, [2, 2], [1, 2]),
           "b": w.tensor(w.storage("1", ints), 0, [3], [1])}
    path = w.write(tmp_path / "be.pth", obj, byteorder="big",
                   big_data={"0": values.astype(">f4").tobytes(), "1": ints.astype(">i8").tobytes()})
    sd = load_state_dict(path)
    np.testing.assert_array_equal(sd["a"], values.reshape(2, 2, order="F"))
    assert sd["b"].tolist() == [1, -2, 2**40] and sd["b"].dtype == np.dtype("=i8")


def test_rebuild_v3_untyped_storage_and_parameter_subclass_load_their_values(tmp_path):
    w = Writer(legacy=False)
    values = np.array([0.25, -4.0, 8.5], np.float32)
    raw = w.storage("0", np.frombuffer(values.tobytes(), np.uint8), "UntypedStorage")
    v3 = Call(G("torch._utils", "_rebuild_tensor_v3"), raw, 1, (2,), (1,), False,
              Call(G("collections", "OrderedDict")), G("torch", "float32"))
    sub = Call(G("torch._tensor", "_rebuild_from_type_v2"), G("torch._utils", "_rebuild_tensor_v2"),
               G("torch.nn.parameter", "Parameter"),
               (w.storage("1", np.array([9, 8], np.int64)), 0, (2,), (1,), False,
                Call(G("collections", "OrderedDict"))), {})
    sd = load_state_dict(w.write(tmp_path / "v3.pth", {"v3": v3, "sub": sub}))
    assert sd["v3"].dtype == np.float32 and sd["v3"].tolist() == [-4.0, 8.5]
    assert sd["sub"].tolist() == [9, 8]


def test_released_style_training_checkpoint_loads_cuda_storages_optimizer_and_rng_states(tmp_path):
    """What the released train.py saved from a GPU under torch 1.1 and numpy 1.x: CUDA storage types,
    Adam state keyed by ints, numpy scalars from the metrics, numpy/python RNG states."""
    w = Writer(legacy=True)
    weight = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)
    param = w.tensor(w.storage("1", weight, module="torch.cuda", location="cuda:0"), 0, [3, 2], [2, 1])
    moment = w.tensor(w.storage("2", weight * 0.5, module="torch.cuda", location="cuda:0"),
                      0, [3, 2], [2, 1])
    obj = {
        "state_dict": Call(G("collections", "OrderedDict"), [("encoder.fc.weight", param)]),
        "optimizer": {"state": {140: {"step": 10, "exp_avg": moment}},
                      "param_groups": [{"lr": 1.0, "betas": (0.9, 0.98), "params": [140]}]},
        "val_cider": Raw(np.float64(131.2), numpy1x=True),
        "random_rng_state": Raw((3, tuple(range(5)), None)),
        "numpy_rng_state": Raw(np.random.RandomState(1).get_state()),
    }
    path = w.write(tmp_path / "released_style.pth", obj)
    ckpt = load_torch_checkpoint(path)
    np.testing.assert_array_equal(load_state_dict(path)["encoder.fc.weight"], weight)
    np.testing.assert_array_equal(ckpt["optimizer"]["state"][140]["exp_avg"], weight * 0.5)
    assert ckpt["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert isinstance(ckpt["val_cider"], np.float64) and ckpt["val_cider"] == 131.2
    assert ckpt["random_rng_state"] == (3, (0, 1, 2, 3, 4), None)


def test_legacy_storage_view_reads_from_the_view_offset(tmp_path):
    w = Writer(legacy=True)
    view = w.storage("0", np.arange(10, dtype=np.float32), view=("0_view", 4, 3))
    sd = load_state_dict(w.write(tmp_path / "view.pth", {"v": w.tensor(view, 1, [2], [1])}))
    assert sd["v"].tolist() == [5.0, 6.0]


@pytest.mark.parametrize("legacy", [True, False], ids=["legacy", "zip"])
def test_out_of_bounds_view_is_an_error(tmp_path, legacy):
    w = Writer(legacy)
    obj = {"w": w.tensor(w.storage("0", np.arange(6, dtype=np.float32)), 2, [2, 3], [3, 1])}
    with pytest.raises(CheckpointError, match=r"tensor w .*reads element 7 but storage 0 has 6"):
        load_state_dict(w.write(tmp_path / "oob.pth", obj))


def test_legacy_storage_element_count_mismatch_is_an_error(tmp_path):
    w = Writer(legacy=True)
    path = w.write(tmp_path / "count.pth", {"w": w.tensor(w.storage("0", np.arange(4, dtype=np.float32)),
                                                          0, [4], [1])})
    data = bytearray(path.read_bytes())
    header = len(data) - 16 - 8  # the last (only) storage: 8-byte count, then 4 float32
    assert data[header:header + 8] == struct.pack("<q", 4)
    data[header:header + 8] = struct.pack("<q", 5)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="storage 0 holds 5 elements, but the pickle says 4"):
        load_torch_checkpoint(path)


def test_zip_missing_storage_and_pickled_module_are_errors(tmp_path):
    w = Writer(legacy=False)
    obj = {"w": w.tensor(w.storage("0", np.ones(2, np.float32)), 0, [2], [1])}
    path = w.write(tmp_path / "missing.pth", obj)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("data/0")}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match="storage 0 is missing"):
        load_torch_checkpoint(path)
    module = tmp_path / "module.pth"
    with zipfile.ZipFile(module, "w") as zf:
        zf.writestr("archive/data.pkl", dumps(PersId(("module", "Net", "net.py", "source"))))
    with pytest.raises(CheckpointError, match="whole nn.Module"):
        load_torch_checkpoint(module)


def test_load_state_dict_accepts_a_bare_dict_and_names_what_it_found_instead(tmp_path):
    w = Writer(legacy=False)
    tensor = w.tensor(w.storage("0", np.ones(3, np.float32)), 0, [3], [1])
    plain = w.write(tmp_path / "plain.pth", {"a": tensor})
    assert list(load_state_dict(plain)) == ["a"]
    for name, obj, pattern in [
        ("nostate.pth", {"epoch": 1, "lr": 0.1}, r"no state_dict: .*keys \['epoch', 'lr'\]"),
        ("list.pth", [1, 2], "no state_dict: the top-level object is a list"),
        ("badvalue.pth", {"state_dict": {"a": 1.0}}, r"entry 'a' is a float, not a tensor"),
        ("empty.pth", {"state_dict": {}}, "is empty"),
    ]:
        path = Writer(legacy=True).write(tmp_path / name, obj)
        with pytest.raises(CheckpointError, match=pattern):
            load_state_dict(path)
