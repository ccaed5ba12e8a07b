"""Test-wide setup: a CPU-only JAX with 8 simulated devices, so sharding tests see a mesh.

The flags must be set before jax is imported anywhere, which is why they live here.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
# Keep TensorFlow (pulled in by tensorflow-datasets when present) quiet and off the GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
