"""Loader throughput per CPU core: frame pairs/s and windows/s at 256 and 512 (JPEG decode included).

  python benchmarks/data_loader.py --sizes=256,512 --workers=0,2 --repeats=3
Prepares a small synthetic set per size under --data_dir (reused when present), then times
each loader kind. "per core" = examples per CPU-second of every process involved (the main
process and grain's workers), which is what a core delivers even on a shared machine;
the wall-clock rate is printed too. Each configuration runs --repeats times; one JSON row
each with the best and the lowest of both rates.
"""

import dataclasses
import os
import time

import psutil
from _timing import emit
from absl import app, flags

from data_pipelines import datasets, loaders
from data_pipelines.synthetic import generate

flags.DEFINE_list("sizes", ["256", "512"], "Record sides.")
flags.DEFINE_list("workers", ["0", "2"], "grain worker process counts (0 = in-process, one core).")
flags.DEFINE_list(
    "kinds",
    ["pairs", "pairs_neg", "windows"],
    "pairs (no negatives), pairs_neg (1 negative), windows (16 frames + audio + attributes).",
)
flags.DEFINE_list("dtypes", ["uint8", "float32"], "data.image_dtype values.")
flags.DEFINE_integer("batches", 24, "Batches timed per run (well above what the workers prefetch).")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.")
flags.DEFINE_integer("repeats", 3, "Runs per configuration.")
flags.DEFINE_string(
    "data_dir", "/tmp/jaxtalk_bench_synthetic", "Prepared set (suffixed with the size)."
)
FLAGS = flags.FLAGS

KINDS = {
    "pairs": ("pairs", {"num_negatives": 0}),
    "pairs_neg": ("pairs", {"num_negatives": 1}),
    "windows": ("windows", {"num_frames": 16}),
}


@dataclasses.dataclass
class Run:
    examples: int
    wall: float
    cpu: float  # CPU seconds of this process and its children (grain workers)


def _cpu_seconds() -> float:
    me = psutil.Process()
    procs = [me] + me.children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def prepare(size: int) -> str:
    data_dir = f"{FLAGS.data_dir}_{size}"
    if not os.path.exists(os.path.join(data_dir, "dataset_info.json")):
        datasets.prepare_dataset(
            "synthetic",
            None,
            data_dir,
            size=size,
            log=lambda *_: None,
            synthetic=generate.SyntheticConfig(num_identities=4, resolution=max(256, size)),
        )
    return data_dir


def time_loader(data_dir: str, kind: str, dtype: str, workers: int) -> Run:
    name, extra = KINDS[kind]
    cfg = loaders.default_data_config()
    cfg.update(
        {
            "data_dir": data_dir,
            "kind": name,
            "samples_per_clip": 256,
            "image_dtype": dtype,
            "worker_count": workers,
            **extra,
        }
    )
    it = iter(loaders.make_loader(cfg, split="train", global_batch_size=FLAGS.batch_size, seed=0))
    for _ in range(max(2, 2 * workers)):  # start-up: worker launch, first reads
        next(it)
    batches = FLAGS.batches
    # Children's CPU is read while they live; the loader is stopped after the second reading.
    c0, t0 = _cpu_seconds(), time.perf_counter()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    del it
    return Run(batches * FLAGS.batch_size, wall, cpu)


def main(_):
    emit({"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]})
    for size in map(int, FLAGS.sizes):
        data_dir = prepare(size)
        for kind in FLAGS.kinds:
            for dtype in FLAGS.dtypes:
                for workers in map(int, FLAGS.workers):
                    runs = [
                        time_loader(data_dir, kind, dtype, workers) for _ in range(FLAGS.repeats)
                    ]
                    per_core = sorted(r.examples / r.cpu for r in runs)
                    wall = sorted(r.examples / r.wall for r in runs)
                    emit({"run": "loader", "size": size, "kind": kind, "dtype": dtype,
                          "workers": workers, "examples_per_s_per_core": round(per_core[-1]),
                          "per_core_min": round(per_core[0]), "examples_per_s": round(wall[-1]),
                          "wall_min": round(wall[0]), "repeats": FLAGS.repeats})  # fmt: skip


if __name__ == "__main__":
    app.run(main)
