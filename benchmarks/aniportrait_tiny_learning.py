"""Does AniPortrait's Lmk2Video learn? Both tiny stages on the synthetic set, on a CPU.

    python benchmarks/aniportrait_tiny_learning.py --out=/tmp/ap_tiny [--data=DIR]
        [--stage1_steps=N] [--stage2_steps=N]

Prepares the embedded synthetic set at 64 px (unless --data names a prepared one), runs
`jaxtalk train --config=configs/aniportrait.py:tiny_stage1` then `:tiny_stage2` on that run
(each resumes when rerun), and prints one JSON row per stage from its last evaluation on the
held-out identity: the sampled frames' PSNR against the true frames, against copying the
reference (`psnr_copy`) and with another clip's drawings (`psnr_shuffled`); for stage 2 also
the stage-1 model alone (`psnr_stage1`) and both videos' frame-to-frame `flicker`. With the
wall time and the machine's load average (figures are only comparable on an idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

STAGE1 = ("psnr", "psnr_copy", "psnr_shuffled")
STAGE2 = STAGE1 + ("psnr_stage1", "flicker", "flicker_stage1")


def run(args, variant, workdir, steps, extra=()):
    cmd = [sys.executable, "-m", "jaxtalk.cli", "train",
           f"--config=configs/aniportrait.py:{variant}", f"--workdir={workdir}",
           f"--config.data.data_dir={args.data}", f"--config.total_steps={steps}",
           f"--config.eval.every_steps={steps}", *extra]  # fmt: skip
    start = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - start


def last_eval(workdir, keys):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    last = next(r for r in reversed(rows) if f"eval/{keys[0]}" in r)
    return {"step": last.get("step"), **{k: last[f"eval/{k}"] for k in keys}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the two runs (and the data)")
    parser.add_argument("--data", default="", help="a prepared synthetic set (default: make one)")
    parser.add_argument("--stage1_steps", type=int, default=1500)
    parser.add_argument("--stage2_steps", type=int, default=300)
    args = parser.parse_args()
    if not args.data:
        args.data = os.path.join(args.out, "data")
        if not os.path.exists(os.path.join(args.data, "dataset_info.json")):
            subprocess.run([sys.executable, "-m", "jaxtalk.cli", "prepare", "synthetic",
                            f"--out_dir={args.data}", "--size=64"], check=True)  # fmt: skip
    stage1 = os.path.join(args.out, "stage1")
    wall = run(args, "tiny_stage1", stage1, args.stage1_steps)
    print(json.dumps({"stage": 1, **last_eval(stage1, STAGE1), "wall_s": round(wall, 1),
                      "loadavg": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)  # fmt: skip
    stage2 = os.path.join(args.out, "stage2")
    wall = run(args, "tiny_stage2", stage2, args.stage2_steps, [f"--config.base.workdir={stage1}"])
    print(json.dumps({"stage": 2, **last_eval(stage2, STAGE2), "wall_s": round(wall, 1),
                      "loadavg": os.getloadavg(), "cpus": os.cpu_count()}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
