"""Audio through ffmpeg: any file (wav, mp3, the audio track of a video) to mono float32.

Errors raise `MediaError` naming the file and the reason.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from jaxtalk.media import ffmpeg_run
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import probe


def read_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    start: float | None = None,
    duration: float | None = None,
) -> np.ndarray:
    """Decodes, downmixes to mono and resamples to `sample_rate`; float32 in [-1, 1], shape [S]."""
    path = os.fspath(path)
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path}: has no audio stream")
    stream = ffmpeg_run.input_range(path, start, duration).audio.output(
        "pipe:", format="f32le", ac=1, ar=int(sample_rate)
    )
    raw = ffmpeg_run.run(stream, path, "decode audio")
    return np.frombuffer(raw, np.float32).copy()


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Writes mono float audio in [-1, 1] (or int16) as 16-bit PCM wav."""
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"{path}: audio must be mono [S], got shape {audio.shape}")
    if audio.dtype != np.int16:
        audio = to_int16(audio)
    with wave.open(os.fspath(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(audio.tobytes())


def to_int16(audio: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> int16 PCM (the compact form records store)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def from_int16(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float32) / 32767.0


__all__ = ["read_audio", "write_wav", "to_int16", "from_int16"]
