"""Finding the ffmpeg binary and running it; `MediaError`, what every media failure raises.

The system `ffmpeg` is used when it is on PATH (or named by $JAXTALK_FFMPEG), otherwise the
static binary shipped by imageio-ffmpeg. Every failure raises `MediaError` naming the file
and the reason.
"""

from __future__ import annotations

import functools
import os
import shutil

import ffmpeg

from jaxtalk.errors import InputError


class MediaError(InputError, RuntimeError):
    """A video or audio file that cannot be read or written; the message names the file.
    (An InputError, so every command reports it on one line; a RuntimeError as before.)"""


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
        raise MediaError(
            "no ffmpeg found: install it (apt-get install ffmpeg) or pip install imageio-ffmpeg"
        ) from e


def stderr_tail(err: bytes | None, lines: int = 3) -> str:
    """The last `lines` lines of ffmpeg's stderr on one line, for an error message."""
    text = (err or b"").decode("utf-8", "replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:]) or "no ffmpeg output"


def input_range(path: str, start: float | None, duration: float | None):
    """An ffmpeg-python input of `path` limited to [start, start + duration) seconds."""
    kwargs = {}
    if start:
        kwargs["ss"] = f"{start:.6f}"  # before -i: fast seek, still frame-accurate when decoding
    if duration is not None:
        kwargs["t"] = f"{duration:.6f}"
    return ffmpeg.input(path, **kwargs)


def run(stream, path: str, what: str, input_bytes: bytes | None = None) -> bytes:
    """Runs an ffmpeg-python stream, returning its stdout; MediaError naming `path` and `what`."""
    try:
        out, _ = stream.run(
            cmd=ffmpeg_exe(),
            input=input_bytes,
            capture_stdout=True,
            capture_stderr=True,
            quiet=True,
        )
    except ffmpeg.Error as e:
        raise MediaError(f"{path}: ffmpeg failed to {what} ({stderr_tail(e.stderr)})") from None
    return out
