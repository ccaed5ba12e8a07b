"""The machine's practical peak: the best FLOP/s of a large matmul, fp32 (and bf16 on an
accelerator), which the suite divides each workload's FLOP rate by; with --torch_device
also torch.mm's on the device the torch side runs on, in each dtype a torch row can name
(fp32, and on cuda fp16 and bf16: eager_fp32 rows against the first, *_fp16 rows against
the second), so a row is compared with the peak of its own framework, device and dtype.

  python benchmarks/peak.py [--n 2048] [--iters 10] [--dtypes float32,bfloat16]
      [--torch_device auto|cpu|cuda] [--torch_dtypes float32,float16,bfloat16]
"""

from __future__ import annotations

import argparse

import jax
from _timing import emit, machine_row, peak_row, torch_device


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=0, help="default: 8192 on an accelerator, else 2048")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--dtypes", default="", help="default: float32 (and bfloat16 on one)")
    ap.add_argument("--torch_device", default="", help="auto|cpu|cuda: torch.mm's peak too")
    ap.add_argument(
        "--torch_dtypes", default="", help="default: float32 (+float16,bfloat16 on cuda)"
    )
    args = ap.parse_args()
    torch = device = None
    if args.torch_device:
        import torch

        device = torch_device(torch, args.torch_device)  # before jax takes the GPU
    accelerator = jax.default_backend() != "cpu"
    n = args.n or (8192 if accelerator or device == "cuda" else 2048)
    row = machine_row()
    if torch is not None:
        row.update(torch=torch.__version__, torch_device=device)
    emit(row)
    for name in (args.dtypes or ("float32,bfloat16" if accelerator else "float32")).split(","):
        emit(peak_row(name, n, args.iters))
    if torch is not None:
        default = "float32,float16,bfloat16" if device == "cuda" else "float32"
        for name in (args.torch_dtypes or default).split(","):
            emit(peak_row(name, n, args.iters, torch, device))


if __name__ == "__main__":
    main()
