"""Loader throughput on the synthetic set: frame pairs/s and windows/s in one process (one core).

  python benchmarks/data_loader.py --size=256 --batches=20
Prepares a small synthetic set at --size under --data_dir (reused when present), then
times the in-process loader (worker_count=0, so the figure is per CPU core; JPEG decode
included).
"""

import os
import time

from absl import app, flags

from data_pipelines import datasets, loaders
from data_pipelines.synthetic import generate

flags.DEFINE_integer("size", 256, "Record side.")
flags.DEFINE_integer("batches", 20, "Batches timed per kind.")
flags.DEFINE_integer("batch_size", 32, "Examples per batch.")
flags.DEFINE_string("data_dir", "/tmp/jaxtalk_bench_synthetic", "Prepared set (suffixed with the size).")
FLAGS = flags.FLAGS


def main(_):
  data_dir = f"{FLAGS.data_dir}_{FLAGS.size}"
  if not os.path.exists(os.path.join(data_dir, "dataset_info.json")):
    t0 = time.time()
    info = datasets.prepare_dataset("synthetic", None, data_dir, size=FLAGS.size, log=lambda *_: None,
                                    synthetic=generate.SyntheticConfig(num_identities=4, resolution=max(256, FLAGS.size)))
    seconds = info["hours"] * 3600
    print(f"prepared {info['num_clips']} clips ({seconds:.0f} clip-s) in {time.time() - t0:.1f}s "
          f"(incl. generation): {seconds / (time.time() - t0):.2f} clip-s per s")
  for kind, extra in (("pairs", {"num_negatives": 0}), ("pairs", {"num_negatives": 1}),
                      ("windows", {"num_frames": 16})):
    cfg = loaders.default_data_config()
    cfg.update({"data_dir": data_dir, "kind": kind, "samples_per_clip": 64, **extra})
    it = iter(loaders.make_loader(cfg, split="train", global_batch_size=FLAGS.batch_size, seed=0))
    next(it)
    t0 = time.time()
    for _ in range(FLAGS.batches):
      next(it)
    rate = FLAGS.batches * FLAGS.batch_size / (time.time() - t0)
    print(f"{kind} {extra}: {rate:.0f} examples/s per core at {FLAGS.size}x{FLAGS.size}")


if __name__ == "__main__":
  app.run(main)
