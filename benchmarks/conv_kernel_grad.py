"""A conv's kernel gradient on this machine: XLA's own against jaxtalk's "rows" matmuls
(jaxtalk/models/layers/conv_kernel_grad.py), at the shapes the families train with.

Each case times the kernel's vjp alone (x, dy given), the two ways alternating call by call
over --rounds rounds after a warm-up (benchmarks/_timing.alternate), and prints its GFLOP/s
(2 * N * Ho * Wo * kh * kw * Cin * Cout) and the ratio. The way is chosen when a function
is traced, by $JAXTALK_CONV_KERNEL_GRAD, so each side is traced under its own setting.

    python benchmarks/conv_kernel_grad.py [--rounds 3] [--cases all|NAME,...]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from _timing import alternate, emit, machine_row

from jaxtalk import lapack_threads
from jaxtalk.models.layers.conv_kernel_grad import conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
# name: (N, H, W, Cin, Cout, k[, stride]) -- N counts images, or the depth slices of a 3-D
# conv; stride-1 convs are padded to keep the size, strided ones (a blurred input) are not
CASES = {
    "lp_w_hourglass_out": (16, 64, 64, 142, 142, 3),  # W's hourglass decoder conv, per tap
    "lp_w_mask": (16, 64, 64, 142, 22, 7),  # W's 7x7x7 mask conv, per depth tap
    "lp_w_occlusion": (1, 64, 64, 2272, 1, 7),  # W's occlusion conv over folded depth
    "lp_g_mid": (1, 64, 64, 512, 256, 3),
    "lp_g_up": (1, 256, 256, 128, 64, 3),
    "lp_g_rgb": (1, 512, 512, 64, 3, 3),
    "lia_b8_64": (8, 64, 64, 256, 256, 3),  # LIA's generator at batch 8
    "lia_b8_128": (8, 128, 128, 128, 128, 3),
    "lia_b8_32": (8, 32, 32, 512, 512, 3),
    "rgb_in_7x7": (1, 256, 256, 3, 64, 7),
    "lia_b8_down_257": (8, 257, 257, 64, 128, 3, 2),  # LIA's encoder downsampling convs
    "lia_b8_down_129": (8, 129, 129, 128, 256, 3, 2),
    "lia_b8_down_33": (8, 33, 33, 512, 512, 3, 2),
    "lia_b8_skip_256": (8, 256, 256, 64, 128, 1, 2),  # and their 1x1 skip convs
}


def kernel_vjp(method: str, stride: int):
    """A jitted (x, kernel, dy) -> dK, traced with the kernel-gradient `method`."""

    def grad(x, kernel, dy):
        p = kernel.shape[0] // 2 if stride == 1 else 0
        pads = ((p, p), (p, p))
        strides = (stride, stride)
        conv = lambda k: conv_general_dilated(x, k, strides, pads, dimension_numbers=DN)  # noqa: E731
        return jax.vjp(conv, kernel)[1](dy)[0]

    jitted = jax.jit(grad)

    def traced(*args):
        os.environ["JAXTALK_CONV_KERNEL_GRAD"] = method
        try:
            return jitted.lower(*args).compile()
        finally:
            del os.environ["JAXTALK_CONV_KERNEL_GRAD"]

    return traced


def main():
    lapack_threads.single_thread()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default="all", help=f"comma list of {', '.join(CASES)}")
    args = ap.parse_args()
    names = list(CASES) if args.cases == "all" else args.cases.split(",")
    emit(machine_row())
    rng = np.random.default_rng(0)
    for name in names:
        n, h, w, cin, cout, k, stride = (CASES[name] + (1,))[:7]
        ho, wo = (h, w) if stride == 1 else ((h - k) // stride + 1, (w - k) // stride + 1)
        x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.float32)
        kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout)), jnp.float32)
        dy = jnp.asarray(rng.standard_normal((n, ho, wo, cout)), jnp.float32)
        compiled = {m: kernel_vjp(m, stride)(x, kernel, dy) for m in ("xla", "rows")}
        sides = {
            m: (lambda c=c: jax.block_until_ready(c(x, kernel, dy))) for m, c in compiled.items()
        }
        t = alternate(sides, args.rounds)
        gflop = 2 * n * ho * wo * k * k * cin * cout / 1e9
        emit({"run": "conv_kernel_grad", "case": name, "shape": [n, h, w, cin, cout, k, stride],
              "gflop": round(gflop, 2),
              **{f"{m}_ms": round(t[m]["median_s"] * 1e3, 1) for m in compiled},
              **{f"{m}_gflop_per_s": round(gflop / t[m]["median_s"], 1) for m in compiled},
              "rows_speedup": round(t["ratio"]["median"], 2),  # xla's time over rows'
              "rows_speedup_range": [round(t["ratio"]["min"], 2),
                                     round(t["ratio"]["max"], 2)]})  # fmt: skip


if __name__ == "__main__":
    main()
