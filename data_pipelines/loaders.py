"""grain loaders over prepared ArrayRecord shards: frame pairs, windows, reference + window.

    loader = make_loader(config.data, split="train", global_batch_size=64, seed=0,
                         process_index=jax.process_index(), process_count=jax.process_count())
    it = iter(loader)            # grain DataLoaderIterator: next(it), it.get_state(), it.set_state()
    batch = next(it)             # dict of numpy arrays, this process's share of the batch

Each process gets `global_batch_size // process_count` examples per batch from its own
disjoint slice of the records (grain ShardOptions); the order is a global shuffle by
`seed`, repeated per epoch; frame choice inside a clip is random but a pure function of
seed and position, so a restored iterator yields exactly the batches it would have.

Batch fields (images float32 in [-1, 1] NHWC unless `image_dtype="uint8"`):
  every kind     identity int32 [B] (index into the info file's identities), index int64 [B]
                 (clip index in the split, for debugging and the disjointness test)
  pairs          source, driving [B,H,W,3]; source_frame, driving_frame int32 [B];
                 negatives [B,K,H,W,3] and negative_identity [B,K] (K = num_negatives,
                 frames of clips of other identities, for metric learning)
  windows        frames [B,T,H,W,3]; frame_valid bool [B,T]; start_frame int32 [B];
                 audio float32 [B,(T-1)*stride*640+640+2*pad*640] (raw 16 kHz, aligned so
                 frame t covers samples [t*640+pad*640, (t+1)*640+pad*640)); for each name
                 in `attributes`: <name> float32 [B,T,k] and <name>_valid bool [B]
  reference_window   windows + reference [B,H,W,3] (another frame of the same clip)
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from data_pipelines import clip_store, examples
from data_pipelines import info as info_lib

KINDS = ("pairs", "windows", "reference_window")


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults for `config.data`; every field documented inline."""
    c = ml_collections.ConfigDict()
    c.data_dir = (
        "data/synthetic"  # a directory written by `jaxtalk prepare` (has dataset_info.json)
    )
    c.kind = "pairs"  # one of KINDS
    c.image_size = 0  # output side; 0 = the records' size
    c.image_dtype = "float32"  # "float32" in [-1, 1] or "uint8" in [0, 255]
    c.samples_per_clip = 1  # examples drawn from each clip per epoch
    c.shuffle = True
    # pairs
    c.max_frame_gap = 0  # max |source - driving| in frames; 0 = anywhere in the clip
    c.num_negatives = 1  # frames from other identities per example
    # windows / reference_window
    c.num_frames = 16  # T
    c.frame_stride = 1
    c.audio = "raw"  # "raw" (16 kHz float32 samples) or "none"
    c.audio_pad_frames = 0  # extra frames of audio context on each side (zeros past the clip)
    c.attributes = (
        "pose",
        "mouth",
        "blink",
    )  # per-frame attributes; absent ones are zeros + _valid False
    # grain
    c.worker_count = 0  # worker processes; 0 = in the main process (tests)
    c.worker_buffer_size = 2  # batches prefetched per worker
    # Threads running the (I/O-free) ClipSource lookups in each process: 0 = inline. Reads and
    # JPEG decodes happen in the map, which worker processes parallelise; threads would only
    # contend for the GIL.
    c.read_threads = 0
    return c


class ClipSource(grain.sources.RandomAccessDataSource):
    """Clip indices of one split, each seen `samples_per_clip` times per epoch; yields {index}.

    No I/O here: `_MakeExample` reads only the frames it draws (see `clip_store`).
    """

    def __init__(self, num_clips: int, samples_per_clip: int = 1):
        self._num_clips = num_clips
        self._repeat = samples_per_clip

    def __len__(self) -> int:
        return self._num_clips * self._repeat

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": np.int64(i // self._repeat)}

    def __repr__(self) -> str:  # grain logs and checks sources by repr
        return f"ClipSource({self._num_clips} clips, x{self._repeat})"


