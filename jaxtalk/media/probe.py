"""`probe`: size, rotation, frame rate, duration and audio rate of a media file.

Parses `ffmpeg -i` output so that ffprobe is never needed; failures raise `MediaError`
naming the file and the reason. Phone videos store frames sideways with a rotation (the
stream's display matrix side data, or an older `rotate` tag); ffmpeg's decoder turns them
upright by default (autorotate), so `probe` reports the displayed size, the one decoded
frames have. Each answer is remembered while the file's inode, size and modification time stay
the same: preparing a dataset reads each video once per clip, and every read probes it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
import subprocess

from jaxtalk.media.ffmpeg_run import MediaError, ffmpeg_exe, stderr_tail


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What `probe` learns from a media file's header."""

    path: str
    duration: float | None  # seconds; None when the container does not say
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    audio_sample_rate: int | None = None
    # Degrees counterclockwise (0, 90, 180, 270) the decoder turns the stored frames to show
    # them; width and height above are already those of the turned frames.
    rotation: int = 0

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def has_audio(self) -> bool:
        return self.audio_sample_rate is not None


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: .*?(?<![0-9a-fx])(\d{1,5})x(\d{1,5})(?![0-9])")
_FPS = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)")
_AUDIO = re.compile(r"Stream #\S+.*?: Audio: .*?(\d+) Hz")
# "displaymatrix: rotation of ..." up to ffmpeg 8, "Display Matrix: rotation of ..." from 9.
_DISPLAYMATRIX = re.compile(r"display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", re.I)
_ROTATE_TAG = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$")  # ffmpeg < 5: clockwise


def _stream_block(lines: list[str], first: int) -> list[str]:
    """The lines describing the stream whose `Stream #` line is `lines[first]`."""
    block = []
    for line in lines[first + 1 :]:
        if "Stream #" in line or not line.startswith("    "):
            break
        block.append(line)
    return block


def _rotation(block: list[str]) -> int:
    """Counterclockwise degrees in 0, 90, 180, 270 as ffmpeg's autorotate applies them; 0 for
    an angle that is not a multiple of 90 (ffmpeg only turns frames by right angles)."""
    degrees = None
    for line in block:
        if m := _DISPLAYMATRIX.search(line):
            degrees = float(m[1])
            break
        if degrees is None and (m := _ROTATE_TAG.match(line)):
            degrees = -float(m[1])
    if degrees is None:
        return 0
    quarter = round(degrees / 90)
    return (quarter % 4) * 90 if abs(degrees - 90 * quarter) < 1.0 else 0


def probe(path: str | os.PathLike) -> MediaInfo:
    """Reads size, fps, duration and audio rate from `ffmpeg -i` (no ffprobe needed)."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{path}: {'not a file' if st is not None else 'no such file'}")
    return _probe(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=1024)
def _probe(path: str, version: tuple) -> MediaInfo:
    """probe() of `path` as it is at `version` (its stat identity; errors are not cached)."""
    proc = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", path], capture_output=True, check=False
    )
    text = proc.stderr.decode("utf-8", "replace")
    if "Invalid data found" in text or ("Stream #" not in text):
        raise MediaError(f"{path}: not a readable media file ({stderr_tail(proc.stderr, 1)})")
    duration = None
    if m := _DURATION.search(text):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    width = height = fps = rate = None
    rotation = 0
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if width is None and (m := _VIDEO.search(line)):
            width, height = int(m[1]), int(m[2])
            if f := _FPS.search(line):
                fps = float(f[1])
            rotation = _rotation(_stream_block(lines, i))
            if rotation in (90, 270):
                width, height = height, width
        if rate is None and (m := _AUDIO.search(line)):
            rate = int(m[1])
    return MediaInfo(path, duration, width, height, fps, rate, rotation)
