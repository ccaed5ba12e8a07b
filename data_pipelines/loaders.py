"""grain loaders over prepared datasets or mixtures of them: frame pairs, windows, reference + window.

    loader = make_loader(config.data, split="train", global_batch_size=64, seed=0,
                         process_index=jax.process_index(), process_count=jax.process_count())
    it = iter(loader)            # grain DataLoaderIterator: next(it), it.get_state(), it.set_state()
    batch = next(it)             # dict of numpy arrays, this process's share of the batch

Each process gets `global_batch_size // process_count` examples per batch from its own
disjoint slice of the records (grain ShardOptions); the order is a global shuffle by
`seed`, repeated per epoch; frame choice inside a clip is random but a pure function of
seed and position, so a restored iterator yields exactly the batches it would have.

Mixtures (`data.mixture`, see `mixture.py` for the form): grain's `MapDataset.mix`
interleaves the datasets by weight into one mixed epoch, which the same sampler then
shuffles and shards, so resume, workers and the saved state are those of one dataset.
Each dataset is shuffled (by seed + its position in the mixture) and repeated inside the
mix, reshuffled per repetition; the mixed epoch is long enough that every clip of every
dataset appears in it, so a down-weighted big dataset is not cut to a fixed subset.

Batch fields (images float32 in [-1, 1] NHWC unless `image_dtype="uint8"`):
  every kind     identity int32 [B] (index into the info file's identities, offset per
                 dataset in a mixture), index int64 [B] (clip index in the split, for
                 debugging and the disjointness test); mixtures add dataset int32 [B]
                 (the entry's position in data.mixture)
  pairs          source, driving [B,H,W,3]; source_frame, driving_frame int32 [B];
                 for each name in `pair_attributes`: <name> float32 [B,2,k] (source,
                 driving) and <name>_valid bool [B] (a one-frame clip, i.e. an image,
                 gives source = driving: mixed image/video training);
                 negatives [B,K,H,W,3] and negative_identity [B,K] (K = num_negatives,
                 frames of clips of other identities of the same dataset, for metric
                 learning: another dataset's faces would be too easy to tell apart)
  windows        frames [B,T,H,W,3]; frame_valid bool [B,T]; start_frame int32 [B];
                 audio float32 [B,(T-1)*stride*640+640+2*pad*640] (raw 16 kHz, aligned so
                 frame t covers samples [t*640+pad*640, (t+1)*640+pad*640)); for each name
                 in `attributes`: <name> float32 [B,T,k] and <name>_valid bool [B]
  reference_window   windows + reference [B,H,W,3] (another frame of the same clip)
  landmark_video     AniPortrait's Lmk2Video examples (examples.landmark_video): reference,
                 reference_landmark_image [B,H,W,3] (its face-landmark drawing, the pose
                 image), reference_frame int32 [B]; frames, landmark_images [B,T,H,W,3]
                 (T = num_frames: 1 for stage 1, 16 with
                 frame_stride 1 and frame_stride_alt 4 for stage 2), frame_index int32
                 [B,T], stride int32 [B]; for each name in `attributes`: <name> [B,T,k],
                 reference_<name> [B,k], <name>_valid [B]. Drawings come from the clips'
                 face_mesh_xy (prepare --landmarks_dir, or the synthetic set) at image_size,
                 in the images' dtype and range.
  driving_video  MegActor's examples (examples.driving_video, the release's
                 face_dataset.py): reference [B,H,W,3] (a random frame of the clip),
                 reference_background [B,H,W,3] (the reference with the person blacked
                 out: the CLIP image input), reference_background_mask [B,H,W,1] (1 =
                 background; the UNet's 13th input channel), reference_frame int32 [B];
                 frames [B,T,H,W,3] (T = num_frames consecutive frames of stride
                 frame_stride: 12 at 2 in the release), frame_index int32 [B,T]; driving
                 [B,T,H,W,3]: the same frames from the clip's own, face-swapped or stylised
                 stream (swap_rate, style_rate; prepare's companions, see companions.py),
                 warped as one with probability warp_rate, grey in all 3 channels with
                 driving_grayscale; driving_stream int32 [B] (0 own, 1 swapped, 2 styled),
                 warped bool [B]; background_masks [B,T,H,W,1] (the targets') and
                 background_masks_valid bool [B] (False: the clip has no masks, all
                 masks are 1 and reference_background is the reference). Masks are
                 float32 0/1, uint8 0/1 with image_dtype "uint8".
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np
from absl import flags

from data_pipelines import examples, mixture
from jaxtalk import heap

KINDS = ("pairs", "windows", "reference_window", "landmark_video", "driving_video")


def default_data_config() -> ml_collections.ConfigDict:
    """Defaults for `config.data`; every field documented inline."""
    c = ml_collections.ConfigDict()
    # A directory written by `jaxtalk prepare` (has dataset_info.json) or a tfds build's
    # version folder; set it to "" to train on `mixture` (it wins when set: mixture.py).
    c.data_dir = "data/synthetic"
    c.mixture = ""  # "DIR[:WEIGHT[:TRAIN_SPLIT]],...", e.g. "voxceleb2:0.7,hdtf:0.3"
    c.data_root = ""  # relative mixture entries are under it (`jaxtalk prepare --root`)
    c.kind = "pairs"  # one of KINDS
    c.image_size = 0  # output side; 0 = the records' size
    c.image_dtype = "float32"  # "float32" in [-1, 1] or "uint8" in [0, 255]
    c.samples_per_clip = 1  # examples drawn from each clip per epoch
    c.shuffle = True
    # pairs
    c.max_frame_gap = 0  # max |source - driving| in frames; 0 = anywhere in the clip
    c.num_negatives = 1  # frames from other identities per example
    # per-frame attributes of the two frames, <name> [B,2,k] (source, driving) + <name>_valid
    c.pair_attributes = ()
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
    # landmark_video (also num_frames, frame_stride, attributes)
    c.frame_stride_alt = 0  # > 0: this stride instead half the time (AniPortrait stage 2: 4)
    c.pose_release_canvas = False  # draw landmarks at 512 and resize, as the release does
    # driving_video (also num_frames, frame_stride): MegActor's driving-stream choice, as
    # probabilities; the release's stage 2 (use_swap_rate 0.5, warp_rate 0.25) is below,
    # its stage 1 is swap_rate = style_rate = 0.05, warp_rate 0
    c.swap_rate = 0.25  # the face-swapped stream
    c.style_rate = 0.25  # the stylised stream
    c.warp_rate = 0.25  # one random aspect/zoom warp of the whole driving clip
    c.driving_grayscale = True  # the release's grey driving frames (3 equal channels)
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


class MixtureSource(grain.sources.RandomAccessDataSource):
    """One mixed epoch of several datasets' examples (grain.MapDataset.mix); yields
    {dataset, index}. `sizes`: clips per dataset; `weights`: normalised shares."""

    def __init__(
        self,
        sizes: list[int],
        weights: np.ndarray,
        *,
        samples_per_clip: int,
        seed: int,
        shuffle: bool,
    ):
        self._args = (
            tuple(sizes),
            tuple(float(w) for w in weights),
            samples_per_clip,
            seed,
            shuffle,
        )
        self._mixed = None
        self._len = len(self._dataset())

    def _dataset(self) -> grain.MapDataset:
        if self._mixed is None:
            sizes, weights, repeat, seed, shuffle = self._args
            counts = [n * repeat for n in sizes]
            # Long enough for every example of every dataset at its weight.
            epoch = max(n / w for n, w in zip(counts, weights))
            parents = []
            for k, (n, w) in enumerate(zip(counts, weights)):
                ds = grain.MapDataset.range(n)
                if shuffle:
                    ds = ds.shuffle(seed=(seed + k) % 2**32)
                repeats = int(np.ceil(epoch * w / n)) + 1
                parents.append(ds.repeat(repeats).map(_Tag(k, repeat)))
            self._mixed = grain.MapDataset.mix(parents, list(weights))
        return self._mixed

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self._dataset()[int(i)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mixed": None}  # rebuilt in each worker

    def __repr__(self) -> str:
        sizes, weights, repeat, seed, shuffle = self._args
        return f"MixtureSource(sizes={sizes}, weights={weights}, x{repeat}, seed={seed}, shuffle={shuffle})"


class _Tag(grain.transforms.Map):
    """A position in dataset k's repeated examples -> {dataset: k, index: its clip}."""

    def __init__(self, k: int, samples_per_clip: int):
        self.k, self.repeat = k, samples_per_clip

    def map(self, position: int) -> dict[str, Any]:
        return {"dataset": np.int32(self.k), "index": np.int64(position // self.repeat)}


class _MakeExample(grain.transforms.RandomMap):
    """Draws one example of `kind` from a clip (plus negatives for pairs), reading only what it uses."""

    def __init__(self, cfg: ml_collections.ConfigDict, mix: mixture.Mixture, size: int):
        self.cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
        self.stores = mix.stores
        self.offsets = mix.identity_offsets
        self.size = size

    def __setstate__(self, state: dict) -> None:
        # Unpickling happens where grain sends the map: in a worker process, where a batch
        # goes to shared memory and the heap would give a batch's decoded frames back to the
        # kernel after every batch (jaxtalk/heap.py).
        self.__dict__.update(state)
        heap.keep_freed_pages(256 << 20)

    def _negatives(self, store, identity: int, offset: int, rng: np.random.Generator) -> dict:
        clips = store.other_identity_clips(identity, self.cfg["num_negatives"], rng)
        images = [
            examples.to_image(
                c.jpeg(int(rng.integers(c.num_frames))), self.size, self.cfg["image_dtype"]
            )
            for c in clips
        ]
        return {
            "negatives": np.stack(images),
            "negative_identity": np.array([c.identity_index + offset for c in clips], np.int32),
        }

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        k = int(element.get("dataset", 0))
        store, offset = self.stores[k], int(self.offsets[k])
        cfg, clip = self.cfg, store.clip(element["index"])
        kind, dtype = cfg["kind"], cfg["image_dtype"]
        out = {**element, "identity": np.int32(clip.identity_index + offset)}
        if kind == "pairs":
            out.update(
                examples.pair(
                    clip,
                    rng,
                    self.size,
                    dtype,
                    cfg["max_frame_gap"],
                    tuple(cfg.get("pair_attributes", ())),
                )
            )
            if cfg["num_negatives"] > 0:
                out.update(self._negatives(store, clip.identity_index, offset, rng))
            return out
        if kind == "driving_video":
            out.update(
                examples.driving_video(
                    clip,
                    rng,
                    size=self.size,
                    dtype=dtype,
                    num_frames=cfg["num_frames"],
                    stride=cfg["frame_stride"],
                    swap_rate=cfg.get("swap_rate", 0.0),
                    style_rate=cfg.get("style_rate", 0.0),
                    warp_rate=cfg.get("warp_rate", 0.0),
                    grayscale=cfg.get("driving_grayscale", True),
                )
            )
            return out
        if kind == "landmark_video":
            out.update(
                examples.landmark_video(
                    clip,
                    rng,
                    size=self.size,
                    dtype=dtype,
                    num_frames=cfg["num_frames"],
                    stride=cfg["frame_stride"],
                    stride_alt=cfg.get("frame_stride_alt", 0),
                    attributes=tuple(cfg["attributes"]),
                    release_canvas=cfg.get("pose_release_canvas", False),
                )
            )
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


def _source(
    mix: mixture.Mixture, samples_per_clip: int, seed: int, shuffle: bool
) -> grain.sources.RandomAccessDataSource:
    if len(mix.stores) == 1:  # exactly the single-dataset order of earlier releases
        return ClipSource(len(mix.stores[0]), samples_per_clip)
    return MixtureSource(
        [len(s) for s in mix.stores],
        mix.weights(samples_per_clip),
        samples_per_clip=samples_per_clip,
        seed=seed,
        shuffle=shuffle,
    )


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
    mix = mixture.open_mixture(cfg, split)
    shuffle = cfg.shuffle if shuffle is None else shuffle
    source = _source(mix, cfg.samples_per_clip, seed, shuffle)
    local_batch = global_batch_size // process_count
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    if len(source) // process_count < local_batch:
        names = ", ".join(e.data_dir for e in mix.entries)
        raise ValueError(
            f"{names}:{split} has {len(source)} examples, fewer than one batch of "
            f"{local_batch} per process; lower the batch size or raise data.samples_per_clip"
        )
    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard,
        num_epochs=num_epochs,
        seed=seed,
        shuffle=shuffle,
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
            _MakeExample(cfg, mix, mix.size(cfg.image_size)),
            grain.transforms.Batch(local_batch, drop_remainder=True),
        ],
        worker_count=workers,
        worker_buffer_size=cfg.worker_buffer_size,
        read_options=grain.ReadOptions(
            num_threads=cfg.read_threads, prefetch_buffer_size=max(16, 2 * local_batch)
        ),
    )
