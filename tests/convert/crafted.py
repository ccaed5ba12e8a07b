"""Checkpoint files written byte by byte: well-formed ones in the released layouts and
crafted ones an attacker would publish (code in a pickle, views outside their storage,
huge shapes, zip bombs)."""

import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from jaxtalk.convert import torch_legacy


class TorchGlobal:
    """A reference to a torch global, written as a GLOBAL opcode (torch need not exist)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """fn(*args) in the pickle (REDUCE)."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args


class Storage:
    """A storage persistent id; `legacy` adds the sixth (view metadata) field."""

    def __init__(self, key, type_name, numel, legacy=True, type_global=None):
        self.key, self.type_name, self.numel, self.legacy = key, type_name, numel, legacy
        self.type_global = type_global

    def pid(self):
        storage_type = self.type_global or TorchGlobal("torch", self.type_name)
        pid = ("storage", storage_type, self.key, "cpu", self.numel)
        return pid + (None,) if self.legacy else pid


class TorchPickler(pickle._Pickler):
    """Writes torch globals, calls and storage persistent ids as torch's saver does."""

    def persistent_id(self, obj):
        return obj.pid() if isinstance(obj, Storage) else None

    def _save_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def _save_call(self, obj):
        self.save(obj.fn)
        self.save(obj.args)
        self.write(pickle.REDUCE)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[TorchGlobal] = _save_global
    dispatch[Call] = _save_call


def dumps(obj, protocol=2) -> bytes:
    out = io.BytesIO()
    TorchPickler(out, protocol=protocol).dump(obj)
    return out.getvalue()


def tensor(storage, offset, size, stride):
    """A `_rebuild_tensor_v2` call with any (also malformed) view arguments."""
    return Call(
        TorchGlobal("torch._utils", "_rebuild_tensor_v2"),
        (
            storage,
            offset,
            tuple(size),
            tuple(stride),
            False,
            Call(TorchGlobal("collections", "OrderedDict"), ()),
        ),
    )


class RunsCode:
    """Pickles as a call that creates `marker` when anything unpickles it unrestricted."""

    def __init__(self, marker, via="exec"):
        self.marker, self.via = str(marker), via

    def __reduce__(self):
        if self.via == "system":
            return os.system, (f"touch {self.marker}",)
        return exec, (f"open({self.marker!r}, 'w').close()",)


def inst_opcode_payload(marker) -> bytes:
    """Protocol 0's INST opcode: builtins.exec(code) without GLOBAL or REDUCE."""
    code = f"open({str(marker)!r}, 'w').close()"
    return b"(" + pickle.dumps(code, protocol=0)[:-1] + b"ibuiltins\nexec\n."


LEGACY_DTYPES = {"FloatStorage": "<f4", "LongStorage": "<i8", "HalfStorage": "<f2"}


def legacy_bytes(
    object_pickle: bytes,
    storages: dict[str, tuple[str, np.ndarray]],
    headers: list[bytes] | None = None,
    keys_pickle: bytes | None = None,
) -> bytes:
    """A legacy file: three header pickles, the object pickle, the key list, the storages."""
    headers = headers or [
        pickle.dumps(h, protocol=2)
        for h in (
            torch_legacy.MAGIC_NUMBER,
            torch_legacy.PROTOCOL_VERSION,
            {
                "protocol_version": 1001,
                "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4},
            },
        )
    ]
    keys = sorted(storages)
    out = io.BytesIO()
    for part in (*headers, object_pickle, keys_pickle or pickle.dumps(keys, protocol=2)):
        out.write(part)
    for key in keys:
        type_name, values = storages[key]
        out.write(struct.pack("<q", len(values)))
        out.write(np.asarray(values, LEGACY_DTYPES[type_name]).tobytes())
    return out.getvalue()


def write_legacy(path, tensors, extra=None, nest_under="state_dict"):
    """tensors: name -> (storage type name, array); two names may share a storage by
    passing (type, array, shared_key, offset). The tensors go under `nest_under` beside `extra`,
    or make up the whole file (a bare state_dict) when it is None."""
    storages, state = {}, collections.OrderedDict()
    for name, (type_name, array, *shared) in tensors.items():
        key, offset = shared or [name, 0]
        storages.setdefault(key, (type_name, []))
        flat = storages[key][1]
        if offset == len(flat):  # a new storage, or the next slice of a shared one
            flat.extend(array.reshape(-1).tolist())
        stride = tuple(int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim))
        state[name] = (key, type_name, offset, array.shape, stride)
    tree = collections.OrderedDict()
    for name, (key, type_name, offset, shape, stride) in state.items():
        tree[name] = tensor(Storage(key, type_name, len(storages[key][1])), offset, shape, stride)
    obj = tree if nest_under is None else {nest_under: tree, **(extra or {})}
    path.write_bytes(legacy_bytes(dumps(obj), storages))


def write_zip(
    path, data_pkl: bytes, members: dict[str, bytes] | None = None, compression=zipfile.ZIP_STORED
) -> None:
    """A torch.save-style archive: archive/data.pkl and archive/data/<key> members."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", data_pkl)
        for key, raw in (members or {}).items():
            z.writestr(f"archive/data/{key}", raw)
        z.writestr("archive/version", "3\n")
