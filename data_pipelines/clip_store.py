"""Random access to the stored clips of one split: a clip's header, or single JPEG frames.

    store = ClipStore.open("data/vox2_256", "train")
    clip = store.clip(7)
    clip.num_frames, clip.identity_index      # from the shard markers: no read
    clip.jpeg(12)                             # one frame's bytes: one small record read
    clip.header["audio"]                      # metadata, audio, attributes: one read, cached

Reads shards of every format `records` documents (a directory prepared before format 2
still loads, only slower) and refuses newer ones with a clear message. The ArrayRecord
reader is opened on first use, so a store pickles cheaply into grain worker processes.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import numpy as np

from data_pipelines import info as info_lib
from data_pipelines import records


class ClipStore:
    """Clips of a split, in the order of `info.shard_records`' entries."""

    def __init__(self, paths: list[str], entries: list[dict[str, Any]]):
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
        # Format 2 stores 1 + num_frames records per clip, format 1 one: header positions are the
        # running sum over the shards' concatenation (the ArrayRecord source's global index).
        sizes = np.where(self.format >= 2, 1 + self.num_frames, 1)
        self.header_index = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.num_records = int(sizes.sum())
        self._source = None

    @classmethod
    def open(cls, data_dir: str, split: str) -> "ClipStore":
        return cls(*info_lib.shard_records(data_dir, split))

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


class Clip:
    """One clip of a `ClipStore`; reads lazily."""

    def __init__(self, store: ClipStore, i: int):
        self.store = store
        self.index = i
        self.num_frames = int(store.num_frames[i])
        self.identity_index = int(store.identity_index[i])

    @functools.cached_property
    def header(self) -> dict[str, Any]:
        """The clip's metadata map (format 1: the whole clip blob, frames included)."""
        return records.unpack(self.store.source[int(self.store.header_index[self.index])])

    def jpeg(self, frame: int) -> bytes:
        if not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame {frame} of clip {self.store.entries[self.index]['clip_id']} "
                f"({self.num_frames} frames)"
            )
        if self.store.format[self.index] == 1:
            return self.header["frames"][frame]
        return self.store.source[int(self.store.header_index[self.index]) + 1 + frame]
