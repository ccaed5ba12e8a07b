"""Clip records: the bytes stored per clip in ArrayRecord shards, and how to read them back.

Metadata is a msgpack map (no TensorFlow needed to read it). Numpy arrays are stored as
{"__nd__": [dtype, shape, bytes]}. Fields (see `ClipRecord`):
  clip_id, dataset, identity, identity_index, split     str / int
  fps, sample_rate, num_frames                           float / int / int
  audio       int16 [num_frames * sample_rate / fps] mono PCM aligned with the frames
              (empty for a video-only clip: prepared with require_audio off)
  crop_box    int32 [4] x, y, w, h in source pixels;  source_size int32 [2] (w, h)
  attributes  {name: float32 [num_frames, k]} per-frame attributes (pose, mouth, landmarks)
  extra       {str: str} dataset-specific metadata
  frames      list of JPEG bytes, one per frame (size x size RGB); only in a clip blob
  streams     list of the clip's companion stream names (data_pipelines/companions.py:
              "swapped", "styled" JPEG frames, "background_mask" 1-bit PNG), in that
              order; a clip blob holds them as {name: [bytes per frame]}

Shard formats (the shard marker's "format"; `clip_store` reads both):
  1  one record per clip: the clip blob (the map above with "frames" inline)
  2  per clip, a header record (the map without "frames", plus "format": 2) followed by
     one record per frame holding that frame's raw JPEG bytes. A training example uses
     2 to 17 frames of a clip of 75 to thousands, so reading only those is what makes
     the loaders fast (format 1 read and copied every frame of the clip per example).
  3  format 2, then num_frames records per companion stream (the header's and the
     marker entry's "streams", in that order): MegActor's driving streams and masks
The tfds builders store clip blobs: one self-contained example per clip.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import msgpack
import numpy as np
import simplejpeg
from PIL import Image

from data_pipelines import companions
from data_pipelines.companions import STREAMS

_ND = "__nd__"
FORMAT_VERSION = 3  # of the shards `shard_writer` writes (see the module doc)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {_ND: [obj.dtype.str, list(obj.shape), np.ascontiguousarray(obj).tobytes()]}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialize {type(obj)}")


def _object_hook(obj: dict) -> Any:
    if _ND in obj and len(obj) == 1:
        dtype, shape, data = obj[_ND]
        return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    return obj


def pack(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, default=_default, use_bin_type=True)


def unpack(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, object_hook=_object_hook, raw=False)


@dataclasses.dataclass
class ClipRecord:
    """One processed clip (what `process.process_clip` returns and shards store)."""

    clip_id: str
    dataset: str
    identity: str
    split: str
    fps: float
    sample_rate: int
    frames: np.ndarray  # uint8 [N, S, S, 3] (JPEG-encoded when stored)
    audio: np.ndarray  # int16 [N * sample_rate / fps]; empty: a video-only clip
    crop_box: tuple[int, int, int, int]
    source_size: tuple[int, int]
    attributes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    identity_index: int = -1
    # Companion streams (companions.STREAMS): uint8 [N, S, S, 3] videos, bool [N, S, S] masks.
    streams: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # (reason, detail) of companion files processing could not use (the shard counts them).
    notes: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def header(self) -> dict[str, Any]:
        """Everything but the frames, as stored."""
        return {
            "clip_id": self.clip_id,
            "dataset": self.dataset,
            "identity": self.identity,
            "identity_index": int(self.identity_index),
            "split": self.split,
            "fps": float(self.fps),
            "sample_rate": int(self.sample_rate),
            "num_frames": self.num_frames,
            "audio": np.asarray(self.audio, np.int16),
            "crop_box": np.asarray(self.crop_box, np.int32),
            "source_size": np.asarray(self.source_size, np.int32),
            "attributes": {k: np.asarray(v, np.float32) for k, v in self.attributes.items()},
            "extra": dict(self.extra),
            "streams": self.stream_names(),
        }

    def stream_names(self) -> list[str]:
        return [name for name in STREAMS if name in self.streams]

    def _encoded_stream(self, name: str, jpeg_quality: int) -> list[bytes]:
        if name == "background_mask":
            return [companions.encode_mask(m) for m in self.streams[name]]
        return [encode_jpeg(f, jpeg_quality) for f in self.streams[name]]

    def to_records(self, jpeg_quality: int = 95) -> list[bytes]:
        """Format 3: the header record, one record of JPEG bytes per frame, then each
        companion stream's records."""
        out = [pack({**self.header(), "format": FORMAT_VERSION})]
        out += [encode_jpeg(f, jpeg_quality) for f in self.frames]
        for name in self.stream_names():
            out += self._encoded_stream(name, jpeg_quality)
        return out

    def to_bytes(self, jpeg_quality: int = 95) -> bytes:
        """The self-contained clip blob (format 1 shards, tfds examples); read with `unpack`."""
        return pack(
            {
                **self.header(),
                "frames": [encode_jpeg(f, jpeg_quality) for f in self.frames],
                "streams": {n: self._encoded_stream(n, jpeg_quality) for n in self.stream_names()},
            }
        )


def encode_jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes, min_size: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """JPEG bytes -> uint8 [H, W, 3] (libjpeg-turbo through simplejpeg, ~2x PIL's speed).

    `min_size` > 0 lets libjpeg scale down in the DCT (by 1/2, 1/4, 1/8) while both sides
    stay >= min_size: a 512 frame wanted at 256 decodes at 256 for a quarter of the work.
    `out`: a C-contiguous uint8 [H, W, 3] to decode into when the image has exactly that
    size (saves a copy of every frame when the caller stacks them); returned if used.
    """
    if out is not None and simplejpeg.decode_jpeg_header(data)[:2] == out.shape[:2]:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
    return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_size, min_width=min_size)


def samples_per_frame(record: dict[str, Any]) -> int:
    """Audio samples per video frame (640 at 16 kHz / 25 fps); records keep this an integer."""
    return int(round(record["sample_rate"] / record["fps"]))
