"""XLA's compiled programs kept between runs: JAX's persistent compilation cache, on for every
`jaxtalk` command.

A command compiles its programs (a training step, an animator's networks, an evaluation) each
time it starts: seconds on a CPU for the tiny recipes, minutes for the paper-size steps on a
GPU or TPU. With the cache, a resumed `jaxtalk train`, a second `jaxtalk animate` of the same
model or a repeated evaluation loads them instead. JAX keys each entry by the program, its
compile options and XLA flags, the jax / jaxlib version and the devices, so a changed model,
flag or version compiles afresh.

Where: $JAXTALK_XLA_CACHE (a directory, or `off`), default $JAXTALK_CACHE/xla
(~/.cache/jaxtalk/xla). A cache set up for JAX itself (JAX_COMPILATION_CACHE_DIR or
jax.config) is left as it is. A local cache keeps every program (JAX's own threshold, one
second of compile time, is for remote caches: a `jaxtalk animate` of a tiny model started in
3.7 s from a cache of all 17 of its programs, 4.8 s from one of the one program over a
second, 6.1 s from none; medians of three rounds on 2 CPU cores), and its least recently used
entries are deleted at a command's start when it holds more than MAX_BYTES (`trim`; JAX's own
eviction rescans the whole directory for every new entry, quadratic in a cache's size).

The entries are machine code that jaxtalk runs: the directory must be one only its user can
write (a new one is made private), never a shared or downloaded one.
"""

from __future__ import annotations

import os
import warnings

from jaxtalk import fs

ENV = "JAXTALK_XLA_CACHE"
OFF = ("off", "0", "false", "no", "none")
MAX_BYTES = 8 << 30


def directory() -> str | None:
    """The cache directory jaxtalk uses when JAX has none configured; None when turned off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    return os.path.expanduser(value) if value else os.path.join(fs.cache_root(), "xla")


def unusable(path: str) -> str | None:
    """Why a local directory cannot hold the cache (None: it can). Made private if missing;
    one that another user owns or others may write is refused, as its entries would run."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as e:
        return e.strerror
    if st.st_uid != os.getuid():
        return "owned by another user"
    if st.st_mode & 0o022:
        return "others may write it"
    return None


def trim(path: str, max_bytes: int = MAX_BYTES) -> int:
    """Deletes a local cache's least recently used files (the later of their access and
    modification times) until it holds at most 80 % of `max_bytes`, if it holds more than `max_bytes` -> the bytes
    deleted. A process loading an entry deleted meanwhile compiles it again (JAX warns)."""
    try:
        stats = [(e.path, e.stat()) for e in os.scandir(path) if e.is_file()]
    except OSError:
        return 0
    held = sum(st.st_size for _, st in stats)
    if held <= max_bytes:
        return 0
    deleted = 0
    for file, st in sorted(stats, key=lambda f: max(f[1].st_atime, f[1].st_mtime)):
        if held - deleted <= 0.8 * max_bytes:
            break
        try:
            os.remove(file)
            deleted += st.st_size
        except OSError:
            pass
    return deleted


def configure() -> str | None:
    """Points JAX's persistent cache at `directory()` unless JAX already has one -> the
    directory in use (None: no cache). A directory that cannot be used is a warning, not an
    error: the command runs, compiling as without the cache."""
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    path = directory()
    if path is None:
        return None
    if not fs.is_remote(path):
        reason = unusable(path)
        if reason:
            warnings.warn(f"{path}: no XLA compilation cache ({reason}); set {ENV}=DIR or off")
            return None
        trim(path)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_compilation_cache_dir", path)
    return path
