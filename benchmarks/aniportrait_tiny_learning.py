"""Does AniPortrait's Lmk2Video learn? Both tiny stages on the synthetic set, on a CPU.

    python benchmarks/aniportrait_tiny_learning.py --out=/tmp/ap_tiny [--data=DIR]
        [--stage1_steps=N] [--stage2_steps=N] [extra `jaxtalk train` flags]

Prepares the embedded synthetic set at 64 px with 48 identities (unless --data names a
prepared one; `_runs.synthetic_set` says why not the default 8), runs
`jaxtalk train --config=configs/aniportrait.py:tiny_stage1` then `:tiny_stage2` on that run
(each resumes when rerun), and prints one JSON row per stage from its last evaluation on the
held-out identity: the sampled frames' PSNR against the true frames, against copying the
reference (`psnr_copy`) and with another clip's drawings (`psnr_shuffled`); for stage 2 also
the stage-1 model alone (`psnr_stage1`) and both videos' frame-to-frame `flicker`. With the
wall time and the machine's load average (figures are only comparable on an idle machine).
Stage 1 runs the config's 4500 steps; it passes copying the reference near step 3000
(README, AniPortrait).
"""

from __future__ import annotations

import argparse
import json
import os

import _runs

STAGE1 = ("psnr", "psnr_copy", "psnr_shuffled")
STAGE2 = STAGE1 + ("psnr_stage1", "flicker", "flicker_stage1")


def row(stage: int, last: dict, keys) -> str:
    figures = {k: last[f"eval/{k}"] for k in keys}
    return json.dumps({"stage": stage, "step": last.get("step"), **figures,
                       "wall_s": last["wall_s"], "loadavg": last["loadavg"],
                       "cpus": os.cpu_count()})  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the two runs (and the data)")
    parser.add_argument("--data", default="", help="a prepared synthetic set (default: make one)")
    parser.add_argument("--stage1_steps", type=int, default=4500)  # the config's
    parser.add_argument("--stage2_steps", type=int, default=300)
    args, extra = parser.parse_known_args(argv)
    data = _runs.synthetic_set(args.data or os.path.join(args.out, "data"))
    runs = {
        1: ("tiny_stage1", args.stage1_steps, STAGE1, []),
        2: ("tiny_stage2", args.stage2_steps, STAGE2,
            [f"--config.base.workdir={os.path.join(args.out, 'stage1')}"]),
    }  # fmt: skip
    for stage, (variant, steps, keys, flags) in runs.items():
        last = _runs.train(
            _runs.config_path("aniportrait", variant),
            os.path.join(args.out, f"stage{stage}"),
            f"--config.data.data_dir={data}",
            f"--config.total_steps={steps}",
            f"--config.eval.every_steps={steps}",
            *flags,
            *extra,
        )
        print(row(stage, last, keys), flush=True)


if __name__ == "__main__":
    main()
