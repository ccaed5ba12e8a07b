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

import _runs

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
    last = _runs.train(
        _runs.config_path("latent_diffusion_toy", "tiny"), args.out, *extra,
        eval_key="eval/loss_cond",
    )  # fmt: skip
    figures = {k: last[f"eval/{k}"] for k in KEYS}
    row = {
        "step": last.get("step"),
        **figures,
        "loss_ratio": figures["loss_cond"] / figures["loss_uncond"],
        "sample_ratio": figures["sample_mse_cond"] / figures["sample_mse_uncond"],
        "wall_s": last["wall_s"],
        "loadavg": last["loadavg"],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
