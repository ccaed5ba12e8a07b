"""Per-example transforms: one stored clip -> one training example (numpy, unbatched).

Used by the grain loaders inside a RandomMap; `rng` comes from grain and is a pure
function of the seed and the example's position, so a resumed run draws the same frames.
`clip` is a `clip_store.Clip`: only the frames an example uses are read and decoded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from data_pipelines import companions, landmarks, records
from data_pipelines.clip_store import Clip
from jaxtalk.media import face_mesh

# Widths of the per-frame attributes the pipelines write; unknown names must be present.
ATTRIBUTE_DIMS = {
    "pose": 3,
    "mouth": 1,
    "blink": 1,
    "landmarks_xy": 10,
    **landmarks.WIDTHS,  # AniPortrait: MediaPipe-topology mesh, head pose, 2-D points
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


def landmark_indices(
    n: int, rng: np.random.Generator, num_frames: int, stride: int, stride_alt: int
) -> tuple[np.ndarray, int]:
    """AniPortrait's target frames in a clip of n: one random frame when num_frames is 1
    (stage 1); else num_frames evenly spread over (num_frames - 1) * stride + 1 frames from a
    random start, squeezed into the clip when it is shorter (repeating frames, never
    padding), with `stride_alt` (the release's 4) instead of `stride` half the time."""
    if stride_alt > 0 and rng.random() < 0.5:
        stride = stride_alt
    if num_frames == 1:
        return np.array([int(rng.integers(n))]), stride
    span = min(n, (num_frames - 1) * stride + 1)
    start = int(rng.integers(n - span + 1))
    return np.linspace(start, start + span - 1, num_frames).astype(int), stride


def pose_images(
    clip: Clip, idx: np.ndarray, size: int, dtype: str, release_canvas: bool
) -> np.ndarray:
    """The landmark drawings (jaxtalk.media.face_mesh) of frames `idx`, [len(idx), size, size,
    3] as images are (float32 in [-1, 1] as the release normalizes them, or uint8)."""
    have = clip.header.get("attributes", {})
    if "face_mesh_xy" not in have:
        raise KeyError(
            f"clip {clip.header['clip_id']} has no face_mesh_xy landmarks (prepare it with "
            "--landmarks_dir; the synthetic set carries them)"
        )
    points = np.asarray(have["face_mesh_xy"], np.float32)[idx]
    drawn = face_mesh.draw_face_meshes(points, size, release_canvas=release_canvas)
    if np.dtype(dtype) == np.uint8:
        return drawn
    return drawn.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def landmark_video(
    clip: Clip,
    rng: np.random.Generator,
    *,
    size: int,
    dtype: str,
    num_frames: int,
    stride: int,
    stride_alt: int,
    attributes: tuple[str, ...],
    release_canvas: bool = False,
) -> dict[str, Any]:
    """AniPortrait's Lmk2Video example: a reference frame anywhere in the clip and its
    landmark drawing, `num_frames` target frames (`landmark_indices`) and theirs, and the
    named per-frame attributes of the targets (`<name>`, [T, k]) and of the reference
    (`reference_<name>`, [k])."""
    idx, used_stride = landmark_indices(clip.num_frames, rng, num_frames, stride, stride_alt)
    ref = int(rng.integers(clip.num_frames))
    frames = np.empty((num_frames, size, size, 3), np.dtype(dtype))
    for t, i in enumerate(idx.tolist()):
        if t and i == idx[t - 1]:  # a short clip repeats frames: copy, do not decode again
            frames[t] = frames[t - 1]
        else:
            to_image(clip.jpeg(i), size, dtype, out=frames[t])
    drawings = pose_images(clip, np.concatenate([[ref], idx]), size, dtype, release_canvas)
    out = {
        "reference": to_image(clip.jpeg(ref), size, dtype),
        "reference_landmark_image": drawings[0],
        "reference_frame": np.int32(ref),
        "frames": frames,
        "landmark_images": drawings[1:],
        "frame_index": idx.astype(np.int32),
        "stride": np.int32(used_stride),
    }
    both = frame_attributes(clip, np.concatenate([[ref], idx]), attributes)
    for name in attributes:
        out[name], out[f"reference_{name}"] = both[name][1:], both[name][0]
        out[f"{name}_valid"] = both[f"{name}_valid"]
    return out


# ---- MegActor: raw driving video --------------------------------------------------------------

GREY = np.array([0.2989, 0.5870, 0.1140], np.float32)  # the release's color_BW_weights
DRIVING_STREAMS = ("original", "swapped", "styled")  # `driving_stream` values 0, 1, 2


def driving_indices(n: int, rng: np.random.Generator, num_frames: int, stride: int) -> list[int]:
    """The release's target frames: `num_frames` consecutive ones of the clip's frames
    0, stride, 2 * stride, ... from a random one; a clip too short for that takes stride
    n // num_frames (the release's fallback); a clip shorter than `num_frames` repeats its
    last frame (where the release drops the clip)."""
    grid = np.arange(0, n, stride)
    if len(grid) < num_frames:
        grid = np.arange(0, n, max(1, n // num_frames))
    start = int(rng.integers(max(1, len(grid) - num_frames + 1)))
    picked = grid[start : start + num_frames].tolist()
    return picked + [n - 1] * (num_frames - len(picked))


def pick_driving_stream(
    rng: np.random.Generator, have: tuple[str, ...], swap_rate: float, style_rate: float
) -> str:
    """ "swapped" with probability `swap_rate`, "styled" with `style_rate`, else "original".

    The release draws one "use a companion" coin (use_swap_rate: 0.1 in stage 1, 0.5 in
    stage 2) and then one of the clip's companions uniformly: swap_rate = style_rate =
    use_swap_rate / 2 for a clip with both. A clip without the drawn companion uses its
    other one, as the release's choice among what exists would, else its own frames."""
    u = rng.random()
    want = "swapped" if u < swap_rate else "styled" if u < swap_rate + style_rate else "original"
    if want == "original" or want in have:
        return want
    other = {"swapped": "styled", "styled": "swapped"}[want]
    return other if other in have else "original"


def warp_matrix(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random warp as the release applies it (3x3, output pixel -> input pixel).

    The release's generate_random_params also draws a rotation, a perspective and flips,
    but its apply_transforms applies only two of its parameters: an aspect-ratio change
    (0.8 .. 1.2: the image squeezed along one axis, centred, zero-padded) and then a zoom
    about the centre (0.8 .. 1.2). Both together are this affine map.
    """
    aspect, zoom = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    sx, sy = (aspect, 1.0) if aspect <= 1.0 else (1.0, 1.0 / aspect)
    c = (size - 1) / 2.0
    forward = np.array(
        [[zoom * sx, 0.0, c - zoom * sx * c], [0.0, zoom * sy, c - zoom * sy * c], [0, 0, 1]]
    )
    return np.linalg.inv(forward)


def warp(frames: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """float32 frames [T, S, S, C] resampled bilinearly through `inverse` (output (x, y, 1)
    -> input), zeros outside the input."""
    t, s = frames.shape[0], frames.shape[1]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    pts = inverse @ np.stack([xx.ravel(), yy.ravel(), np.ones(s * s)])
    x, y = pts[0] / pts[2], pts[1] / pts[2]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    out = np.zeros((t, s * s, frames.shape[3]), np.float32)
    flat = frames.reshape(t, s * s, -1)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
            inside = (xi >= 0) & (xi < s) & (yi >= 0) & (yi < s)
            k = np.clip(yi, 0, s - 1) * s + np.clip(xi, 0, s - 1)
            out += flat[:, k] * (w * inside).astype(np.float32)[None, :, None]
    return out.reshape(frames.shape)


def _mask(clip, frame: int, size: int) -> np.ndarray:
    """The clip's background mask at `frame` as float32 [size, size] (1 = background)."""
    mask = companions.decode_mask(clip.stream("background_mask", frame))
    if mask.shape[0] != size:
        img = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BOX)
        mask = np.asarray(img) > 127
    return mask.astype(np.float32)


def _as(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """float pixels in 0..255 -> the loader's image dtype and range."""
    if np.dtype(dtype) == np.uint8:
        return np.rint(pixels).clip(0, 255).astype(np.uint8)
    return (pixels * np.float32(2.0 / 255.0) - np.float32(1.0)).astype(np.float32)


def driving_video(
    clip: Clip,
    rng: np.random.Generator,
    *,
    size: int,
    dtype: str,
    num_frames: int,
    stride: int,
    swap_rate: float,
    style_rate: float,
    warp_rate: float,
    grayscale: bool,
) -> dict[str, Any]:
    """MegActor's training example (the release's face_dataset.py, see loaders' doc): a
    reference frame anywhere in the clip, its background-only copy (the CLIP input),
    `num_frames` target frames at `stride`, their driving frames from the clip's own,
    face-swapped or stylised stream (`pick_driving_stream`), warped as one with
    probability `warp_rate` (`warp_matrix`) and turned grey (the release's weights, 3
    channels) with `grayscale`, and the background masks of the targets and the reference."""
    n = clip.num_frames
    idx = driving_indices(n, rng, num_frames, stride)
    ref = int(rng.integers(n))
    stream = pick_driving_stream(rng, clip.streams, swap_rate, style_rate)
    warped = rng.random() < warp_rate
    inverse = warp_matrix(rng, size) if warped else None
    frames = np.empty((num_frames, size, size, 3), np.dtype(dtype))
    driving = np.empty((num_frames, size, size, 3), np.float32)
    for t, i in enumerate(idx):
        to_image(clip.jpeg(i), size, dtype, out=frames[t])
        data = clip.jpeg(i) if stream == "original" else clip.stream(stream, i)
        driving[t] = to_image(data, size, "uint8")
    if inverse is not None:
        driving = warp(driving, inverse)
    if grayscale:
        grey = driving[..., 0] * GREY[0] + driving[..., 1] * GREY[1] + driving[..., 2] * GREY[2]
        driving = np.repeat(grey.clip(0, 255)[..., None], 3, axis=-1)
    has_masks = "background_mask" in clip.streams
    mask_dtype = np.uint8 if np.dtype(dtype) == np.uint8 else np.float32
    if has_masks:
        masks = np.stack([_mask(clip, i, size) for i in [ref, *idx]])
    else:  # nothing known to remove: all background, the reference stays whole
        masks = np.ones((num_frames + 1, size, size), np.float32)
    reference = to_image(clip.jpeg(ref), size, "uint8").astype(np.float32)
    return {
        "reference": _as(reference, dtype),
        "reference_background": _as(reference * masks[0][..., None], dtype),
        "reference_background_mask": masks[0][..., None].astype(mask_dtype),
        "reference_frame": np.int32(ref),
        "frames": frames,
        "frame_index": np.asarray(idx, np.int32),
        "driving": _as(driving, dtype),
        "driving_stream": np.int32(DRIVING_STREAMS.index(stream)),
        "warped": np.bool_(warped),
        "background_masks": masks[1:, ..., None].astype(mask_dtype),
        "background_masks_valid": np.bool_(has_masks),
    }
