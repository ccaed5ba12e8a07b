"""Read and write PyTorch checkpoint files without PyTorch.

The released checkpoints are `torch.save` zip archives (`archive/data.pkl` plus one raw
file per storage) or Lightning `.ckpt` files in the same format. Reading them needs only a
restricted unpickler (`safe_pickle`): tensors become numpy arrays, each view checked
against its storage, hyper-parameter containers become plain dicts, any other class is an
error, and no code from the file is ever executed. Writing produces archives that `torch.load` reads
(including with `weights_only=True`), so `jaxtalk export` can hand weights back to the
released PyTorch code.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import time
import zipfile
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from jaxtalk import fs
from jaxtalk.convert import safe_pickle
from jaxtalk.errors import CheckpointError, one_line

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


class StorageType:
    """`torch.FloatStorage` and friends: only ever an argument of a storage persistent id."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])

    def __repr__(self):
        return f"torch.{self.name}"


class Storage:
    """A storage a persistent id declares: its key, dtype and element count; `data` is the
    flat array once read (at once from a zip member, after the pickle in a legacy file)."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, data: np.ndarray | None = None):
        self.key, self.dtype, self.numel, self.data = key, dtype, numel, data

    def flat(self) -> np.ndarray:
        return self.data


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise CheckpointError(
            f"{what} must be a non-negative integer, not {one_line(repr(value), 40)}"
        )
    return int(value)


def _counts(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > 64:
        raise CheckpointError(f"{what} must be a tuple of at most 64 integers")
    return tuple(_count(v, what) for v in values)


def tensor_view(
    flat: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> np.ndarray:
    """The tensor (`size`, element `stride`) starting at element `offset` of `flat`; a copy
    only where the view is not contiguous. Bounds are checked by `TorchUnpickler`."""
    if not size:
        return flat[offset : offset + 1].reshape(()).copy()
    if 0 in size:
        return np.zeros(size, flat.dtype)
    itemsize = flat.dtype.itemsize
    strides = tuple(s * itemsize if n > 1 else 0 for n, s in zip(size, stride))
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=strides)
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *_unused):
    if not isinstance(data, (np.ndarray, PendingTensor)):
        raise TypeError(f"a parameter wraps a tensor, not {type(data).__name__}")
    return data


class PendingTensor:
    """A checked tensor view of a storage whose bytes are not read yet (legacy files)."""

    def __init__(self, storage: Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> np.ndarray:
        return tensor_view(self.storage.data, self.offset, self.size, self.stride)


def _torch_size(dims=()):
    return _counts(dims, "torch.Size")


def _torch_device(kind, index=None):
    if not isinstance(kind, str) or not (index is None or isinstance(index, int)):
        raise TypeError("torch.device needs a device name")
    return kind if index is None else f"{kind}:{index}"


_TORCH_DTYPES = (
    "float64",
    "float32",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
)

# The torch part of the allow-list (see safe_pickle for the plain part): storage types,
# tensor and parameter rebuilds, torch.Size, torch.device and dtype names (as strings).
TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    **{("torch", name): StorageType(name) for name in _STORAGE_DTYPES},
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    **{("torch", name): f"torch.{name}" for name in _TORCH_DTYPES},
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_TENSOR_REBUILDS = (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"))


class TorchUnpickler(safe_pickle.SafeUnpickler):
    """The restricted unpickler of a torch.save object pickle: allow-listed globals only,
    storages from `storage` (the format's persistent ids), and every tensor view checked
    against its storage (offset and strides >= 0, last element inside) and charged to
    `budget` before it is built."""

    def __init__(self, file, path: str, budget: safe_pickle.Budget):
        allowed = {**safe_pickle.PLAIN_GLOBALS, **TORCH_GLOBALS}
        allowed.update({name: self._rebuild_tensor for name in _TENSOR_REBUILDS})
        super().__init__(file, path, allowed)
        self.budget = budget
        self.storages: dict[str, Storage] = {}

    def declare_storage(self, storage_type, key, numel) -> Storage:
        """The storage of a persistent id, declared once per key with one dtype and size."""
        if not isinstance(storage_type, StorageType):
            raise CheckpointError(
                f"{self.path}: unsupported storage type {one_line(repr(storage_type), 60)}"
            )
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise CheckpointError(f"{self.path}: storage key must be a string")
        key, numel = str(key), _count(numel, f"{self.path}: storage {str(key)[:40]!r} size")
        known = self.storages.get(key)
        if known is None:
            self.budget.take(numel * storage_type.dtype.itemsize, f"storage {key[:40]!r}")
            known = self.storages[key] = Storage(key, storage_type.dtype, numel)
        elif known.dtype != storage_type.dtype or known.numel != numel:
            raise CheckpointError(
                f"{self.path}: storage {key[:40]!r} is declared twice with different types or sizes"
            )
        return known

    def _rebuild_tensor(self, storage, offset, size, stride, *_unused):
        if not isinstance(storage, Storage):
            raise CheckpointError(f"{self.path}: a tensor rebuild without a storage")
        what = f"{self.path}: tensor of storage {storage.key[:40]!r}"
        offset, size = _count(offset, f"{what}: offset"), _counts(size, f"{what}: size")
        stride = _counts(stride, f"{what}: stride")
        if len(stride) != len(size):
            raise CheckpointError(f"{what}: {len(size)} sizes but {len(stride)} strides")
        numel = int(np.prod(size, dtype=object)) if size else 1
        if numel:
            last = offset + sum((n - 1) * s for n, s in zip(size, stride))
            if last >= storage.numel:
                raise CheckpointError(
                    f"{what}: shape {size}, stride {stride}, offset {offset} "
                    f"reaches element {last} of a storage of {storage.numel}"
                )
        self.budget.take(numel * storage.dtype.itemsize, f"a tensor of shape {size}")
        return self.make_tensor(storage, offset, size, stride)

    def make_tensor(self, storage: Storage, offset, size, stride):
        return tensor_view(storage.data, offset, size, stride)


class _ZipUnpickler(TorchUnpickler):
    def __init__(
        self, file, archive: zipfile.ZipFile, prefix: str, path: str, budget: safe_pickle.Budget
    ):
        super().__init__(file, path, budget)
        self._archive, self._prefix = archive, prefix

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(
                f"{self.path}: unsupported persistent id {one_line(repr(pid), 80)}"
            )
        _, storage_type, key, _location, numel = pid
        storage = self.declare_storage(storage_type, key, numel)
        if storage.data is None:
            nbytes = storage.numel * storage.dtype.itemsize
            raw = read_member(
                self._archive, f"{self._prefix}data/{storage.key}", self.path, expected_size=nbytes
            )
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
        return storage


def read_member(
    archive: zipfile.ZipFile,
    name: str,
    path: str,
    expected_size: int | None = None,
    budget: safe_pickle.Budget | None = None,
) -> bytes:
    """A zip member's bytes, its declared inflated size checked (against `expected_size`
    and `budget`) before anything is inflated; zipfile stops inflating at that size."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path}: zip archive has no member {name[:80]!r}") from None
    if expected_size is not None and info.file_size != expected_size:
        raise CheckpointError(
            f"{path}: member {name[:80]!r} holds {info.file_size:,} bytes "
            f"where {expected_size:,} are declared"
        )
    if budget is not None:
        budget.take(info.file_size, f"member {name[:80]!r}")
    with archive.open(info) as f:
        data = f.read(info.file_size)
    if len(data) != info.file_size:
        raise CheckpointError(f"{path}: member {name[:80]!r} is truncated")
    return data


