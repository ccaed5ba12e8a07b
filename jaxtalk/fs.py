"""One file-system layer for every path a user gives: local paths and URLs alike.

    fs.join("gs://bucket/runs", "s1", "metrics.jsonl")   # never turned into a local path
    with fs.open(path, "w") as f: ...
    with fs.local_file("gs://bucket/w.safetensors") as local: ...   # for readers that need one

A path with a scheme (`gs://`, `s3://`, `memory://`, anything etils.epath / fsspec knows) is
remote; everything else is local. Remote paths go through fsspec (the layer under
etils.epath, which orbax writes checkpoints through): gcsfs for Google Cloud Storage, the
store's fsspec package for others; local paths go through the os module. `absolute`
makes a local path absolute and leaves a URL alone: `os.path.abspath("gs://b/s1")` is
`./gs:/b/s1`, a local directory per host, which is the bug this module exists to prevent.

Object stores have no append: `AppendFile` keeps what was written and rewrites the object
on `flush` at most every `flush_seconds` (and on close), for metrics and TensorBoard logs.
Readers that need a real local file (ArrayRecord, ffmpeg, memory-mapped weights) take
`local_file` / `local_dir`, which download a remote path into a cache once.

A storage fault (missing file, denied, unreachable) becomes one `FileSystemError` line
naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
from typing import IO, Iterator

from jaxtalk.errors import InputError, one_line

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Exception modules of the storage clients (gcsfs, google-auth, aiohttp, botocore, fsspec):
# their faults are about the path, not bugs in jaxtalk.
_STORAGE_MODULES = ("gcsfs", "google", "aiohttp", "botocore", "s3fs", "fsspec", "etils")


class FileSystemError(InputError):
    """A path that cannot be read or written; the message names it and the reason."""


def scheme(path) -> str | None:
    m = _SCHEME.match(os.fspath(path))
    return m.group(1).lower() if m else None


def is_remote(path) -> bool:
    return scheme(path) not in (None, "file")


def _local(path) -> str:
    path = os.fspath(path)
    return path[len("file://") :] if scheme(path) == "file" else path


def absolute(path) -> str:
    """A local path made absolute (user `~` expanded); a URL unchanged."""
    path = os.fspath(path)
    if is_remote(path):
        return path.rstrip("/") if not path.endswith("://") else path
    return os.path.abspath(os.path.expanduser(_local(path)))


def join(base, *parts: str) -> str:
    base = os.fspath(base)
    if is_remote(base):
        return posixpath.join(base, *parts)
    return os.path.join(_local(base), *parts)


def basename(path) -> str:
    return posixpath.basename(absolute(path).rstrip("/"))


def dirname(path) -> str:
    path = absolute(path)
    return posixpath.dirname(path) if is_remote(path) else os.path.dirname(path)


def _fsspec(path):
    """(file system, path inside it) for a URL, with that path's cached listings dropped:
    other hosts and processes write the same bucket, so a listing is never reused."""
    import fsspec

    store, inner = fsspec.core.url_to_fs(os.fspath(path))
    store.invalidate_cache(inner)
    return store, inner


def _storage_error(e: BaseException) -> bool:
    module = type(e).__module__ or ""
    return isinstance(e, OSError) or module.split(".")[0] in _STORAGE_MODULES


@contextlib.contextmanager
def guarded(path, action: str = "access") -> Iterator[None]:
    """Turns a storage fault inside the block into a FileSystemError naming `path`."""
    try:
        yield
    except FileSystemError:
        raise
    except Exception as e:
        if not _storage_error(e):
            raise
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        if isinstance(e, FileNotFoundError):
            reason = "no such file or directory"
        raise FileSystemError(one_line(f"{path}: cannot {action}: {reason}", 300)) from None


# ----------------------------------------------------------------------------- queries


def exists(path) -> bool:
    with guarded(path, "check"):
        if is_remote(path):
            store, inner = _fsspec(path)
            return store.exists(inner)
        return os.path.exists(_local(path))


def isdir(path) -> bool:
    with guarded(path, "check"):
        if is_remote(path):
            store, inner = _fsspec(path)
            return store.isdir(inner)
        return os.path.isdir(_local(path))


def isfile(path) -> bool:
    return exists(path) and not isdir(path)


def listdir(path) -> list[str]:
    """Names in a directory, sorted ([] when it does not exist)."""
    if not isdir(path):
        return []
    with guarded(path, "list"):
        if is_remote(path):
            store, inner = _fsspec(path)
            return sorted(posixpath.basename(p.rstrip("/")) for p in store.ls(inner, detail=False))
        return sorted(os.listdir(_local(path)))


def glob(directory, pattern: str) -> list[str]:
    """Paths in `directory` whose names match `pattern` (fnmatch), sorted."""
    import fnmatch

    return [join(directory, n) for n in listdir(directory) if fnmatch.fnmatch(n, pattern)]


def size(path) -> int:
    with guarded(path, "stat"):
        if is_remote(path):
            store, inner = _fsspec(path)
            return int(store.size(inner))
        return os.path.getsize(_local(path))


# ----------------------------------------------------------------------------- changes


def makedirs(path) -> None:
    with guarded(path, "create the directory"):
        if is_remote(path):
            store, inner = _fsspec(path)
            store.makedirs(inner, exist_ok=True)
        else:
            os.makedirs(_local(path), exist_ok=True)


def remove(path) -> None:
    with guarded(path, "remove"):
        if is_remote(path):
            store, inner = _fsspec(path)
            if store.exists(inner):
                store.rm(inner)
        elif os.path.exists(_local(path)):
            os.remove(_local(path))


def rmtree(path) -> None:
    with guarded(path, "remove"):
        if is_remote(path):
            store, inner = _fsspec(path)
            if store.exists(inner):
                store.rm(inner, recursive=True)
        else:
            shutil.rmtree(_local(path), ignore_errors=True)


def copy(src, dst) -> None:
    """One file from anywhere to anywhere."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 22)


