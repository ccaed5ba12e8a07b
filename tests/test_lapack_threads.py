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

# The Python API's entry to inference sets it too (the CLI does before every command).
OPEN_ANIMATOR_CHILD = r"""
from jaxtalk import lapack_threads
from jaxtalk.inference import AnimationError, open_animator
before = lapack_threads.threads()
try:
    open_animator("/nonexistent/weights.safetensors")
except AnimationError:
    pass
print(before, lapack_threads.threads())
"""


@pytest.mark.skipif(not lapack_threads._scipy_openblas(), reason="scipy without OpenBLAS")
@pytest.mark.parametrize("child", [CHILD, OPEN_ANIMATOR_CHILD])
def test_scipy_openblas_goes_to_one_thread(child):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert out == ["2", "1"], out
