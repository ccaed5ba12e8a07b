"""The machine's practical peak: the best FLOP/s of a large matmul, fp32 (and bf16 on an
accelerator), which the suite divides each workload's FLOP rate by.

  python benchmarks/peak.py [--n 2048] [--iters 10] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _timing import emit, machine_row, matmul_peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    accelerator = jax.default_backend() != "cpu"
    ap.add_argument("--n", type=int, default=8192 if accelerator else 2048)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dtypes", default="float32,bfloat16" if accelerator else "float32")
    args = ap.parse_args()
    emit(machine_row())
    for name in args.dtypes.split(","):
        peak = matmul_peak(jnp.dtype(name), args.n, args.iters)
        emit(
            {"run": "matmul_peak", "dtype": name, "n": args.n, "gflop_per_s": round(peak / 1e9, 1)}
        )


if __name__ == "__main__":
    main()
