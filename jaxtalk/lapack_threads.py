"""One thread for the OpenBLAS that jaxlib's CPU linear algebra calls into (scipy's copy).

XLA's CPU runtime calls LAPACK (QR, triangular solves, ...) from its own worker threads,
which already run the rest of the program in parallel; OpenBLAS then wakes its own thread
pool for each small call, and those threads spin after it, taking the cores XLA's threads
need. The LIA / AniTalker stage-1 step has such a call (the motion dictionary's QR and its
gradient's triangular solve): on the 2-core CPU its spinning threads held 15% of the
training process's CPU samples, and the tiny stage-1 run went from 0.96-1.63 steps/s to
1.87-1.99 with one thread (separate processes alternating over two rounds, idle machine).
numpy's own OpenBLAS (a different library) keeps its threads.
"""

from __future__ import annotations

import ctypes
import glob
import os


def _scipy_openblas() -> list[ctypes.CDLL]:
    """scipy's bundled OpenBLAS libraries (already loaded by jaxlib: the same handles)."""
    try:
        import scipy
    except ImportError:
        return []
    libs = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    found = []
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas-*.so*"))):
        try:
            lib = ctypes.CDLL(path)
            lib.scipy_openblas_set_num_threads, lib.scipy_openblas_get_num_threads
        except (OSError, AttributeError):
            continue
        found.append(lib)
    return found


def single_thread() -> bool:
    """Sets scipy's OpenBLAS to one thread in this process; False where there is none (a
    scipy built against another BLAS: nothing to change)."""
    libs = _scipy_openblas()
    for lib in libs:
        lib.scipy_openblas_set_num_threads(1)
    return bool(libs)


def threads() -> int | None:
    """scipy's OpenBLAS thread count in this process (None without one)."""
    libs = _scipy_openblas()
    return int(libs[0].scipy_openblas_get_num_threads()) if libs else None
