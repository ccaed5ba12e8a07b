"""Restricted unpickling and size limits: a checkpoint file is data, never code.

A pickle is a small program: its GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcodes name any
importable callable and REDUCE / NEWOBJ / BUILD call it. Every one of those names reaches
`Unpickler.find_class`, so the one guarantee jaxtalk needs is that `find_class` answers only
from an explicit allow-list of plain, side-effect-free constructors and raises on anything
else. Every pickle jaxtalk reads (the object pickle of a `torch.save` file, and the header
pickles of a legacy file: magic number, protocol version, system info, storage keys) goes
through `SafeUnpickler` below; nothing in jaxtalk calls `pickle.load`.

The allow-list (`PLAIN_GLOBALS` here, plus the tensor globals of `torch_pickle`), each entry
building plain data:

  collections.OrderedDict, collections.Counter   the containers of a state_dict
  builtins.set, builtins.frozenset, builtins.complex
  _codecs.encode(text, "latin1")                 how protocol 2 spells a bytes object
  numpy.dtype, numpy.core.multiarray.scalar      numeric scalars (objects refused)
  argparse.Namespace                             LIA's `args` entry  } become dicts of
  Lightning's AttributeDict (four module paths)  hyper-parameters    } their fields (Record)

Anything else (a class of the training code, `os.system`, `builtins.eval`, ...) is an error
naming the file and the global; it is never imported, called or passed on as an object.

Size limits: a reader counts every byte it materialises (storages, tensor copies, zip
members) in a `Budget` that stops at `FILE_SIZE_RATIO` times the file's size (plus 1 MiB)
and at most at $JAXTALK_MAX_CHECKPOINT_BYTES (default 64 GiB), checked before the bytes
are allocated or inflated.
"""

from __future__ import annotations

import _compat_pickle
import collections
import contextlib
import os
import pickle
from typing import Any, Callable, Iterator

import numpy as np

from jaxtalk.errors import CheckpointError, one_line