def load(path: str | os.PathLike, max_bytes: int | None = None) -> Any:
    """Loads a `torch.save` zip archive (e.g. a state_dict or Lightning ckpt) as numpy.

    Only allow-listed plain types are unpickled (safe_pickle); `max_bytes` overrides the
    cap on the bytes read ($JAXTALK_MAX_CHECKPOINT_BYTES)."""
    with fs.local_file(path) as local:
        return _load_local(local, max_bytes)


def _load_local(path: str, max_bytes: int | None) -> Any:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (legacy pre-1.6 format or not a checkpoint); "
            "re-save it with torch.save in PyTorch >= 1.6"
        )
    budget = safe_pickle.Budget(path, os.path.getsize(path), max_bytes)
    with safe_pickle.reading(path), zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if not pkl:
            raise CheckpointError(f"{path}: zip archive without data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        data = read_member(archive, pkl[0], path, budget=budget)
        return materialise(_ZipUnpickler(io.BytesIO(data), archive, prefix, path, budget).load())


def materialise(obj: Any) -> Any:
    """Replaces pending tensors and bare storages by numpy arrays throughout a loaded tree."""

    def leaf(x):
        if isinstance(x, PendingTensor):
            return x.materialise()
        if isinstance(x, Storage):
            return x.flat()
        return x

    return safe_pickle.resolve(obj, leaf)


def load_state_dict(path: str | os.PathLike, key: str | None = None) -> dict[str, np.ndarray]:
    """Loads a flat name -> array dict; `key` selects a sub-dict ('state_dict', 'gen')."""
    return state_dict_of(load(path), path, key)


def state_dict_of(
    obj: Any, path: str | os.PathLike, key: str | None = None
) -> dict[str, np.ndarray]:
    """The name -> array entries of a loaded checkpoint (of its `key` entry when given)."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = sorted(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
            raise CheckpointError(f"{path}: no entry {key!r} (top level has {found})")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict mapping, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject or not isinstance(k, str):
                raise CheckpointError(
                    f"{path}: entry {one_line(repr(k), 60)} is not a named numeric tensor"
                )
            out[k] = v
    return out


# ----------------------------------------------------------------------------- writing


class _Global:
    """A reference to a torch global, written as a GLOBAL opcode (torch need not exist)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Reduce:
    def __init__(self, fn: _Global, args: tuple):
        self.fn, self.args = fn, args


class PlainDict(dict):
    """A mapping `save` writes as a plain dict; any other mapping is written as an
    OrderedDict, as torch writes a state_dict (release_file uses it to put a file's plain
    dicts back as they were)."""


class _Object:
    """A record (argparse.Namespace, Lightning AttributeDict) as its class pickles it:
    NEWOBJ of the class, then its fields as state (BUILD) or as items (SETITEMS)."""

    def __init__(self, record: safe_pickle.Record, fields: PlainDict):
        if record.origin not in safe_pickle.RECORD_TYPES:  # never write any other global
            raise TypeError(f"cannot write a record of {record.origin}")
        self.cls, self.fields = _Global(*record.origin), fields
        self.fields_as_state = record.fields_as_state


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

    def save_object(self, obj: _Object):
        self.save(obj.cls)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if obj.fields_as_state:
            self.save(obj.fields)
            self.write(pickle.BUILD)
            return
        self.write(pickle.MARK)
        for key, value in obj.fields.items():
            self.save(key)
            self.save(value)
        self.write(pickle.SETITEMS)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Global] = save_global_ref
    dispatch[_Reduce] = save_reduce_ref
    dispatch[_Object] = save_object
    dispatch[PlainDict] = pickle._Pickler.save_dict


