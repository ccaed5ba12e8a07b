"""Clip records: the bytes stored per clip in ArrayRecord shards, and how to read them back.

A record is a msgpack map (no TensorFlow needed to read it). Numpy arrays are stored as
{"__nd__": [dtype, shape, bytes]}. Fields (see `ClipRecord`):
  clip_id, dataset, identity, identity_index, split     str / int
  fps, sample_rate, num_frames                           float / int / int
  frames      list of JPEG bytes, one per frame (size x size RGB)
  audio       int16 [num_frames * sample_rate / fps] mono PCM aligned with the frames
  crop_box    int32 [4] x, y, w, h in source pixels;  source_size int32 [2] (w, h)
  attributes  {name: float32 [num_frames, k]} per-frame attributes (pose, mouth, landmarks)
  extra       {str: str} dataset-specific metadata
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import msgpack
import numpy as np
from PIL import Image

_ND = "__nd__"


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
  frames: np.ndarray  # uint8 [N, S, S, 3] (encoded to JPEG by `to_bytes`)
  audio: np.ndarray  # int16 [N * sample_rate / fps]
  crop_box: tuple[int, int, int, int]
  source_size: tuple[int, int]
  attributes: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  extra: dict[str, str] = dataclasses.field(default_factory=dict)
  identity_index: int = -1

  @property
  def num_frames(self) -> int:
    return len(self.frames)

  def to_bytes(self, jpeg_quality: int = 95) -> bytes:
    return pack({
        "clip_id": self.clip_id, "dataset": self.dataset, "identity": self.identity,
        "identity_index": int(self.identity_index), "split": self.split, "fps": float(self.fps),
        "sample_rate": int(self.sample_rate), "num_frames": self.num_frames,
        "frames": [encode_jpeg(f, jpeg_quality) for f in self.frames],
        "audio": np.asarray(self.audio, np.int16),
        "crop_box": np.asarray(self.crop_box, np.int32), "source_size": np.asarray(self.source_size, np.int32),
        "attributes": {k: np.asarray(v, np.float32) for k, v in self.attributes.items()},
        "extra": dict(self.extra),
    })


def encode_jpeg(frame: np.ndarray, quality: int = 95) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
  """JPEG bytes -> uint8 [H, W, 3]."""
  with Image.open(io.BytesIO(data)) as im:
    im.draft("RGB", im.size)  # no DCT scaling: full size, but skips colour conversions
    return np.asarray(im.convert("RGB"))


def samples_per_frame(record: dict[str, Any]) -> int:
  """Audio samples per video frame (640 at 16 kHz / 25 fps); records keep this an integer."""
  return int(round(record["sample_rate"] / record["fps"]))
