"""Fixture builders for the data pipeline tests: marker videos and official metadata layouts."""

from __future__ import annotations

import numpy as np

from jaxtalk.media.video import write_video

STEP = 0.2  # seconds per level step


def marker_video(path, seconds=3.0, fps=25.0, width=96, height=72, seed=0, rate=16000, audio=True):
    """Grey frames and a 440 Hz tone whose levels follow the same random 0.2 s steps.

    After any cut/crop/resample, frame brightness and the audio RMS under each frame must
    still agree, which is what alignment tests check (`levels`).
    """
    rng = np.random.default_rng(seed)
    steps = rng.uniform(0.15, 1.0, int(np.ceil(seconds / STEP)) + 1)
    n = int(round(seconds * fps))
    level = steps[np.floor(np.arange(n) / fps / STEP + 1e-6).astype(int)]  # no 1.9999 -> 1
    frames = np.broadcast_to((30 + 200 * level)[:, None, None, None], (n, height, width, 3)).astype(
        np.uint8
    )
    ts = np.arange(int(seconds * rate)) / rate
    tone = (
        0.8 * steps[np.arange(len(ts)) // int(STEP * rate)] * np.sin(2 * np.pi * 440 * ts)
    ).astype(np.float32)
    write_video(path, frames, fps, audio=tone if audio else None)
    return steps


def levels(frames: np.ndarray, audio: np.ndarray, spf: int = 640):
    """Per-frame level from brightness ([-1, 1] floats or uint8) and from the audio under it."""
    frames = np.asarray(frames, np.float64)
    if frames.max() <= 1.0:
        frames = (frames + 1) * 127.5
    v = (frames.reshape(len(frames), -1).mean(1) - 30) / 200
    chunks = np.asarray(audio[: len(frames) * spf], np.float64).reshape(len(frames), spf)
    a = np.sqrt((chunks**2).mean(1)) * np.sqrt(2) / 0.8
    return v, a


def assert_aligned(frames, audio, spf=640):
    """Brightness and audio levels agree at lag 0, better than at lags of +-1 frame."""
    v, a = levels(frames, audio, spf)
    assert np.abs(v - a).mean() < 0.08, (v, a)

    def corr(lag):
        return np.corrcoef(v[2:-2], a[2 + lag : len(a) - 2 + lag])[0, 1]

    if v[2:-2].std() > 0.05:  # a window inside one step has nothing to correlate
        assert corr(0) > 0.9 and corr(0) > corr(1) and corr(0) > corr(-1), (
            corr(-1),
            corr(0),
            corr(1),
        )


def vox_txt(identity, ytid, frames, boxes, normalized=True):
    """An utterance file in the official layout: tab/space mix, trailing blanks."""
    lines = [
        f"Identity  : \t{identity}",
        f"Reference : \t{ytid}",
        "Offset    : \t2",
        "FV Conf   : \t20.230\t(1)",
        "ASD Conf  : \t2.765",
        "",
        "FRAME \tX \tY \tW \tH ",
    ]
    for f, (x, y, w, h) in zip(frames, boxes):
        if normalized:
            lines.append(f"{f:06d} \t{x:.3f} \t{y:.3f} \t{w:.3f} \t{h:.3f} ")
        else:
            lines.append(f"{f:06d} \t{int(x)} \t{int(y)} \t{int(w)} \t{int(h)} ")
    return "\n".join(lines) + "\n"