def _tensor(array: np.ndarray) -> _Reduce:
    array = np.asarray(array, order="C")  # not ascontiguousarray, which makes 0-d arrays 1-d
    if array.dtype not in _DTYPE_STORAGES:
        raise TypeError(f"dtype {array.dtype} has no PyTorch storage type")
    flat = array.reshape(-1)
    stride = tuple(int(np.prod(array.shape[i + 1 :])) for i in range(array.ndim))
    return _Reduce(
        _Global("torch._utils", "_rebuild_tensor_v2"),
        (
            _StorageMarker(flat),
            0,
            tuple(array.shape),
            stride,
            False,
            _Reduce(_Global("collections", "OrderedDict"), ()),
        ),
    )


def _convert(obj):
    """Replaces arrays (numpy or jax) by tensor reductions, records by their class's
    reduction, mappings other than PlainDicts by OrderedDicts."""
    if isinstance(obj, np.ndarray) or (
        hasattr(obj, "__array__") and hasattr(obj, "dtype") and not isinstance(obj, np.generic)
    ):
        return _tensor(np.asarray(obj))
    if isinstance(obj, safe_pickle.Record):
        return _Object(obj, PlainDict((k, _convert(v)) for k, v in obj.items()))
    if isinstance(obj, PlainDict):
        return PlainDict((k, _convert(v)) for k, v in obj.items())
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
    with fs.local_output(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr(f"{archive_name}/data.pkl", buf.getvalue())
        archive.writestr(f"{archive_name}/byteorder", "little")
        for key, flat in enumerate(storages):
            _write_storage(archive, f"{archive_name}/data/{key}", flat)
        archive.writestr(f"{archive_name}/version", "3\n")


def _write_storage(archive: zipfile.ZipFile, name: str, flat: np.ndarray) -> None:
    """One storage's bytes, little-endian, streamed from the array itself (writestr wants
    bytes: an astype copy and a tobytes copy of every tensor, transient, but twice the
    largest tensor's size at the peak and two memory passes per tensor)."""
    flat = flat.astype(flat.dtype.newbyteorder("<"), copy=False)  # a copy on big-endian hosts only
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.file_size = flat.nbytes  # decides zip64 up front, as writestr does
    info.external_attr = 0o600 << 16  # as writestr's members
    with archive.open(info, "w") as member:
        member.write(flat.view(np.uint8))