MAX_BYTES_ENV = "JAXTALK_MAX_CHECKPOINT_BYTES"
DEFAULT_MAX_BYTES = 64 << 30
# Storages and the tensors viewing them are both counted, so a plain state_dict uses about
# twice its file's size; tied weights and non-contiguous views add some more. A factor of 8
# leaves room for that, not for a crafted shape or a zip bomb.
FILE_SIZE_RATIO = 8
SLACK_BYTES = 1 << 20


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turns any failure while parsing `path` into a one-line CheckpointError.

    Only allow-listed constructors run during parsing, so an exception there (a REDUCE on
    a storage type, wrong argument types, a truncated stream, nesting too deep to walk)
    means a malformed file, not a jaxtalk bug.
    """
    try:
        yield
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError(f"{path}: malformed checkpoint (nesting too deep)") from None
    except MemoryError:
        raise CheckpointError(f"{path}: malformed checkpoint (ran out of memory)") from None
    except Exception as e:  # noqa: BLE001 - see the docstring
        reason = one_line(f"{type(e).__name__}: {e}")
        raise CheckpointError(f"{path}: malformed checkpoint ({reason})") from None


def max_bytes_setting() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise CheckpointError(f"${MAX_BYTES_ENV}={raw!r}: expected a positive number of bytes")
    return value


class Budget:
    """The bytes one reader may materialise for `path`; `take` checks before allocating."""

    def __init__(self, path: str, file_size: int, max_bytes: int | None = None):
        self.path = path
        cap = max_bytes_setting() if max_bytes is None else int(max_bytes)
        self.limit = min(cap, FILE_SIZE_RATIO * int(file_size) + SLACK_BYTES)
        self.used = 0

    def take(self, nbytes: int, what: str) -> None:
        if nbytes < 0:
            raise CheckpointError(f"{self.path}: {what} has a negative size")
        if self.used + nbytes > self.limit:
            raise CheckpointError(
                f"{self.path}: {what} ({nbytes:,} bytes) would bring the data read to "
                f"{self.used + nbytes:,} bytes, over the limit of {self.limit:,} for this "
                f"file ({FILE_SIZE_RATIO}x its size, at most ${MAX_BYTES_ENV})"
            )
        self.used += nbytes


class CappedFile:
    """A read-only view of a file that never hands out (or allocates for) more bytes than
    remain, so a pickle declaring a 1 TB bytes object fails as truncated instead."""

    def __init__(self, f):
        self._f = f
        self._end = os.fstat(f.fileno()).st_size

    def remaining(self) -> int:
        return max(self._end - self._f.tell(), 0)

    def read(self, n: int = -1) -> bytes:
        n = self.remaining() if n is None or n < 0 else min(n, self.remaining())
        return self._f.read(n)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        return self._f.readinto(view[: self.remaining()])

    def readline(self, size: int = -1) -> bytes:
        size = self.remaining() if size is None or size < 0 else min(size, self.remaining())
        return self._f.readline(size)


# ----------------------------------------------------------------------------- plain globals


class Record(dict):
    """An argparse.Namespace or Lightning AttributeDict read as a plain dict of its fields.

    Each allow-listed record global reads as its own subclass whose `origin` names that
    global, so a writer can put the same type back (`torch_pickle.save`); `fields_as_state`
    says how the type pickles its fields: a Namespace as its __dict__ (BUILD), an
    AttributeDict, being a dict, as items (SETITEMS)."""

    origin: tuple[str, str] = ("argparse", "Namespace")
    fields_as_state = True

    def __init__(self, *args, **kwargs):
        super().__init__()
        if args and isinstance(args[0], dict):
            self.update(args[0])
        self.update(kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"a record's state must be a dict, not {type(state).__name__}")
        self.update(state or {})


_NUMERIC_KINDS = "biufc"


class NumpyDtype:
    """`numpy.dtype(spec, align, copy)` as pickled: a numeric dtype, never an object one.

    Pickling writes the dtype's internal state after the call (BUILD); only its byte order
    is taken from it, so no numpy internals are set from the file."""

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str) or len(spec) > 8:
            raise TypeError(f"unsupported numpy dtype spec {spec!r}")
        dtype = np.dtype(spec)
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields or dtype.hasobject:
            raise TypeError(f"numpy dtype {spec!r} is not a plain numeric type")
        self.dtype = dtype

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise TypeError("malformed numpy dtype state")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDtype) or not isinstance(data, bytes):
        raise TypeError("numpy scalar needs a numeric dtype and its bytes")
    if len(data) != dtype.dtype.itemsize:
        raise TypeError(f"numpy scalar of {dtype.dtype} with {len(data)} bytes")
    return np.frombuffer(data, dtype.dtype)[0]


def _codecs_encode(text, encoding="utf-8", *unused):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise TypeError("_codecs.encode is allowed only as protocol 2's latin1 bytes")
    return text.encode("latin1")


def _container(kind: type) -> Callable:
    """A container constructor that takes only a plain iterable (no callables, no kwargs)."""

    def build(items=()):
        if not isinstance(items, (list, tuple, dict, set, frozenset, str, bytes)):
            raise TypeError(f"{kind.__name__} from {type(items).__name__}")
        return kind(items)

    return build


def _complex(real=0.0, imag=0.0):
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (real, imag)):
        raise TypeError("complex needs two numbers")
    return complex(real, imag)


_LIGHTNING_ATTRIBUTE_DICTS = [
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ("lightning.pytorch.utilities.parsing", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
    ("lightning.fabric.utilities.data", "AttributeDict"),
]


def _record_type(module: str, name: str) -> type[Record]:
    fields = {"origin": (module, name), "fields_as_state": name == "Namespace"}
    return type(name, (Record,), fields)


RECORD_TYPES: dict[tuple[str, str], type[Record]] = {
    origin: _record_type(*origin)
    for origin in [("argparse", "Namespace"), *_LIGHTNING_ATTRIBUTE_DICTS]
}

PLAIN_GLOBALS: dict[tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): _container(collections.Counter),
    ("builtins", "set"): _container(set),
    ("builtins", "frozenset"): _container(frozenset),
    ("builtins", "complex"): _complex,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **RECORD_TYPES,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves globals only from `allowed` and has no persistent ids
    unless a subclass defines them."""

    def __init__(self, file, path: str, allowed: dict[tuple[str, str], Any] | None = None):
        super().__init__(file)
        self.path = path
        self.allowed = PLAIN_GLOBALS if allowed is None else allowed

    def find_class(self, module, name):
        # Protocol 2 (torch.save's) spells some modules by their Python 2 names
        # (__builtin__.set); map them back as pickle's own find_class does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self.allowed.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self.path}: refuses to load the pickled global {one_line(module, 80)}."
                f"{one_line(name, 80)} (not a plain checkpoint type; jaxtalk never runs code "
                "from a file, see README 'Loading untrusted files')"
            )
        return found

    def persistent_load(self, pid):
        raise CheckpointError(f"{self.path}: unexpected persistent id {one_line(repr(pid), 80)}")


def load_plain(file, path: str) -> Any:
    """One pickle of plain values only (numbers, strings, bytes, lists, tuples, dicts): no
    global of any kind, not even an allow-listed one."""
    return SafeUnpickler(file, path, allowed={}).load()


def resolve(obj: Any, replace: Callable[[Any], Any], max_depth: int = 100) -> Any:
    """`obj` with every leaf `replace` changes swapped, through dicts, lists and tuples.

    Each container is visited once (a pickle can share one list under many parents, which a
    plain recursive walk would visit exponentially often); deeper nesting than `max_depth`
    is an error."""
    done: dict[int, tuple[Any, Any]] = {}  # id -> (original, kept alive so ids stay unique; result)

    def walk(x, depth):
        if depth > max_depth:
            raise RecursionError
        if id(x) in done:
            return done[id(x)][1]
        if isinstance(x, dict):  # OrderedDict and Record too; rebuilt in place to keep the type
            done[id(x)] = (x, x)
            for k in list(x):
                x[k] = walk(x[k], depth + 1)
            return x
        if isinstance(x, list):
            done[id(x)] = (x, x)
            x[:] = [walk(v, depth + 1) for v in x]
            return x
        if type(x) is tuple:
            out = tuple(walk(v, depth + 1) for v in x)
            done[id(x)] = (x, out)
            return out
        return replace(x)

    return walk(obj, 0)
