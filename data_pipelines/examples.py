"""Per-example transforms: one stored clip -> one training example (numpy, unbatched).

Used by the grain loaders inside a RandomMap; `rng` comes from grain and is a pure
function of the seed and the example's position, so a resumed run draws the same frames.
`clip` is a `clip_store.Clip`: only the frames an example uses are read and decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from data_pipelines import records
from data_pipelines.clip_store import Clip

# Widths of the per-frame attributes the pipelines write; unknown names must be present.
ATTRIBUTE_DIMS = {
    "pose": 3,
    "mouth": 1,
    "blink": 1,
    "landmarks_xy": 10,
    # AniPortrait: MediaPipe-topology mesh (head units), pose, projected landmarks (0..1)
    "face_mesh": 468 * 3,
    "head_pose": 6,
    "face_mesh_xy": 478 * 2,
}


def to_image(jpeg: bytes, size: int, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """JPEG -> [size, size, 3] as float32 in [-1, 1] or uint8 (uint8 skips all float work).

    Written into `out` (a [size, size, 3] array of `dtype`, e.g. one frame of a window) when
    given, so frames are not decoded into temporaries and then copied.
    """
    if out is None:
        out = np.empty((size, size, 3), np.dtype(dtype))
    img = records.decode_jpeg(jpeg, min_size=size, out=out if out.dtype == np.uint8 else None)
    if img.shape[0] != size or img.shape[1] != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    if out.dtype == np.uint8:
        if not np.shares_memory(img, out):
            out[...] = img
    else:
        np.multiply(img, np.float32(2.0 / 255.0), out=out, dtype=np.float32)
        out -= 1.0
    return out


def pair(
    clip: Clip,
    rng: np.random.Generator,
    size: int,
    dtype: str,
    max_gap: int,
    attributes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Source and driving frame from one clip (at most `max_gap` frames apart; 0 = anywhere),
    with each named per-frame attribute as `<name>` [2, k] (source, driving) and
    `<name>_valid`. A one-frame clip (a still image) gives source = driving."""
    n = clip.num_frames
    s = int(rng.integers(n))
    if max_gap > 0:
        d = int(rng.integers(max(0, s - max_gap), min(n, s + max_gap + 1)))
    else:
        d = int(rng.integers(n))
    return {
        "source": to_image(clip.jpeg(s), size, dtype),
        "driving": to_image(clip.jpeg(d), size, dtype),
        "source_frame": np.int32(s),
        "driving_frame": np.int32(d),
        **frame_attributes(clip, np.array([s, d]), attributes),
    }


def frame_attributes(clip: Clip, idx: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """`<name>` float32 [len(idx), k] at frames `idx` and `<name>_valid`; an attribute the
    clip lacks is zeros with valid False when its width is known, else a KeyError."""
    have = clip.header.get("attributes", {}) if names else {}
    out = {}
    for name in names:
        if name in have:
            values = np.asarray(have[name], np.float32)[idx]
            out[name], out[name + "_valid"] = values, np.bool_(True)
        elif name in ATTRIBUTE_DIMS:
            out[name], out[name + "_valid"] = (
                np.zeros((len(idx), ATTRIBUTE_DIMS[name]), np.float32),
                np.bool_(False),
            )
        else:
            raise KeyError(
                f"clip {clip.header['clip_id']} has no attribute {name!r} (has {sorted(have)})"
            )
    return out


def window(
    clip: Clip,
    rng: np.random.Generator,
    *,
    size: int,
    dtype: str,
    num_frames: int,
    stride: int,
    audio: str,
    audio_pad_frames: int,
    attributes: tuple[str, ...],
) -> dict[str, Any]:
    """T frames (every `stride`-th), the audio under them and their per-frame attributes.

    Clips shorter than the window are padded by repeating the last frame (`valid` marks the
    real frames). Audio: samples [start * spf - pad, (end) * spf + pad) with pad =
    `audio_pad_frames` frames of context on each side, zero outside the clip.
    """
    n = clip.num_frames
    span = (num_frames - 1) * stride + 1
    start = int(rng.integers(max(1, n - span + 1)))
    idx = start + np.arange(num_frames) * stride
    valid = idx < n
    idx = np.minimum(idx, n - 1)
    frames = np.empty((num_frames, size, size, 3), np.dtype(dtype))
    for t, i in enumerate(idx.tolist()):
        if t and i == idx[t - 1]:  # padding repeats the last frame: copy, do not decode again
            frames[t] = frames[t - 1]
        else:
            to_image(clip.jpeg(i), size, dtype, out=frames[t])
    out = {"frames": frames, "frame_valid": valid, "start_frame": np.int32(start)}
    if audio == "raw":
        spf = records.samples_per_frame(clip.header)
        pcm = clip.header["audio"]
        if not len(pcm):
            raise ValueError(
                f"clip {clip.header.get('clip_id')!r} has no audio (a video-only dataset): "
                "its tasks read frames only (data audio 'none')"
            )
        pad = audio_pad_frames * spf
        a = start * spf - pad
        length = span * spf + 2 * pad
        buf = np.zeros(length, np.float32)
        lo, hi = max(a, 0), min(a + length, len(pcm))
        if hi > lo:  # only the samples under the window are converted
            buf[lo - a : hi - a] = pcm[lo:hi].astype(np.float32) / np.float32(32767.0)
        out["audio"] = buf
    elif audio != "none":
        raise ValueError(f"unknown audio mode {audio!r} (use 'raw' or 'none')")
    out.update(frame_attributes(clip, idx, attributes))
    return out
