"""Video through ffmpeg: read frames as uint8 NHWC, write an H.264 mp4 (with audio).

Every failure raises `MediaError` naming the file and the reason.
"""

from __future__ import annotations

import os
import tempfile
from typing import Sequence

import ffmpeg
import numpy as np

from jaxtalk.media import audio as audio_lib
from jaxtalk.media import ffmpeg_run
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import probe


def probe_video(path: str | os.PathLike):
    """`probe(path)`, a MediaError naming the file when it has no video stream."""
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{os.fspath(path)}: has no video stream")
    return info


def read_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    start: float | None = None,
    duration: float | None = None,
    crop: Sequence[int] | None = None,
    size: int | tuple[int, int] | None = None,
    max_frames: int | None = None,
) -> tuple[np.ndarray, float]:
    """Decodes a video (any container ffmpeg reads) to uint8 frames [N, H, W, 3] and fps.

    Frames come out as displayed: ffmpeg's default autorotate turns a video with rotation
    metadata (phone videos) upright before the filters, so `crop` is in displayed pixels and
    the frame size is `probe`'s (which reports the displayed size for that reason).

    Args:
      path: the video file.
      fps: resample to this frame rate (frames duplicated/dropped); None keeps the source rate.
      start, duration: seconds; the time range to read (None = from 0 / to the end).
      crop: (x, y, w, h) in source pixels, applied before resizing.
      size: output side (square) or (width, height); None keeps the (cropped) size.
      max_frames: stop after this many output frames.
    """
    path = os.fspath(path)
    info = probe_video(path)
    stream = ffmpeg_run.input_range(path, start, duration).video
    if fps is not None:
        stream = stream.filter("fps", fps=fps, round="near")
    width, height = info.width, info.height
    if crop is not None:
        x, y, w, h = (int(v) for v in crop)
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > info.width or y + h > info.height:
            raise MediaError(
                f"{path}: crop {x, y, w, h} outside the {info.width}x{info.height} frame"
            )
        stream = stream.crop(x, y, w, h)
        width, height = w, h
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size
        stream = stream.filter("scale", width, height, flags="area")
    out_kwargs = {"format": "rawvideo", "pix_fmt": "rgb24"}
    if max_frames is not None:
        out_kwargs["frames:v"] = int(max_frames)
    raw = ffmpeg_run.run(stream.output("pipe:", **out_kwargs), path, "decode video")
    frame_bytes = width * height * 3
    if len(raw) % frame_bytes:
        raise MediaError(
            f"{path}: decoded {len(raw)} bytes, not a whole number of {width}x{height} frames"
        )
    frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    if not len(frames):
        raise MediaError(
            f"{path}: no frames in the requested range (start={start}, duration={duration})"
        )
    return frames, float(fps or info.fps or 25.0)


def _prepare_output(path: str) -> None:
    """Creates the output's directory; a directory as the output or a regular file on the
    way to it is the user's fault, named before any frame is encoded."""
    if os.path.isdir(path):
        raise MediaError(f"{path}: is a directory, not an output file")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:  # FileExistsError: `parent` is a file
        why = "not a directory" if isinstance(e, FileExistsError) else e.strerror
        raise MediaError(f"{path}: cannot create its directory {parent} ({why})") from None


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    audio: str | os.PathLike | np.ndarray | None = None,
    audio_sample_rate: int = 16000,
    crf: int = 18,
) -> None:
    """Writes uint8 frames [N, H, W, 3] to an H.264 mp4, muxing audio (a file or a mono array)."""
    path = os.fspath(path)
    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"{path}: frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}"
        )
    n, h, w, _ = frames.shape
    _prepare_output(path)
    video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
    # yuv420p (what players accept) needs even sides.
    video = video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [video]
        out_kwargs = {
            "vcodec": "libx264",
            "pix_fmt": "yuv420p",
            "crf": crf,
            "r": fps,
            "movflags": "+faststart",
        }
        if audio is not None:
            if isinstance(audio, np.ndarray):
                wav = os.path.join(tmp, "audio.wav")
                audio_lib.write_wav(wav, audio, audio_sample_rate)
                audio = wav
            inputs.append(ffmpeg.input(os.fspath(audio)).audio)
            out_kwargs.update(acodec="aac", ar=audio_sample_rate, t=f"{n / fps:.6f}")
        stream = ffmpeg.output(*inputs, path, **out_kwargs).overwrite_output()
        ffmpeg_run.run(stream, path, "encode video", input_bytes=frames.tobytes())
