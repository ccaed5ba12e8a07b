"""The legacy (pre-1.6) torch.save reader, on files written byte by byte here."""

import collections
import io
import pickle
import struct

import numpy as np
import pytest

from jaxtalk.convert import torch_legacy, torch_pickle


class _TorchGlobal:
    def __init__(self, module, name):
        self.module, self.name = module, name


class _Call:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args


class _Storage:
    def __init__(self, key, type_name, numel):
        self.key, self.type_name, self.numel = key, type_name, numel


class _LegacyPickler(pickle._Pickler):
    """Writes torch globals and storage persistent ids as torch's legacy saver does."""

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _TorchGlobal("torch", obj.type_name), obj.key, "cpu",
                    obj.numel, None)
        return None

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def _save_call(self, obj):
        self.save(obj.fn)
        self.save(obj.args)
        self.write(pickle.REDUCE)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_TorchGlobal] = _save_global
    dispatch[_Call] = _save_call


def write_legacy(path, tensors, extra=None, nest_under="state_dict"):
    """tensors: name -> (storage type name, array); two names may share a storage by
    passing (type, array, shared_key, offset). The tensors go under `nest_under` beside `extra`,
    or make up the whole file (a bare state_dict) when it is None."""
    out = io.BytesIO()
    for header in (torch_legacy.MAGIC_NUMBER, torch_legacy.PROTOCOL_VERSION,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, out, protocol=2)
    storages, state = {}, collections.OrderedDict()
    for name, (type_name, array, *shared) in tensors.items():
        key, offset = (shared or [name, 0])
        storages.setdefault(key, (type_name, []))
        flat = storages[key][1]
        if offset == len(flat):  # a new storage, or the next slice of a shared one
            flat.extend(array.reshape(-1).tolist())
        stride = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
        state[name] = (key, type_name, offset, array.shape, stride)
    tree = collections.OrderedDict()
    for name, (key, type_name, offset, shape, stride) in state.items():
        storage = _Storage(key, type_name, len(storages[key][1]))
        tree[name] = _Call(_TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
                           (storage, offset, shape, stride, False,
                            _Call(_TorchGlobal("collections", "OrderedDict"), ())))
    obj = tree if nest_under is None else {nest_under: tree, **(extra or {})}
    _LegacyPickler(out, protocol=2).dump(obj)
    keys = sorted(storages)
    pickle.dump(keys, out, protocol=2)
    dtypes = {"FloatStorage": "<f4", "LongStorage": "<i8", "HalfStorage": "<f2"}
    for key in keys:
        type_name, values = storages[key]
        out.write(struct.pack("<q", len(values)))
        out.write(np.asarray(values, dtypes[type_name]).tobytes())
    path.write_bytes(out.getvalue())


def test_reads_a_legacy_file_built_byte_by_byte(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float16)
    ids = np.arange(6, dtype=np.int64).reshape(3, 2)
    write_legacy(tmp_path / "old.pth",
                 {"conv.weight": ("FloatStorage", w), "conv.bias": ("HalfStorage", b),
                  "ids": ("LongStorage", ids)}, extra={"epoch": 7})
    loaded = torch_legacy.load(tmp_path / "old.pth")
    assert loaded["epoch"] == 7
    np.testing.assert_array_equal(loaded["state_dict"]["conv.weight"], w)
    assert loaded["state_dict"]["conv.bias"].dtype == np.float16
    np.testing.assert_array_equal(loaded["state_dict"]["conv.bias"], b)
    np.testing.assert_array_equal(loaded["state_dict"]["ids"], ids)
    sd = torch_legacy.read_state_dict(tmp_path / "old.pth", key="state_dict")
    assert list(sd) == ["conv.weight", "conv.bias", "ids"]


def test_shared_storage_with_offset(tmp_path):
    whole = np.arange(10, dtype=np.float32)
    write_legacy(tmp_path / "shared.pth",
                 {"a": ("FloatStorage", whole[:4].reshape(2, 2), "s", 0),
                  "b": ("FloatStorage", whole[4:], "s", 4)})
    sd = torch_legacy.read_state_dict(tmp_path / "shared.pth", key="state_dict")
    np.testing.assert_array_equal(sd["a"], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(sd["b"], whole[4:])


def test_read_state_dict_accepts_zip_and_strips_prefix(tmp_path):
    torch_pickle.save({"module.w": np.ones(2, np.float32)}, tmp_path / "new.pth")
    assert list(torch_legacy.read_state_dict(tmp_path / "new.pth", strip_prefix="module.")) == ["w"]


def test_errors_name_the_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(torch_pickle.CheckpointError, match="junk.pth.*magic"):
        torch_legacy.load(tmp_path / "junk.pth")
    write_legacy(tmp_path / "cut.pth", {"w": ("FloatStorage", np.ones(100, np.float32))})
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:-8])
    with pytest.raises(torch_pickle.CheckpointError, match="cut.pth.*truncated"):
        torch_legacy.load(tmp_path / "cut.pth")
    with pytest.raises(torch_pickle.CheckpointError, match="no such file"):
        torch_legacy.read_state_dict(tmp_path / "missing.pth")


def test_matches_torch_legacy_save(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = module.state_dict()
    state["view"] = torch.arange(12.0).reshape(3, 4)[:, 1:3]  # a non-contiguous view
    torch.save({"sd": state, "note": "x"}, tmp_path / "t.pth",
               _use_new_zipfile_serialization=False)
    loaded = torch_legacy.load(tmp_path / "t.pth")
    assert loaded["note"] == "x" and set(loaded["sd"]) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded["sd"][k], v.numpy(), err_msg=k)
