"""`probe`: size, frame rate, duration and audio rate of a media file.

Parses `ffmpeg -i` output so that ffprobe is never needed; failures raise `MediaError`
naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import os
import re
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
    for line in text.splitlines():
        if width is None and (m := _VIDEO.search(line)):
            width, height = int(m[1]), int(m[2])
            if f := _FPS.search(line):
                fps = float(f[1])
        if rate is None and (m := _AUDIO.search(line)):
            rate = int(m[1])
    return MediaInfo(path, duration, width, height, fps, rate)