class _MakeExample(grain.transforms.RandomMap):
    """Draws one example of `kind` from a clip (plus negatives for pairs), reading only what it uses."""

    def __init__(self, cfg: ml_collections.ConfigDict, store: clip_store.ClipStore, size: int):
        self.cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        self.store = store
        self.size = size

    def _negatives(self, identity: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        identities = self.store.identity_index
        others = np.flatnonzero(identities != identity)
        if not len(others):
            others = np.arange(len(identities))  # a single identity: nothing else to contrast with
        picks = rng.choice(others, self.cfg["num_negatives"])
        images = []
        for j in picks:
            clip = self.store.clip(j)
            images.append(
                examples.to_image(
                    clip.jpeg(int(rng.integers(clip.num_frames))),
                    self.size,
                    self.cfg["image_dtype"],
                )
            )
        return {
            "negatives": np.stack(images),
            "negative_identity": identities[picks].astype(np.int32),
        }

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        cfg, clip = self.cfg, self.store.clip(element["index"])
        kind, dtype = cfg["kind"], cfg["image_dtype"]
        out = {"index": element["index"], "identity": np.int32(clip.identity_index)}
        if kind == "pairs":
            out.update(examples.pair(clip, rng, self.size, dtype, cfg["max_frame_gap"]))
            if cfg["num_negatives"] > 0:
                out.update(self._negatives(clip.identity_index, rng))
            return out
        out.update(
            examples.window(
                clip,
                rng,
                size=self.size,
                dtype=dtype,
                num_frames=cfg["num_frames"],
                stride=cfg["frame_stride"],
                audio=cfg["audio"],
                audio_pad_frames=cfg["audio_pad_frames"],
                attributes=tuple(cfg["attributes"]),
            )
        )
        if kind == "reference_window":
            ref = int(rng.integers(clip.num_frames))
            out["reference"] = examples.to_image(clip.jpeg(ref), self.size, dtype)
            out["reference_frame"] = np.int32(ref)
        return out


def make_loader(
    data_config: ml_collections.ConfigDict,
    *,
    split: str,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_epochs: int | None = None,
    worker_count: int | None = None,
    shuffle: bool | None = None,
) -> grain.DataLoader:
    """A grain DataLoader yielding this process's share of each global batch (see module doc)."""
    cfg = data_config
    if cfg.kind not in KINDS:
        raise ValueError(f"data.kind must be one of {KINDS}, got {cfg.kind!r}")
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} not divisible by process_count {process_count}"
        )
    store = clip_store.ClipStore.open(cfg.data_dir, split)
    if not len(store):
        raise ValueError(f"{cfg.data_dir}: split {split!r} has no records")
    info = info_lib.load_info(cfg.data_dir)
    size = cfg.image_size or int(info["config"]["size"])
    source = ClipSource(len(store), cfg.samples_per_clip)
    local_batch = global_batch_size // process_count
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    if len(source) // process_count < local_batch:
        raise ValueError(
            f"{cfg.data_dir}:{split} has {len(source)} examples, fewer than one batch of "
            f"{local_batch} per process; lower the batch size or raise data.samples_per_clip"
        )
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard,
        num_epochs=num_epochs,
        seed=seed,
        shuffle=cfg.shuffle if shuffle is None else shuffle,
    )
    workers = cfg.worker_count if worker_count is None else worker_count
    if workers and not flags.FLAGS.is_parsed():
        # grain's worker processes read absl flags; outside absl.app.run (notebooks, pytest) the
        # defaults are what we want.
        flags.FLAGS.mark_as_parsed()
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[
            _MakeExample(cfg, store, size),
            grain.transforms.Batch(local_batch, drop_remainder=True),
        ],
        worker_count=workers,
        worker_buffer_size=cfg.worker_buffer_size,
        read_options=grain.ReadOptions(
            num_threads=cfg.read_threads, prefetch_buffer_size=max(16, 2 * local_batch)
        ),
    )
