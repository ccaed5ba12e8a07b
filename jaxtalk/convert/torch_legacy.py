"""Read legacy (pre-1.6, non-zip) `torch.save` files without PyTorch.

Several public metric weights predate the zip format (torchvision's vgg16/alexnet files,
the lpips linear heads, SyncNet's `syncnet_v2.model`, ...). A legacy file is a sequence of
pickles followed by raw storage bytes:

  1. the magic number 0x1950a86a20f9469cfc6c, 2. the protocol version (1001),
  3. a sys_info dict (endianness, type sizes), 4. the object pickle, whose persistent ids
  are ('storage', storage type, key, location, numel, view_metadata), 5. the list of
  storage keys, 6. for each key in that order: an 8-byte little-endian element count then
  the raw little-endian bytes.

Storages are only known after the object pickle, so tensors are first unpickled as
placeholders and filled in once the bytes are read. As in `torch_pickle`, unknown classes
become inert `OpaqueObject`s and nothing from the file is executed.

`read_state_dict` accepts either format, so converters need not care which one a user has.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Mapping

import numpy as np

from jaxtalk.convert import torch_pickle
from jaxtalk.convert.torch_pickle import CheckpointError, OpaqueObject

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _LazyStorage:
    def __init__(self, key: str, dtype: np.dtype, numel: int, view=None):
        self.key, self.dtype, self.numel, self.view = key, dtype, numel, view


class _PendingTensor:
    def __init__(self, storage: _LazyStorage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _pending_tensor(storage, offset, size, stride, *_unused):
    return _PendingTensor(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path
        self.storages: dict[str, _LazyStorage] = {}

    def find_class(self, module, name):
        if module == "torch" and name in torch_pickle._STORAGE_DTYPES:
            return np.dtype(torch_pickle._STORAGE_DTYPES[name])
        if module == "torch" and name == "Size":
            return tuple
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _pending_tensor
        fn = torch_pickle._SAFE_GLOBALS.get((module, name))
        if fn is not None:
            return fn
        return type(name, (OpaqueObject,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
        _, dtype, key, _location, numel, view_metadata = pid
        if not isinstance(dtype, np.dtype):
            raise CheckpointError(f"{self._path}: unsupported storage type {dtype!r}")
        key = str(key)
        root = self.storages.setdefault(key, _LazyStorage(key, dtype, int(numel)))
        if view_metadata is None:
            return root
        _view_key, view_offset, view_size = view_metadata  # pre-0.4 storage views
        return _LazyStorage(key, dtype, int(view_size), view=int(view_offset))


def _resolve(obj: Any, storages: dict[str, np.ndarray]) -> Any:
    """Replaces placeholders by numpy arrays throughout a loaded object tree."""
    if isinstance(obj, _PendingTensor):
        flat = storages[obj.storage.key]
        if obj.storage.view is not None:
            flat = flat[obj.storage.view: obj.storage.view + obj.storage.numel]
        return torch_pickle._rebuild_tensor(flat, obj.offset, obj.size, obj.stride)
    if isinstance(obj, _LazyStorage):
        return storages[obj.key]
    if isinstance(obj, dict):  # OrderedDict too; rebuilt in place to keep its type
        for k in list(obj):
            obj[k] = _resolve(obj[k], storages)
        return obj
    if isinstance(obj, list):
        obj[:] = [_resolve(v, storages) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return type(obj)(_resolve(v, storages) for v in obj) if type(obj) is tuple else obj
    if isinstance(obj, OpaqueObject):
        obj.args = _resolve(obj.args, storages)
        obj.kwargs = _resolve(obj.kwargs, storages)
        obj.state = _resolve(obj.state, storages)
    return obj


def load_legacy(path: str | os.PathLike) -> Any:
    """Loads a legacy (non-zip) torch.save file as numpy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            if pickle.load(f) != MAGIC_NUMBER:
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
            if pickle.load(f) != PROTOCOL_VERSION:
                raise CheckpointError(f"{path}: unsupported legacy protocol version")
            sys_info = pickle.load(f)
            if isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True):
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            unpickler = _Unpickler(f, path)
            obj = unpickler.load()
            keys = [str(k) for k in pickle.load(f)]
            arrays = {}
            for key in keys:
                lazy = unpickler.storages.get(key)
                if lazy is None:
                    raise CheckpointError(f"{path}: storage {key!r} is not used by any tensor")
                count = int(np.frombuffer(f.read(8), "<i8")[0])
                raw = f.read(count * lazy.dtype.itemsize)
                if len(raw) != count * lazy.dtype.itemsize:
                    raise CheckpointError(f"{path}: truncated storage {key!r}")
                arrays[key] = np.frombuffer(raw, lazy.dtype.newbyteorder("<")).astype(lazy.dtype)
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: corrupt or unknown checkpoint format ({e})") from e
    missing = sorted(set(unpickler.storages) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: storages {missing[:5]} have no data")
    return _resolve(obj, arrays)


def load(path: str | os.PathLike) -> Any:
    """Loads a torch.save file of either format (zip archive or legacy)."""
    path = os.fspath(path)
    if os.path.exists(path) and not zipfile.is_zipfile(path):
        return load_legacy(path)
    return torch_pickle.load(path)


def read_state_dict(path: str | os.PathLike, key: str | None = None,
                    strip_prefix: str = "") -> dict[str, np.ndarray]:
    """Flat name -> array dict from a file of either format.

    `key` selects a sub-dict (e.g. 'state_dict'); `strip_prefix` drops a prefix such as
    'module.' that DataParallel adds to every key.
    """
    path = os.fspath(path)
    if os.path.exists(path) and zipfile.is_zipfile(path):
        state = torch_pickle.load_state_dict(path, key)
    else:
        state = torch_pickle.state_dict_of(load_legacy(path), path, key)
    if strip_prefix:
        state = {k[len(strip_prefix):] if k.startswith(strip_prefix) else k: v
                 for k, v in state.items()}
    return state
