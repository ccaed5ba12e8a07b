"""Read legacy (pre-1.6, non-zip) `torch.save` files without PyTorch.

Several public metric weights predate the zip format (torchvision's vgg16/alexnet files,
the lpips linear heads, SyncNet's `syncnet_v2.model`, ...). A legacy file is a sequence of
pickles followed by raw storage bytes:

  1. the magic number 0x1950a86a20f9469cfc6c, 2. the protocol version (1001),
  3. a sys_info dict (endianness, type sizes), 4. the object pickle, whose persistent ids
  are ('storage', storage type, key, location, numel, view_metadata), 5. the list of
  storage keys, 6. for each key in that order: an 8-byte little-endian element count then
  the raw little-endian bytes.

Pickles 1-3 and 5 may hold plain values only (`safe_pickle.load_plain`); pickle 4 goes
through the same restricted unpickler as a zip file's data.pkl. Storages are only known
after the object pickle, so tensors are first checked against the storage sizes the
persistent ids declare and kept as pending views, then filled in once the bytes are read.
No read asks for more bytes than remain in the file.

`read_state_dict` accepts either format, so converters need not care which one a user has.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Mapping

import numpy as np

from jaxtalk import fs
from jaxtalk.convert import safe_pickle, torch_pickle
from jaxtalk.convert.torch_pickle import PendingTensor, Storage
from jaxtalk.errors import CheckpointError, one_line

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _ViewStorage(Storage):
    """A pre-0.4 storage view: `numel` elements of `root` from element `start`."""

    def __init__(self, root: Storage, start: int, numel: int):
        super().__init__(root.key, root.dtype, numel)
        self.root, self.start = root, start

    def flat(self) -> np.ndarray:
        return self.root.data[self.start : self.start + self.numel]


class _LegacyUnpickler(torch_pickle.TorchUnpickler):
    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(
                f"{self.path}: unsupported persistent id {one_line(repr(pid), 80)}"
            )
        _, storage_type, key, _location, numel, view_metadata = pid
        root = self.declare_storage(storage_type, key, numel)
        if view_metadata is None:
            return root
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
            raise CheckpointError(f"{self.path}: malformed storage view of {root.key[:40]!r}")
        _view_key, start, size = view_metadata
        start = torch_pickle._count(start, f"{self.path}: storage view offset")
        size = torch_pickle._count(size, f"{self.path}: storage view size")
        if start + size > root.numel:
            raise CheckpointError(
                f"{self.path}: a view of {size} elements at {start} lies "
                f"outside storage {root.key[:40]!r} of {root.numel}"
            )
        return _ViewStorage(root, start, size)

    def make_tensor(self, storage: Storage, offset, size, stride):
        if isinstance(storage, _ViewStorage):  # fold the view into the tensor's offset
            storage, offset = storage.root, storage.start + offset
        return PendingTensor(storage, offset, size, stride)


def _read_storages(
    f: safe_pickle.CappedFile, path: str, storages: dict[str, Storage], keys: Any
) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, (str, int)) for k in keys):
        raise CheckpointError(f"{path}: malformed storage key list")
    for key in map(str, keys):
        storage = storages.get(key)
        if storage is None:
            raise CheckpointError(f"{path}: storage {key[:40]!r} is not used by any tensor")
        if storage.data is not None:
            raise CheckpointError(f"{path}: storage {key[:40]!r} is listed twice")
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{path}: truncated storage {key[:40]!r}")
        count = int(np.frombuffer(header, "<i8")[0])
        if count != storage.numel:
            raise CheckpointError(
                f"{path}: storage {key[:40]!r} holds {count} elements where "
                f"{storage.numel} are declared"
            )
        nbytes = count * storage.dtype.itemsize
        if nbytes > f.remaining():
            raise CheckpointError(f"{path}: truncated storage {key[:40]!r}")
        storage.data = np.frombuffer(f.read(nbytes), storage.dtype)
    missing = sorted(k for k, s in storages.items() if s.data is None)
    if missing:
        raise CheckpointError(f"{path}: storages {missing[:5]} have no data")


def load_legacy(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Loads a legacy (non-zip) torch.save file as numpy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    budget = safe_pickle.Budget(path, os.path.getsize(path), max_bytes)
    with safe_pickle.reading(path), open(path, "rb") as raw:
        f = safe_pickle.CappedFile(raw)
        try:
            magic = safe_pickle.load_plain(f, path)
        except CheckpointError:
            raise
        except Exception:  # noqa: BLE001 - not even a pickle
            magic = None
        if magic != MAGIC_NUMBER:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (bad magic number)")
        if safe_pickle.load_plain(f, path) != PROTOCOL_VERSION:
            raise CheckpointError(f"{path}: unsupported legacy protocol version")
        sys_info = safe_pickle.load_plain(f, path)
        if isinstance(sys_info, Mapping) and not sys_info.get("little_endian", True):
            raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
        unpickler = _LegacyUnpickler(f, path, budget)
        obj = unpickler.load()
        _read_storages(f, path, unpickler.storages, safe_pickle.load_plain(f, path))
        return torch_pickle.materialise(obj)


def load(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Loads a torch.save file of either format (zip archive or legacy)."""
    with fs.local_file(path) as local:
        if os.path.exists(local) and not zipfile.is_zipfile(local):
            return load_legacy(local, max_bytes)
        return torch_pickle.load(local, max_bytes)


def read_state_dict(
    path: str | os.PathLike, key: str | None = None, strip_prefix: str = ""
) -> dict[str, np.ndarray]:
    """Flat name -> array dict from a file of either format.

    `key` selects a sub-dict (e.g. 'state_dict'); `strip_prefix` drops a prefix such as
    'module.' that DataParallel adds to every key.
    """
    state = torch_pickle.state_dict_of(load(path), path, key)
    if strip_prefix:
        state = {
            k[len(strip_prefix) :] if k.startswith(strip_prefix) else k: v for k, v in state.items()
        }
    return state
