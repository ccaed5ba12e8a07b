"""Read and write PyTorch checkpoint files without PyTorch.

The released checkpoints are `torch.save` zip archives (`archive/data.pkl` plus one raw
file per storage) or Lightning `.ckpt` files in the same format. Reading them needs only a
restricted unpickler: tensors become numpy arrays, unknown classes (Lightning's
hyper-parameter containers, argparse namespaces, ...) become inert `OpaqueObject`s, and no
code from the file is ever executed. Writing produces archives that `torch.load` reads
(including with `weights_only=True`), so `jaxtalk export` can hand weights back to the
released PyTorch code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_DTYPE_STORAGES = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file and the reason."""


class OpaqueObject:
    """Stands in for any pickled class jaxtalk does not know (never executed)."""

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"OpaqueObject({self.qualname})"


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


def _rebuild_tensor(storage: np.ndarray, offset: int, size, stride, *_unused) -> np.ndarray:
    if len(size) == 0:
        return storage[offset:offset + 1].reshape(()).copy()
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_unused):
    return data


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): lambda dtype, data: np.frombuffer(data, dtype)[0],
    ("numpy._core.multiarray", "scalar"): lambda dtype, data: np.frombuffer(data, dtype)[0],
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self._archive, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name == "Size":
            return tuple
        fn = _SAFE_GLOBALS.get((module, name))
        if fn is not None:
            return fn
        return type(name, (OpaqueObject,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if isinstance(storage_type, type) and issubclass(storage_type, OpaqueObject):
            raise CheckpointError(f"{self._path}: unsupported storage type {storage_type.qualname}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._prefix}data/{key}")
            self._storages[key] = np.frombuffer(raw, dtype=storage_type.dtype)
        return self._storages[key]


def load(path: str | os.PathLike) -> Any:
    """Loads a `torch.save` zip archive (e.g. a state_dict or Lightning ckpt) as numpy."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (legacy pre-1.6 format or not a checkpoint); "
            "re-save it with torch.save in PyTorch >= 1.6")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise CheckpointError(f"{path}: zip archive without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        try:
            return _Unpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix, path).load()
        except (pickle.UnpicklingError, EOFError, KeyError) as e:
            raise CheckpointError(f"{path}: corrupt checkpoint ({e})") from e


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Loads a flat name -> array dict; `key` selects a sub-dict ('state_dict', 'gen')."""
    return state_dict_of(load(path), path, key)


def state_dict_of(obj: Any, path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """The name -> array entries of a loaded checkpoint (of its `key` entry when given)."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{path}: no entry {key!r} (top level has {found})")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict mapping, found {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}


# ----------------------------------------------------------------------------- writing


class _Global:
    """A reference to a torch global, written as a GLOBAL opcode (torch need not exist)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Reduce:
    def __init__(self, fn: _Global, args: tuple):
        self.fn, self.args = fn, args


class _StorageMarker:
    def __init__(self, flat: np.ndarray):
        self.flat = flat


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us emit raw GLOBALs
    def __init__(self, file, storages: list[np.ndarray]):
        super().__init__(file, protocol=2)
        self._storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, _StorageMarker):
            key = str(len(self._storages))
            self._storages.append(obj.flat)
            storage = _Global("torch", _DTYPE_STORAGES[obj.flat.dtype])
            return ("storage", storage, key, "cpu", obj.flat.size)
        return None

    def save_global_ref(self, obj: _Global):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_reduce_ref(self, obj: _Reduce):
        self.save(obj.fn)
        self.save(obj.args)
        self.write(pickle.REDUCE)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Global] = save_global_ref
    dispatch[_Reduce] = save_reduce_ref


def _tensor(array: np.ndarray) -> _Reduce:
    array = np.asarray(array, order="C")  # not ascontiguousarray, which makes 0-d arrays 1-d
    if array.dtype not in _DTYPE_STORAGES:
        raise TypeError(f"dtype {array.dtype} has no PyTorch storage type")
    flat = array.reshape(-1)
    stride = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
    return _Reduce(_Global("torch._utils", "_rebuild_tensor_v2"),
                   (_StorageMarker(flat), 0, tuple(array.shape), stride, False,
                    _Reduce(_Global("collections", "OrderedDict"), ())))


def _convert(obj):
    """Replaces arrays (numpy or jax) by tensor reductions, dicts by OrderedDicts."""
    if isinstance(obj, np.ndarray) or (hasattr(obj, "__array__") and hasattr(obj, "dtype")
                                       and not isinstance(obj, np.generic)):
        return _tensor(np.asarray(obj))
    if isinstance(obj, Mapping):
        return collections.OrderedDict((k, _convert(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(obj: Any, path: str | os.PathLike, archive_name: str = "archive") -> None:
    """Writes nested dicts/lists of numpy arrays and plain values as a torch.save archive."""
    path = os.fspath(path)
    tree = _convert(obj)
    storages: list[np.ndarray] = []
    buf = io.BytesIO()
    _Pickler(buf, storages).dump(tree)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{archive_name}/data.pkl", buf.getvalue())
        archive.writestr(f"{archive_name}/byteorder", "little")
        for key, flat in enumerate(storages):
            archive.writestr(f"{archive_name}/data/{key}", flat.astype(flat.dtype.newbyteorder("<")).tobytes())
        archive.writestr(f"{archive_name}/version", "3\n")
    os.replace(tmp, path)
