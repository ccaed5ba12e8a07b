"""What the learning benchmarks share: a `jaxtalk train` run in its own process, its last
evaluation, and the embedded synthetic set they train on. Imported by the scripts beside it
(`python benchmarks/<name>.py` puts this folder on the path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_path(recipe: str, variant: str) -> str:
    """configs/<recipe>.py:<variant>, absolute (the scripts may run from anywhere)."""
    return os.path.join(ROOT, "configs", f"{recipe}.py") + f":{variant}"


def synthetic_set(data_dir: str, size: int = 64, identities: int = 48, held_out: int = 4) -> str:
    """`data_dir`, prepared as the embedded synthetic set at `size` px unless it holds one:
    `identities` identities of one video each, `held_out` of them for the test split. (The
    default 8 are too few for the reference-conditioned diffusion models: with 7 to train on
    they learn the identities instead of reading the reference, and render a held-out one
    in their colours.)"""
    if not os.path.exists(os.path.join(data_dir, "dataset_info.json")):
        subprocess.run([sys.executable, "-m", "jaxtalk.cli", "prepare", "synthetic",
                        f"--out_dir={data_dir}", f"--size={size}",
                        f"--num_identities={identities}", "--videos_per_identity=1",
                        f"--test_identities={held_out}"], check=True)  # fmt: skip
    return data_dir


def train(config: str, workdir: str, *extra: str, eval_key: str = "eval/psnr") -> dict:
    """Runs (or resumes) `jaxtalk train` and returns the metrics row of its last evaluation
    (the first with `eval_key`, from the end), with the run's wall time and the machine's
    load average after it: learning figures are comparable across machines, the wall time
    only on an idle one."""
    cmd = [sys.executable, "-m", "jaxtalk.cli", "train", f"--config={config}",
           f"--workdir={workdir}", "--config.log.progress_bar=False", *extra]  # fmt: skip
    print("+ " + " ".join(cmd[2:]), flush=True)
    # The wall time includes compiling, as a first run's does: no programs from an earlier
    # run's compilation cache (jaxtalk/compile_cache.py) unless JAXTALK_XLA_CACHE says so.
    env = {**os.environ, "JAXTALK_XLA_CACHE": os.environ.get("JAXTALK_XLA_CACHE", "off")}
    start = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - start
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    last = next(r for r in reversed(rows) if eval_key in r)
    return {**last, "wall_s": round(wall, 1), "loadavg": os.getloadavg()}
