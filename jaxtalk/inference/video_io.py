"""Video I/O through ffmpeg: probe, read frames as uint8 NHWC, write mp4 (with audio).

The system `ffmpeg` is used when it is on PATH, otherwise the static binary shipped by
imageio-ffmpeg. Probing parses `ffmpeg -i` output so that ffprobe is never needed.
Every failure raises `MediaError` naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import tempfile
from typing import Sequence

import ffmpeg
import numpy as np


class MediaError(RuntimeError):
  """A video or audio file that cannot be read or written; the message names the file."""


@functools.cache
def ffmpeg_exe() -> str:
  """Path of the ffmpeg binary: the system one, else imageio-ffmpeg's static build."""
  found = os.environ.get("JAXTALK_FFMPEG") or shutil.which("ffmpeg")
  if found:
    return found
  try:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    return imageio_ffmpeg.get_ffmpeg_exe()
  except (ImportError, RuntimeError) as e:
    raise MediaError("no ffmpeg found: install it (apt-get install ffmpeg) or pip install imageio-ffmpeg") from e


def _stderr_tail(err: bytes | None, lines: int = 3) -> str:
  text = (err or b"").decode("utf-8", "replace").strip().splitlines()
  return " | ".join(line.strip() for line in text[-lines:]) or "no ffmpeg output"


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What `probe` learns from a media file's header."""
  path: str
  duration: float | None  # seconds; None when the container does not say
  width: int | None = None
  height: int | None = None
  fps: float | None = None
  audio_sample_rate: int | None = None

  @property
  def has_video(self) -> bool:
    return self.width is not None

  @property
  def has_audio(self) -> bool:
    return self.audio_sample_rate is not None


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?(?<![0-9a-fx])(\d{2,5})x(\d{2,5})(?![0-9])")
_FPS = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: .*?(\d+) Hz")


def probe(path: str | os.PathLike) -> MediaInfo:
  """Reads size, fps, duration and audio rate from `ffmpeg -i` (no ffprobe needed)."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise MediaError(f"{path}: no such file")
  proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, check=False)
  text = proc.stderr.decode("utf-8", "replace")
  if "Invalid data found" in text or ("Stream #" not in text):
    raise MediaError(f"{path}: not a readable media file ({_stderr_tail(proc.stderr, 1)})")
  duration = None
  if m := _DURATION.search(text):
    duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
  width = height = fps = rate = None
  for line in text.splitlines():
    if width is None and (m := _VIDEO.search(line)):
      width, height = int(m[1]), int(m[2])
      if f := _FPS.search(line):
        fps = float(f[1])
    if rate is None and (m := _AUDIO.search(line)):
      rate = int(m[1])
  return MediaInfo(path, duration, width, height, fps, rate)


def _run(stream, path: str, what: str, input_bytes: bytes | None = None) -> bytes:
  try:
    out, _ = stream.run(cmd=ffmpeg_exe(), input=input_bytes, capture_stdout=True, capture_stderr=True, quiet=True)
  except ffmpeg.Error as e:
    raise MediaError(f"{path}: ffmpeg failed to {what} ({_stderr_tail(e.stderr)})") from None
  return out


def _input(path: str, start: float | None, duration: float | None):
  kwargs = {}
  if start:
    kwargs["ss"] = f"{start:.6f}"  # before -i: fast seek, still frame-accurate when decoding
  if duration is not None:
    kwargs["t"] = f"{duration:.6f}"
  return ffmpeg.input(path, **kwargs)


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

  Args:
    path: the video file.
    fps: resample to this frame rate (frames duplicated/dropped); None keeps the source rate.
    start, duration: seconds; the time range to read (None = from 0 / to the end).
    crop: (x, y, w, h) in source pixels, applied before resizing.
    size: output side (square) or (width, height); None keeps the (cropped) size.
    max_frames: stop after this many output frames.
  """
  path = os.fspath(path)
  info = probe(path)
  if not info.has_video:
    raise MediaError(f"{path}: has no video stream")
  stream = _input(path, start, duration).video
  if fps is not None:
    stream = stream.filter("fps", fps=fps, round="near")
  width, height = info.width, info.height
  if crop is not None:
    x, y, w, h = (int(v) for v in crop)
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > info.width or y + h > info.height:
      raise MediaError(f"{path}: crop {x, y, w, h} outside the {info.width}x{info.height} frame")
    stream = stream.crop(x, y, w, h)
    width, height = w, h
  if size is not None:
    width, height = (size, size) if isinstance(size, int) else size
    stream = stream.filter("scale", width, height, flags="area")
  out_kwargs = {"format": "rawvideo", "pix_fmt": "rgb24"}
  if max_frames is not None:
    out_kwargs["frames:v"] = int(max_frames)
  raw = _run(stream.output("pipe:", **out_kwargs), path, "decode video")
  frame_bytes = width * height * 3
  if len(raw) % frame_bytes:
    raise MediaError(f"{path}: decoded {len(raw)} bytes, not a whole number of {width}x{height} frames")
  frames = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
  if not len(frames):
    raise MediaError(f"{path}: no frames in the requested range (start={start}, duration={duration})")
  return frames, float(fps or info.fps or 25.0)


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
    raise ValueError(f"{path}: frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
  n, h, w, _ = frames.shape
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  video = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
  # yuv420p (what players accept) needs even sides.
  video = video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
  with tempfile.TemporaryDirectory() as tmp:
    inputs = [video]
    out_kwargs = {"vcodec": "libx264", "pix_fmt": "yuv420p", "crf": crf, "r": fps, "movflags": "+faststart"}
    if audio is not None:
      if isinstance(audio, np.ndarray):
        from jaxtalk.inference import audio_io  # pylint: disable=import-outside-toplevel
        wav = os.path.join(tmp, "audio.wav")
        audio_io.write_wav(wav, audio, audio_sample_rate)
        audio = wav
      inputs.append(ffmpeg.input(os.fspath(audio)).audio)
      out_kwargs.update(acodec="aac", ar=audio_sample_rate, t=f"{n / fps:.6f}")
    stream = ffmpeg.output(*inputs, path, **out_kwargs).overwrite_output()
    _run(stream, path, "encode video", input_bytes=frames.tobytes())
