"""Timing the benchmarks share: JSON rows, XLA's FLOP count, the machine's matmul peak, and
comparisons that alternate their sides; and the torch side's device, modes and peak.

A ratio between two implementations is only as good as the moments each side ran in: with
anything else running, the side that happened to run in the quieter moments wins.
`alternate` runs the sides in turn (A, B, C, A, B, C, ...) in one process, after a warm-up
call each, and reports each side's median and range and, per round, the first side's time
over each other side's (median and range).

The released PyTorch code runs on `--torch_device` (`torch_device`: auto = cuda when torch
sees a GPU) in one or more `--torch_modes` (`torch_modes`): `eager_fp32` (the release as
published), `eager_fp16` (autocast fp16, LivePortrait's default inference setting) and
`compile_fp16` (torch.compile of the modules plus autocast fp16, as LivePortrait's release
applies its flag_do_torch_compile and flag_use_half_precision options), or any
`{eager,compile}_{fp32,fp16,bf16}`. fp16 modes are refused on the CPU: without native fp16
units its fp16 convs take a slow reference path, many times the fp32 time, which times
nothing the release does. A timed torch call on cuda ends with
torch.cuda.synchronize() (`blocking`), as a jax call ends with block_until_ready.
"""

from __future__ import annotations

import contextlib
import dataclasses
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


def ratio(a: list[float], b: list[float]) -> dict:
    """The per-round ratio of two sides' times a / b: median, min, max."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def alternate(
    sides: dict[str, Callable[[], object]], rounds: int, times: dict | None = None
) -> dict[str, dict]:
    """{side: summary} of `rounds` calls of each side, the sides taking turns; with two or more
    sides also {"ratios": {other side: ratio}}: the first side's time over each other side's,
    per round (median, min, max); with exactly two also {"ratio": the one ratio}, as before.
    `times`, a dict, receives each side's seconds per round."""
    for fn in sides.values():
        fn()  # compile / warm up
    rounds_s = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            rounds_s[name].append(seconds(fn))
    out = {name: summary(t) for name, t in rounds_s.items()}
    first, *others = rounds_s
    if others:
        out["ratios"] = {other: ratio(rounds_s[first], rounds_s[other]) for other in others}
    if len(others) == 1:
        out["ratio"] = out["ratios"][others[0]]
    if times is not None:
        times.update(rounds_s)
    return out


JAX_SPEEDUP = ("jax_speedup", "jax_speedup_min", "jax_speedup_max")  # a torch row's keys


def speedup(ratio: dict, *names: str) -> dict:
    """A per-round time ratio (jaxtalk over another side: median, min, max) as jaxtalk's
    speedup under `names` (median, lowest, highest; default the jax rows' keys, JAX_SPEEDUP
    on a torch row: jaxtalk against it)."""
    median, low, high = names or ("speedup_vs_release", "speedup_min", "speedup_max")
    return {
        median: round(1 / ratio["median"], 2),
        low: round(1 / ratio["max"], 2),
        high: round(1 / ratio["min"], 2),
    }


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


def peak_key(row: dict) -> tuple:
    """Whose matmul peak a row is measured against: ("torch", device, dtype) for a row of the
    torch side (it names its `torch_device`), ("jax", dtype) otherwise; dtype fp32 when the
    row names none. A peak row (run "matmul_peak") has the key of the rows it serves."""
    dtype = row.get("dtype", "float32")
    if "torch_device" in row:
        return ("torch", row["torch_device"], dtype)
    return ("jax", dtype)


