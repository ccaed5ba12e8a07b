"""Timing the benchmarks share: JSON rows, XLA's FLOP count, the machine's matmul peak, and
comparisons that alternate their sides.

A ratio between two implementations is only as good as the moments each side ran in: with
anything else running, the side that happened to run in the quieter moments wins.
`alternate` runs the sides in turn (A, B, A, B, ...) in one process, after a warm-up call
each, and reports each side's median and range and the per-round ratio's median and range.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable


def emit(row: dict) -> dict:
    """One result row on stdout, as the suite (benchmarks/suite.py) collects them."""
    print(json.dumps(row), flush=True)
    return row


def machine_row() -> dict:
    import jax

    device = jax.devices()[0]
    return {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "devices": jax.device_count(),
        "jax": jax.__version__,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def seconds(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of `fn`, which must block until its work is done."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "rounds": len(times),
    }


def alternate(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """{side: summary} of `rounds` calls of each side, the sides taking turns; with two sides
    also {"ratio": ...}: the first side's time over the second's, per round (median, range)."""
    for fn in sides.values():
        fn()  # compile / warm up
    times = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            times[name].append(seconds(fn))
    out = {name: summary(t) for name, t in times.items()}
    if len(sides) == 2:
        a, b = times.values()
        ratios = [x / y for x, y in zip(a, b)]
        out["ratio"] = {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
        }
    return out


def flops(jitted, *args) -> float:
    """XLA's FLOP count of the compiled `jitted(*args)` (nan where the backend gives none)."""
    analysis = jitted.lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float((analysis or {}).get("flops", float("nan")))


def matmul_peak(dtype, n: int, iters: int) -> float:
    """Best FLOP/s of an n x n matmul in `dtype` on the default device: the practical peak
    each workload's FLOP rate is compared with."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(a, a))
    best = min(seconds(lambda: jax.block_until_ready(dot(a, a))) for _ in range(iters))
    return 2 * n**3 / best
