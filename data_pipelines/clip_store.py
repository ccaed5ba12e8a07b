"""Random access to the stored clips of one split: a clip's header, or single JPEG frames.

    store = ClipStore.open("data/vox2_256", "train")
    clip = store.clip(7)
    clip.num_frames, clip.identity_index      # from the shard markers: no read
    clip.jpeg(12)                             # one frame's bytes: one small record read
    clip.header["audio"]                      # metadata, audio, attributes: one read, cached

Reads shards of every format `records` documents (a directory prepared before format 2
still loads, only slower) and refuses newer ones with a clear message. The ArrayRecord
reader is opened on first use, so a store pickles cheaply into grain worker processes.

`ClipStore.open` is the one place a data directory's records are opened: it returns a
`TfdsClipStore` for a tfds build (see `tfds_builders`' module doc), which has the same
interface (`len`, `clip`, `other_identity_clips`, `size`, `num_identities`).
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import numpy as np

from data_pipelines import info as info_lib
from data_pipelines import records
from jaxtalk import optional


class ClipStore:
    """Clips of a split, in the order of `info.shard_records`' entries."""

    def __init__(
        self, paths: list[str], entries: list[dict[str, Any]], info: dict[str, Any] | None = None
    ):
        for e in entries:
            if e["format"] > records.FORMAT_VERSION:
                raise ValueError(
                    f"{e['shard']}: shard format {e['format']} is newer than this jaxtalk reads "
                    f"({records.FORMAT_VERSION}); upgrade jaxtalk or re-run `jaxtalk prepare`"
                )
        self.paths = paths
        self.entries = entries
        self.num_frames = np.array([e["num_frames"] for e in entries], np.int64)
        self.identity_index = np.array([e["identity_index"] for e in entries], np.int64)
        self.format = np.array([e["format"] for e in entries], np.int64)
        self.streams = [tuple(e.get("streams", ())) if e["format"] >= 3 else () for e in entries]
        # Format 2 stores 1 + num_frames records per clip, format 3 as many again per companion
        # stream, format 1 one: header positions are the running sum over the shards'
        # concatenation (the ArrayRecord source's global index).
        copies = 1 + np.array([len(s) for s in self.streams], np.int64)
        sizes = np.where(self.format >= 2, 1 + copies * self.num_frames, 1)
        self.header_index = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.num_records = int(sizes.sum())
        self._source = None
        self.size, self.num_identities = _size_and_identities(info)

    @classmethod
    def open(cls, data_dir: str, split: str) -> "ClipStore | TfdsClipStore":
        """The split's clips of a `jaxtalk prepare` directory or of a tfds build (local or
        remote, see `info.local_data_dir`)."""
        data_dir = info_lib.local_data_dir(data_dir)
        info = info_lib.load_info(data_dir)
        if info.get("format") == "tfds":
            info_lib.check_split(info, data_dir, split)
            return TfdsClipStore(data_dir, split, info)
        return cls(*info_lib.shard_records(data_dir, split), info)

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    @property
    def source(self) -> grain.sources.ArrayRecordDataSource:
        if self._source is None:
            self._source = grain.sources.ArrayRecordDataSource(self.paths)
            if len(self._source) != self.num_records:
                raise ValueError(
                    f"{self.paths[0]}...: the shards hold {len(self._source)} records but their markers "
                    f"describe {self.num_records}; the directory is damaged, re-run `jaxtalk prepare`"
                )
        return self._source

    def clip(self, i: int) -> "Clip":
        return Clip(self, int(i))

    def other_identity_clips(self, identity: int, count: int, rng: np.random.Generator) -> list:
        """`count` random clips of identities other than `identity` (any, if there is only one)."""
        others = np.flatnonzero(self.identity_index != identity)
        if not len(others):
            others = np.arange(len(self))  # a single identity: nothing else to contrast with
        return [self.clip(j) for j in rng.choice(others, count)]