def peak_row(dtype: str, n: int, iters: int, torch=None, device: str = "") -> dict:
    """One "matmul_peak" row: jax's on its default device, or (with `torch`) torch.mm's on
    `device`. torch's fp32 on cuda is measured with TF32 allowed, as torch runs its fp32
    convs by default (torch.backends.cudnn.allow_tf32; XLA's default fp32 precision on a
    GPU is TF32 too)."""
    row = {"run": "matmul_peak", "dtype": dtype, "n": n}
    if torch is None:
        return {**row, "gflop_per_s": round(matmul_peak(dtype, n, iters) / 1e9, 1)}
    tf32 = device == "cuda" and dtype == "float32" and torch.backends.cudnn.allow_tf32
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else before)
    try:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, generator=gen, device=device).to(getattr(torch, dtype))
        mm = blocking(torch, device, lambda: torch.mm(a, a))
        mm()
        best = min(seconds(mm) for _ in range(iters))
    finally:
        torch.set_float32_matmul_precision(before)
    return {**row, "framework": "torch", "torch_device": device, "torch": torch.__version__,
            **({"tf32": True} if tf32 else {}), "gflop_per_s": round(2 * n**3 / best / 1e9, 1)}  # fmt: skip


# ---------------------------------------------------------------- the torch side
def torch_device(torch, name: str) -> str:
    """`--torch_device` resolved: auto = cuda when torch sees a GPU, else cpu. On cuda, jax
    is told not to take 75% of the GPU's memory up front (torch shares it in this process;
    call before jax first touches its backend) and cuDNN picks its conv algorithms by
    timing them (torch.backends.cudnn.benchmark, as LivePortrait's pipeline sets it; XLA
    autotunes its own)."""
    if name not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"--torch_device {name}: one of auto, cpu, cuda")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--torch_device cuda: torch {torch.__version__} sees no GPU")
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        torch.backends.cudnn.benchmark = True
    return name


@dataclasses.dataclass(frozen=True)
class TorchMode:
    """How the release runs: eagerly or torch.compile'd, in fp32 or under autocast."""

    name: str  # "{eager,compile}_{fp32,fp16,bf16}"
    compiled: bool
    dtype: str  # "float32", "float16", "bfloat16"

    def autocast(self, torch, device: str):
        """The release's inference context: autocast to `dtype` (none for fp32)."""
        if self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device, dtype=getattr(torch, self.dtype))

    def module(self, torch, module, compile_mode: str):
        """`module` as this mode runs it: torch.compile'd as LivePortrait's release does
        (errors fall back to eager), else itself."""
        if not self.compiled:
            return module
        torch._dynamo.config.suppress_errors = True
        return torch.compile(module, mode=compile_mode)


DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_modes(text: str, device: str) -> list[TorchMode]:
    """`--torch_modes` (comma list) parsed; a mode the device cannot run fairly is refused
    with one line (fp16 on the CPU: see the module docstring)."""
    modes = []
    for name in text.split(","):
        how, _, precision = name.partition("_")
        if how not in ("eager", "compile") or precision not in DTYPES:
            raise SystemExit(
                f"--torch_modes {name}: not one of {{eager,compile}}_{{fp32,fp16,bf16}}"
            )
        if device == "cpu" and precision == "fp16":
            raise SystemExit(
                f"--torch_modes {name}: fp16 runs on cuda only (this CPU has no fp16 units; "
                "its fp16 convs take a slow path that times nothing the release does)"
            )
        modes.append(TorchMode(name, how == "compile", DTYPES[precision]))
    return modes


def blocking(torch, device: str, fn: Callable[[], object]) -> Callable[[], object]:
    """`fn`, ending (on cuda) when the GPU has finished its work: a call that can be timed."""
    if device != "cuda":
        return fn

    def call():
        out = fn()
        torch.cuda.synchronize()
        return out

    return call


def torch_fields(torch, device: str, mode: TorchMode | None = None, threads: int = 0) -> dict:
    """What a torch row names: its device, mode and dtype, torch's version (and its CPU
    threads on the CPU)."""
    mode = mode or TorchMode("eager_fp32", False, "float32")
    out = {"torch_device": device, "mode": mode.name, "dtype": mode.dtype}
    out["torch"] = torch.__version__
    if device == "cpu" and threads:
        out["threads"] = threads
    return out
