"""Test-wide setup: a CPU-only JAX with 8 simulated devices, so sharding tests see a mesh,
and one XLA compilation cache for the whole run.

The flags must be set before jax is imported anywhere, which is why they live here.
"""

import atexit
import ctypes
import gc
import os
import shutil
import sys
import tempfile

import pytest

from tests import cli_processes

# -O0 and XLA's older CPU kernel emitter (see below and docs/test_suite_time.md).
FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
    " --xla_disable_hlo_passes=tree_reduction_rewriter --xla_cpu_parallel_codegen_split_count=1"
)

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
# LLVM's optimisation passes are most of XLA's CPU compile time (the tiny LivePortrait init:
# 92 s at the default level, 18 s without them), and the tests' tiny shapes run in
# milliseconds either way; convolutions and matmuls call the same precompiled kernels. The
# MLIR fusion emitters set up per kernel what the older emitter does not: a single-op
# compile takes ~21 ms instead of ~33 ms, and the suite's thousands of eager ops and mid-size
# steps compile faster. The largest, MegActor's step, compiled slower with it on one machine
# (28 vs 21 s) and the same on another (AVX-512). Two programs computing the same thing may
# round differently with it: compare them with a tolerance, not bit for bit.
# XLA's CPU compiler splits every reduction over more than 32 values into a reduce-window
# and a reduce (for precision and threads), which the older emitter compiles as two kernels
# of their own, unfused: the tiny MegActor step's gradient norm and clip were ~780 kernel
# modules (squares, reduce-windows and reduces, per parameter array). Without that pass
# (sums in one pass: tiny arrays, same figures to the tests' tolerances) and with the
# kernels compiled as one LLVM module instead of 32 in parallel (no gain from threads on a
# loaded 2-core machine), that step compiled faster: in one process, the flag sets
# alternating, 20.3 s instead of 26.0 s without the pass, then 15.7 s instead of 16.6 s
# with one module (two separate comparisons; docs/test_suite_time.md).
if "xla_backend_optimization_level" not in _flags:
    _flags += " " + FAST_COMPILE
os.environ["XLA_FLAGS"] = _flags.strip()
# Keep TensorFlow (pulled in by tensorflow-datasets when present) quiet and off the GPU.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The same small train and eval steps are compiled again and again: by each `jaxtalk`
# subprocess the tests start, by each xdist worker, by each train() call. One persistent
# compilation cache, read through the environment, serves them all (a cached executable loads
# several times faster than XLA compiles it). The directory is new for each run and removed
# at its end, so no run depends on an earlier one; the xdist workers and the subprocesses
# inherit it from the process that made it. Every compile is cached (threshold 0): on a
# loaded CI machine even small steps take seconds to compile. JAXTALK_TESTS_XLA_CACHE=DIR
# keeps the cache in DIR across runs instead (trimmed at a run's start past 4 GiB, least
# recently used first): a run then loads what an earlier one compiled (README "The two
# commands").
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache_dir = os.environ.get("JAXTALK_TESTS_XLA_CACHE", "")
    if _cache_dir:
        from jaxtalk import compile_cache  # no jax import

        if reason := compile_cache.unusable(_cache_dir):  # made private, as the commands' cache
            raise pytest.UsageError(f"JAXTALK_TESTS_XLA_CACHE={_cache_dir}: {reason}")
        compile_cache.trim(_cache_dir, 4 << 30)
    else:
        _cache_dir = tempfile.mkdtemp(prefix="jaxtalk-tests-xla-cache-")
        atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


cli_processes.collect_less_often()


# A worker's resident memory above which its compiled functions are dropped (below).
RELEASE_ABOVE_BYTES = int(os.environ.get("JAXTALK_TESTS_RELEASE_ABOVE", 3 << 30))


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_functions():
    """Drops JAX's in-memory caches of compiled functions after a test module when the worker
    holds more than RELEASE_ABOVE_BYTES: an xdist worker runs hundreds of modules, and
    without this the executables of every earlier one stay resident (a worker reached 14 GB
    and was killed out of memory on a 24 GB machine). Below it they are kept: the next
    module's small ops and shared functions are then neither traced nor read from the
    persistent cache above again. glibc keeps freed heap pages, so they are handed back to
    the system as well (malloc_trim)."""
    yield
    if os.path.exists("/proc/self/statm") and _resident_bytes() < RELEASE_ABOVE_BYTES:
        return
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# The files that take minutes (`pytest --durations=0` of the whole suite: 40-230 s each, most
# of it XLA compiling tiny training steps), collected first. `make test` hands whole files to
# xdist's workers (`--dist loadfile`: a module's fixtures, such as a tiny training run, are
# built once, not once per worker), in this order (`--no-loadscope-reorder`; by default xdist
# starts with the files that have the most tests): the longest first, so the two workers
# finish together instead of one running the last long file alone.
SLOW_FIRST = (
    "tasks/test_megactor.py",
    "tasks/test_liveportrait.py",
    "tasks/test_aniportrait.py",
    "tasks/test_anitalker_stage2.py",
    "train/test_anitalker_stage1.py",
    "tasks/test_liveportrait_losses.py",
    "tasks/test_latent_diffusion_toy.py",
    "inference/test_liveportrait_animator.py",
    "remote/test_workflow_remote.py",
    "models/test_lia.py",
    "inference/test_megactor_animator.py",
    "inference/test_aniportrait_animator.py",
    "evaluate/test_sweep.py",
    "tasks/test_aniportrait_audio.py",
    "convert/test_release_round_trip.py",
    "train/test_preemption.py",
    "models/latent_diffusion/test_unet.py",
    "convert/test_aniportrait.py",
    "train/test_resume_and_multihost.py",
    "data_pipelines/test_mixtures.py",
    "test_bad_inputs.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    here = os.path.dirname(os.path.abspath(__file__))

    def order(item):
        return rank.get(os.path.relpath(str(item.path), here), len(rank))

    items.sort(key=order)  # stable: within a file, and for the rest, collection order