def _size_and_identities(info: dict[str, Any] | None) -> tuple[int, int]:
    if info is None:  # a store made from bare shards (tests)
        return 0, 0
    return int(info["config"]["size"]), len(info["identities"])


class Clip:
    """One clip of a `ClipStore`; reads lazily."""

    def __init__(self, store: ClipStore, i: int):
        self.store = store
        self.index = i
        self.num_frames = int(store.num_frames[i])
        self.identity_index = int(store.identity_index[i])
        self.streams = store.streams[i]  # companion streams (data_pipelines/companions.py)

    @functools.cached_property
    def header(self) -> dict[str, Any]:
        """The clip's metadata map (format 1: the whole clip blob, frames included)."""
        return records.unpack(self.store.source[int(self.store.header_index[self.index])])

    def jpeg(self, frame: int) -> bytes:
        self._check(frame)
        if self.store.format[self.index] == 1:
            return self.header["frames"][frame]
        return self.store.source[int(self.store.header_index[self.index]) + 1 + frame]

    def stream(self, name: str, frame: int) -> bytes:
        """Frame `frame` of companion stream `name` (JPEG, or 1-bit PNG for masks)."""
        self._check(frame)
        if name not in self.streams:
            raise KeyError(
                f"clip {self.store.entries[self.index]['clip_id']} has no {name!r} stream "
                f"(has {list(self.streams)}; prepare with --companions_dir)"
            )
        k = self.streams.index(name)
        first = int(self.store.header_index[self.index]) + 1 + (k + 1) * self.num_frames
        return self.store.source[first + frame]

    def _check(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame {frame} of clip {self.store.entries[self.index]['clip_id']} "
                f"({self.num_frames} frames)"
            )


class TfdsClipStore:
    """The clips of one split of a tfds build: one clip blob per example, read whole.

    There is no per-clip index (see `tfds_builders`' module doc), so frame counts and
    identities come from each clip's blob as it is read.
    """

    NEGATIVE_TRIES = 8  # clip draws per negative before taking any identity

    def __init__(self, data_dir: str, split: str, info: dict[str, Any]):
        self.data_dir, self.split = data_dir, split
        self._len = int(info["splits"][split]["num_clips"])
        self.size, self.num_identities = _size_and_identities(info)
        self._source = None

    def __len__(self) -> int:
        return self._len

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_source": None}

    @property
    def source(self):
        if self._source is None:
            tfds = optional.tfds(f"{self.data_dir}: reading a tfds build")
            builder = tfds.builder_from_directory(self.data_dir)
            self._source = builder.as_data_source(split=self.split)
        return self._source

    def clip(self, i: int) -> "BlobClip":
        return BlobClip(int(i), records.unpack(self.source[int(i)]["record"]))

    def other_identity_clips(self, identity: int, count: int, rng: np.random.Generator) -> list:
        picks = []
        for _ in range(count):
            for _ in range(self.NEGATIVE_TRIES):
                clip = self.clip(rng.integers(len(self)))
                if clip.identity_index != identity:
                    break
            picks.append(clip)
        return picks


class BlobClip:
    """A clip read whole from a clip blob (a tfds example); `Clip`'s interface."""

    def __init__(self, i: int, blob: dict[str, Any]):
        self.index = i
        self.header = blob
        self.num_frames = int(blob["num_frames"])
        self.identity_index = int(blob["identity_index"])
        self.streams = tuple(blob.get("streams", {}))

    def jpeg(self, frame: int) -> bytes:
        if not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame {frame} of clip {self.header['clip_id']} ({self.num_frames} frames)"
            )
        return self.header["frames"][frame]

    def stream(self, name: str, frame: int) -> bytes:
        """Frame `frame` of companion stream `name` (JPEG, or 1-bit PNG for masks)."""
        self.jpeg(frame)  # the range check
        return self.header["streams"][name][frame]
