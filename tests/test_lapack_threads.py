"""jaxtalk.lapack_threads: scipy's OpenBLAS (the one jaxlib's CPU LAPACK calls) goes to one
thread, numpy's keeps its own; checked in a child process with a known starting count."""

import os
import subprocess
import sys

import pytest

from jaxtalk import lapack_threads

CHILD = r"""
import jax.numpy as jnp, numpy as np
from jaxtalk import lapack_threads
jnp.linalg.qr(jnp.ones((4, 3)))  # jaxlib's LAPACK loaded and used
before = lapack_threads.threads()
assert lapack_threads.single_thread()
print(before, lapack_threads.threads())
"""


@pytest.mark.skipif(not lapack_threads._scipy_openblas(), reason="scipy without OpenBLAS")
def test_scipy_openblas_goes_to_one_thread():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["2", "1"], out
