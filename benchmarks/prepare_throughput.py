"""Preparation throughput: clip-seconds processed per core-second (ffmpeg decode, crop,
resize, filters, JPEG encode, shard writing), on the synthetic set at 256 and 512.

  python benchmarks/prepare_throughput.py --sizes=256,512 --repeats=3
The raw synthetic videos are generated once (not timed); each run prepares them into a
fresh directory with num_workers=0. CPU time counts this process and the ffmpeg
subprocesses it waits for, so the figure is per core even on a shared machine.
"""

import os
import shutil
import tempfile
import time

from absl import app, flags

from data_pipelines import datasets
from data_pipelines.synthetic import generate

flags.DEFINE_list("sizes", ["256", "512"], "Output sides.")
flags.DEFINE_integer("repeats", 3, "Runs per size.")
flags.DEFINE_string(
    "raw_dir", "/tmp/jaxtalk_bench_raw", "Generated raw set (suffixed with the resolution)."
)
FLAGS = flags.FLAGS

SYNTHETIC = dict(
    num_identities=4, videos_per_identity=2, utterances_per_video=2, utterance_seconds=3.0
)


def _cpu() -> float:
    t = os.times()  # children_*: the ffmpeg processes, counted once waited for
    return t.user + t.system + t.children_user + t.children_system


def main(_):
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for size in map(int, FLAGS.sizes):
        raw = f"{FLAGS.raw_dir}_{max(256, size)}"
        generate.generate(
            raw,
            generate.SyntheticConfig(resolution=max(256, size), **SYNTHETIC),
            log=lambda *_: None,
        )
        per_core, wall = [], []
        for _ in range(FLAGS.repeats):
            out = tempfile.mkdtemp(prefix=f"jaxtalk_prep{size}_")
            c0, t0 = _cpu(), time.perf_counter()
            info = datasets.prepare_dataset("synthetic", raw, out, size=size, log=lambda *_: None)
            cpu, seconds = _cpu() - c0, time.perf_counter() - t0
            clip_seconds = info["hours"] * 3600
            per_core.append(clip_seconds / cpu)
            wall.append(clip_seconds / seconds)
            shutil.rmtree(out)
        print(
            f"{size}: {clip_seconds:.0f} clip-s of {max(256, size)}px source per run; clip-s per core-s "
            f"best {max(per_core):.2f} ({min(per_core):.2f}..{max(per_core):.2f}); per wall-s best {max(wall):.2f} "
            f"({min(wall):.2f}..{max(wall):.2f})",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
