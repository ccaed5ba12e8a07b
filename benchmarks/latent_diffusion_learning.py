"""Does the latent diffusion family learn? The reference-conditional toy's tiny recipe on a CPU.

    python benchmarks/latent_diffusion_learning.py --out=/tmp/ld_toy [--config.total_steps=N]

Runs `jaxtalk train --config=configs/latent_diffusion_toy.py:tiny` to completion (resumes
when rerun), then prints the last evaluation as one JSON row: the held-out Min-SNR-weighted
v-loss with the reference on and off (the unconditional baseline, same timesteps and noise),
the MSE against the true target of 10-step DDIM samples with the reference (`cond`), with
it and the recipe's guidance 3.5 (`guided`) and without it (`uncond`), the cond / uncond
ratios, the wall time and the machine's load average. Extra arguments go to
`jaxtalk train`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

KEYS = (
    "loss_cond",
    "loss_uncond",
    "sample_mse_cond",
    "sample_mse_guided",
    "sample_mse_uncond",
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the run's workdir")
    args, extra = parser.parse_known_args()
    cmd = [sys.executable, "-m", "jaxtalk.cli", "train",
           "--config=configs/latent_diffusion_toy.py:tiny", f"--workdir={args.out}", *extra]  # fmt: skip
    start = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - start
    rows = [json.loads(line) for line in open(os.path.join(args.out, "metrics.jsonl"))]
    last = next(r for r in reversed(rows) if "eval/loss_cond" in r)
    figures = {k: last[f"eval/{k}"] for k in KEYS}
    row = {
        "step": last.get("step"),
        **figures,
        "loss_ratio": figures["loss_cond"] / figures["loss_uncond"],
        "sample_ratio": figures["sample_mse_cond"] / figures["sample_mse_uncond"],
        "wall_s": round(wall, 1),
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