def copy_tree(src, dst) -> int:
    """Every file under `src` to the same relative path under `dst`; returns the count."""
    count = 0
    for name in listdir(src):
        if isdir(join(src, name)):
            count += copy_tree(join(src, name), join(dst, name))
        else:
            makedirs(dst)
            copy(join(src, name), join(dst, name))
            count += 1
    return count


# ----------------------------------------------------------------------------- reading, writing


class _Guarded(io.IOBase):
    """A file object whose storage faults become FileSystemError lines naming the path."""

    def __init__(self, f, path, action):
        self._f, self._path, self._action = f, path, action

    def __getattr__(self, name):
        attr = getattr(self._f, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with guarded(self._path, self._action):
                return attr(*args, **kwargs)

        return call

    def __iter__(self):
        with guarded(self._path, self._action):
            yield from self._f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        with guarded(self._path, self._action):
            self._f.close()

    @property
    def closed(self):
        return self._f.closed


def open(path, mode: str = "r", **kwargs) -> IO:  # noqa: A001 (the module's verb)
    """`builtins.open` for any path; text modes read UTF-8 unless told otherwise. Appending to
    a remote path rewrites the object on close (object stores have no append)."""
    action = "read" if "r" in mode and "+" not in mode else "write"
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    if is_remote(path) and "a" in mode:
        return AppendFile(path, binary="b" in mode, flush_seconds=float("inf"))
    with guarded(path, action):
        if is_remote(path):
            store, inner = _fsspec(path)
            f = store.open(inner, mode, **kwargs)
        else:
            f = io.open(_local(path), mode, **kwargs)
    return _Guarded(f, path, action)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_text(path) -> str:
    with open(path, "r") as f:
        return f.read()


def read_json(path):
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileSystemError(one_line(f"{path}: not valid JSON ({e})")) from None


def write_bytes(path, data: bytes) -> None:
    """Writes `data` whole: a local file through a temporary file and a rename, so a reader
    never sees half a file (an object store's put is atomic by itself)."""
    if is_remote(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    path = _local(path)
    directory = os.path.dirname(os.path.abspath(path))
    with guarded(path, "write"):
        os.makedirs(directory, exist_ok=True)  # as an object store needs no directories
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


class AppendFile:
    """Append-mode writes to any path. Local: a plain append. Remote: the object's current
    content plus the new bytes, rewritten on `flush` when `flush_seconds` have passed since
    the last upload, and always on `close`."""

    def __init__(self, path, binary: bool = False, flush_seconds: float = 30.0):
        self.path, self.binary = os.fspath(path), binary
        self.flush_seconds = flush_seconds
        self._remote = is_remote(path)
        self.closed = False
        if not self._remote:
            with guarded(path, "write"):
                self._f = io.open(
                    _local(path), "ab" if binary else "a", encoding=None if binary else "utf-8"
                )
            return
        self._buffer = bytearray(read_bytes(path) if exists(path) else b"")
        self._uploaded, self._dirty = time.monotonic(), False

    def write(self, data) -> int:
        if not self._remote:
            with guarded(self.path, "write"):
                return self._f.write(data)
        self._buffer += data if self.binary else data.encode("utf-8")
        self._dirty = True
        return len(data)

    def flush(self, force: bool = False) -> None:
        if not self._remote:
            with guarded(self.path, "write"):
                self._f.flush()
            return
        if self._dirty and (force or time.monotonic() - self._uploaded >= self.flush_seconds):
            with open(self.path, "wb") as f:
                f.write(bytes(self._buffer))
            self._uploaded, self._dirty = time.monotonic(), False

    def close(self) -> None:
        if self.closed:
            return
        self.flush(force=True)
        if not self._remote:
            self._f.close()
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------- local copies


def cache_root() -> str:
    """Where remote files are downloaded for readers that need a local file:
    `$JAXTALK_CACHE`, default ~/.cache/jaxtalk."""
    return os.path.expanduser(os.environ.get("JAXTALK_CACHE", "~/.cache/jaxtalk"))


def _cache_path(path: str, kind: str = "remote") -> str:
    digest = hashlib.sha256(absolute(path).encode()).hexdigest()[:16]
    return os.path.join(cache_root(), kind, f"{digest}_{basename(path)}")


def staging_dir(path) -> str:
    """A local directory, the same on every call for `path`, where a writer that needs local
    files (ArrayRecord shards) builds what `copy_tree` then uploads to the remote `path`; a
    rerun on the same host finds its earlier work there."""
    target = _cache_path(path, "staging")
    os.makedirs(target, exist_ok=True)
    return target


@contextlib.contextmanager
def local_file(path) -> Iterator[str]:
    """A local filename holding `path`'s bytes: the path itself when local, else a temporary
    download removed afterwards."""
    if not is_remote(path):
        yield _local(path)
        return
    if not isfile(path):
        raise FileSystemError(f"{path}: cannot read: no such file")
    with tempfile.TemporaryDirectory(prefix="jaxtalk_") as tmp:
        local = os.path.join(tmp, basename(path))
        copy(path, local)
        try:
            yield local
        except InputError as e:  # the message names the file the user gave, not the copy
            raise type(e)(str(e).replace(local, path)) from None


@contextlib.contextmanager
def local_output(path) -> Iterator[str]:
    """A local filename to write `path` into: beside it, renamed onto it once the block
    succeeds (a reader never sees half a file); for a remote path, a temporary file uploaded
    then. Writers that need a real file (zip archives, safetensors) take this."""
    path = os.fspath(path)
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="jaxtalk_") as tmp:
            local = os.path.join(tmp, basename(path))
            yield local
            copy(local, path)
        return
    path = _local(path)
    with guarded(path, "write"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"  # the extension kept: ffmpeg picks the container by it
    try:
        yield tmp
        with guarded(path, "write"):
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def local_dir(path) -> str:
    """A local directory with `path`'s files: the path itself when local, else a copy in the
    cache (`cache_root`), downloaded once; a file whose size changed is fetched again."""
    if not isdir(path):
        raise FileSystemError(f"{path}: cannot read: no such directory")
    if not is_remote(path):
        return absolute(path)
    target = _cache_path(path)
    _sync_down(absolute(path), target)
    return target


def _sync_down(src: str, dst: str) -> None:
    os.makedirs(dst, exist_ok=True)
    for name in listdir(src):
        remote, local = join(src, name), os.path.join(dst, name)
        if isdir(remote):
            _sync_down(remote, local)
        elif not os.path.exists(local) or os.path.getsize(local) != size(remote):
            tmp = f"{local}.{os.getpid()}.part"  # processes of one host may sync at once
            copy(remote, tmp)
            os.replace(tmp, local)
