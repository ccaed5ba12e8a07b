"""MegActor's companion files: synthetic driving streams and background masks per source video.

MegActor trains on driving streams that show the target clip's motion with another
appearance (a face-swapped copy and a stylised copy) and masks the background with a
human parser. Those come from external tools; their outputs enter `jaxtalk prepare
DATASET ... --companions_dir=DIR` (any dataset) as one file set per source video, named by
the video file's name without its extension (`<stem>`):

  <stem>.swapped.mp4   the video with another person's face swapped in (a face swapper)
  <stem>.styled.mp4    the video restyled frame by frame (an image-to-image model)
  <stem>.masks.npz     background_mask: bool or uint8 [N, H, W], nonzero where the
                       background shows (not the person: face, hair, body), row i = the
                       video's frame i (a human parser); fps: optional scalar, the rate the
                       rows follow (default: the video's)

Each file is optional. The videos must have the source video's frame size and frame count
(one frame of slack for container rounding; the frame rate comes from the source) and
are cut, cropped and resized with the clip exactly as its frames are; the masks are
sampled at the clip's frames, cropped and resized (area, then > 0.5). A file that is
unreadable or does not match its video is skipped with a reason naming it, counted in the
parse report; its clips keep the other companions. Clips with no usable companion train
with their own frames as the driving stream; `dataset_info.json` counts the clips per
stream ("companions") and what processing could not use ("companion_notes").

Stored per clip (records format 3): after the frames, `num_frames` records per stream, in
the order of `STREAMS`: JPEG for the videos, 1-bit PNG for the masks (a few hundred bytes
at 512 px).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import zipfile

import ffmpeg
import numpy as np
from PIL import Image

from data_pipelines.clip_spec import ClipSpec, SkipReport
from jaxtalk.errors import InputError, one_line
from jaxtalk.media.ffmpeg_run import MediaError

STREAMS = ("swapped", "styled", "background_mask")  # stored in this order
VIDEO_STREAMS = ("swapped", "styled")
SUFFIXES = {"swapped": ".swapped.mp4", "styled": ".styled.mp4", "background_mask": ".masks.npz"}
MASK_KEY = "background_mask"
BAD = "bad companion file"
NONE = "no companions"
SLACK = 1  # frames a companion video may differ from its source by
PROBE_THREADS = 8


class BadCompanion(ValueError):
    """A companion file that cannot be used; the message says why."""


def files_for(companions_dir: str, video_path: str) -> dict[str, str]:
    stem = os.path.join(companions_dir, os.path.splitext(os.path.basename(video_path))[0])
    return {name: stem + suffix for name, suffix in SUFFIXES.items()}


def write_masks(path: str, masks: np.ndarray, fps: float) -> None:
    """A masks file in this format (atomically)."""
    with open(path + ".tmp", "wb") as f:
        np.savez_compressed(f, background_mask=np.asarray(masks, bool), fps=np.float32(fps))
    os.replace(path + ".tmp", path)


def _mask_header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the masks array, read from the .npy header (no decompression)."""
    try:
        with zipfile.ZipFile(path) as z, z.open(MASK_KEY + ".npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read(f)
    except KeyError:
        raise BadCompanion(f"has no {MASK_KEY}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise BadCompanion(f"not a numpy .npz ({one_line(e, 80)})") from None
    return shape, dtype


def check_file(name: str, path: str, source) -> None:
    """`path` (stream `name`) fits its source video (`probe` info); `BadCompanion` if not."""
    from jaxtalk.media.probe import probe  # pylint: disable=import-outside-toplevel

    want = int(round((source.duration or 0) * (source.fps or 25.0)))
    if name == MASK_KEY:
        shape, dtype = _mask_header(path)
        if len(shape) != 3 or dtype.kind not in "bui":
            raise BadCompanion(f"{MASK_KEY} is {dtype} {shape}, want bool/uint8 [N, H, W]")
        n, size = shape[0], (shape[2], shape[1])
    else:
        try:
            info = probe(path)
        except MediaError as e:
            raise BadCompanion(f"unreadable ({one_line(e, 80)})") from None
        if not info.has_video:
            raise BadCompanion("has no video stream")
        n = int(round((info.duration or 0) * (source.fps or 25.0)))
        size = (info.width, info.height)
    if size != (source.width, source.height):
        raise BadCompanion(f"is {size[0]}x{size[1]}, its video {source.width}x{source.height}")
    if abs(n - want) > SLACK:
        raise BadCompanion(f"has {n} frames, its video {want}")


def _usable(video_path: str, companions_dir: str) -> tuple[list, list]:
    """One video's usable companion files [(name, path)] and the faults [(path, why)]."""
    from jaxtalk.media.probe import probe  # pylint: disable=import-outside-toplevel

    present = {k: p for k, p in files_for(companions_dir, video_path).items() if os.path.exists(p)}
    if not present:
        return [], []
    try:
        source = probe(video_path)
    except MediaError:
        return [], []  # processing rejects its clips ("unreadable video")
    found, faults = [], []
    for name, path in present.items():
        try:
            check_file(name, path, source)
            found.append((name, path))
        except BadCompanion as e:
            faults.append((path, str(e)))
    return found, faults


def attach(specs: list[ClipSpec], companions_dir: str, report: SkipReport) -> list[ClipSpec]:
    """Each clip with its video's usable companion files; bad files are noted in `report`
    (reason `BAD`, naming the file and the fault) and left out, and a clip without any is
    noted as `NONE`: it is kept, training on its own frames. The checks (ffmpeg probes,
    mostly its start-up) run on threads."""
    if not os.path.isdir(companions_dir):
        raise InputError(f"--companions_dir {companions_dir!r} is not a directory")
    videos = sorted({s.video_path for s in specs})
    with concurrent.futures.ThreadPoolExecutor(PROBE_THREADS) as pool:
        checked = dict(zip(videos, pool.map(lambda v: _usable(v, companions_dir), videos)))
    for video in videos:
        for path, why in checked[video][1]:
            report.note(BAD, f"{path}: {why}")
    out = []
    for spec in specs:
        found = tuple(checked[spec.video_path][0])
        if not found:
            report.note(NONE, spec.clip_id)
        out.append(dataclasses.replace(spec, companions=found))
    return out


def _read_videos(paths: list[str], n: int, *, fps, start, box, size) -> np.ndarray:
    """The clip's range of each companion video, cropped and resized as its frames are,
    uint8 [len(paths), n, S, S, 3]: one ffmpeg run for all (side by side), no probing (the
    sizes were checked when attaching), since ffmpeg's start-up is most of the cost."""
    from jaxtalk.media import ffmpeg_run  # pylint: disable=import-outside-toplevel

    x, y, w, h = (int(v) for v in box)
    parts = [
        ffmpeg_run.input_range(p, start, n / fps)
        .video.filter("fps", fps=fps, round="near")
        .crop(x, y, w, h)
        .filter("scale", size, size, flags="area")
        for p in paths
    ]
    joined = parts[0] if len(parts) == 1 else ffmpeg.filter(parts, "hstack", inputs=len(parts))
    out = joined.output("pipe:", format="rawvideo", pix_fmt="rgb24", **{"frames:v": n})
    try:
        raw = ffmpeg_run.run(out, paths[0], "decode companion videos")
    except MediaError as e:
        raise BadCompanion(f"unreadable ({one_line(e, 80)})") from None
    wide = size * len(paths) * size * 3
    got = len(raw) // wide
    if got < n - SLACK or not got:
        raise BadCompanion(f"has {got} of the clip's {n} frames")
    frames = np.frombuffer(raw[: got * wide], np.uint8).reshape(got, size, len(paths), size, 3)
    if got < n:  # container rounding: repeat the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], n - got, 0)])
    return frames.transpose(2, 0, 1, 3, 4)


def _read_masks(path, n, *, fps, start, box, size, source_fps) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            rate = float(data["fps"]) if "fps" in data.files else float(source_fps)
            idx = np.round((start + np.arange(n) / fps) * rate).astype(int)
            masks = data[MASK_KEY]
            if idx[-1] > len(masks):
                raise BadCompanion(f"has {len(masks)} rows, the clip needs row {idx[-1]}")
            masks = masks[np.clip(idx, 0, len(masks) - 1)]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise BadCompanion(f"unreadable ({one_line(e, 80)})") from None
    x, y, w, h = (int(v) for v in box)
    out = np.empty((n, size, size), bool)
    for i, m in enumerate(masks):
        crop = Image.fromarray(np.where(m[y : y + h, x : x + w] != 0, 255, 0).astype(np.uint8))
        out[i] = np.asarray(crop.resize((size, size), Image.BOX)) > 127
    return out


def read_streams(
    spec: ClipSpec, frames: np.ndarray, *, fps: float, start: float, box, source_fps: float
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """The clip's companion streams cut like its `frames` (uint8 [N, S, S, 3]; masks bool
    [N, S, S]) and, for each file that failed, (reason, "<file>: <fault>")."""
    streams, notes = {}, []
    n, size = len(frames), frames.shape[1]
    videos = [(name, path) for name, path in spec.companions if name in VIDEO_STREAMS]
    cut = dict(fps=fps, start=start, box=box, size=size)
    if videos:
        try:
            decoded = _read_videos([p for _, p in videos], n, **cut)
            streams.update({name: d for (name, _), d in zip(videos, decoded)})
        except BadCompanion:  # which file? one at a time, to name it
            for name, path in videos:
                try:
                    streams[name] = _read_videos([path], n, **cut)[0]
                except BadCompanion as e:
                    notes.append((BAD, f"{path}: {e}"))
    for name, path in spec.companions:
        if name == MASK_KEY:
            try:
                streams[name] = _read_masks(path, n, **cut, source_fps=source_fps)
            except BadCompanion as e:
                notes.append((BAD, f"{path}: {e}"))
    return streams, notes


def encode_mask(mask: np.ndarray) -> bytes:
    """bool [H, W] -> 1-bit PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, bool)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def decode_mask(data: bytes) -> np.ndarray:
    """1-bit PNG bytes -> bool [H, W]."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("1"), bool)
