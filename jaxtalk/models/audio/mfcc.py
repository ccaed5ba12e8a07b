"""The 39-d MFCC front end of AniTalker's mfcc_* variants, in numpy.

The release computes, on 16 kHz audio (librosa.load(sr=16000), float32):
    m  = python_speech_features.mfcc(wav, 16000, numcep=13, winlen=0.025, winstep=0.01)
    d1 = delta(m, 1); d2 = delta(m, 2); features = hstack(m, d1, d2)   # (T100, 39)
Note that d2 is a *2-frame-wide delta of the MFCCs*, not a delta of deltas. This module
reproduces that pipeline with the library's defaults: pre-emphasis 0.97 (applied in the
signal's dtype), 400-sample rectangular frames every 160 samples with the last frame
zero-padded, |rfft_512|^2 / 512, 26 triangular mel filters on floor-rounded FFT bins,
log, orthonormal DCT-II, sinusoidal lifter 22, and c0 replaced by the log frame energy.
100 feature frames per second = 4 per 25 fps video frame.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
FEATURE_RATE = 100  # frames per second
FEATURES_PER_VIDEO_FRAME = 4  # at 25 fps
_EPS = np.finfo(np.float64).eps  # the library's floor before log


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    num_filters: int = 26,
    nfft: int = 512,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = 0.0,
    high_hz: float | None = None,
) -> np.ndarray:
    """(num_filters, nfft//2+1) triangles whose corners are mel-spaced FFT bin indices."""
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2)
    corners = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    left, centre, right = (corners[:-2, None], corners[1:-1, None], corners[2:, None])
    rising = (bins - left) / np.maximum(centre - left, 1e-12)
    falling = (right - bins) / np.maximum(right - centre, 1e-12)
    return np.where(
        (bins >= left) & (bins < centre),
        rising,
        np.where((bins >= centre) & (bins < right), falling, 0.0),
    )


def frame_signal(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """(num_frames, frame_len); the tail is zero-padded so every sample is covered."""
    n = len(signal)
    num_frames = 1 if n <= frame_len else 1 + math.ceil((n - frame_len) / frame_step)
    padded = np.zeros((num_frames - 1) * frame_step + frame_len, np.float64)
    padded[:n] = signal
    starts = np.arange(num_frames)[:, None] * frame_step
    return padded[starts + np.arange(frame_len)[None, :]]


def mfcc(
    signal: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    num_ceps: int = 13,
    win_len: float = 0.025,
    win_step: float = 0.01,
    num_filters: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """(num_frames, num_ceps) MFCCs with c0 replaced by the log frame energy."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(f"mfcc expects a mono 1-D signal, got shape {signal.shape}")
    if not np.issubdtype(signal.dtype, np.floating):
        signal = signal.astype(np.float32)
    # Pre-emphasis in the signal's own dtype (float32 from librosa), as the release does.
    emphasised = np.concatenate([signal[:1], signal[1:] - signal.dtype.type(preemph) * signal[:-1]])
    frames = frame_signal(
        emphasised, _round_half_up(win_len * sample_rate), _round_half_up(win_step * sample_rate)
    )
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy = np.where(energy == 0, _EPS, energy)
    mel_energy = power @ mel_filterbank(num_filters, nfft, sample_rate).T
    mel_energy = np.where(mel_energy == 0, _EPS, mel_energy)
    ceps = scipy.fft.dct(np.log(mel_energy), type=2, axis=1, norm="ortho")[:, :num_ceps]
    if lifter > 0:
        ceps = ceps * (1 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_ceps) / lifter))
    ceps[:, 0] = np.log(energy)
    return ceps


def delta(features: np.ndarray, width: int) -> np.ndarray:
    """Regression delta over +-width frames with edge padding:
    d[t] = sum_n n (c[t+n] - c[t-n]) / (2 sum_n n^2)."""
    if width < 1:
        raise ValueError("delta width must be >= 1")
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    t = len(features)
    weighted = sum(
        n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return weighted / (2 * sum(n * n for n in range(1, width + 1)))


def anitalker_mfcc(signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T100, 39) float32: 13 MFCCs, their delta over +-1 frame and over +-2 frames."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"resample to {SAMPLE_RATE} Hz first (got {sample_rate} Hz)")
    base = mfcc(signal, sample_rate)
    return np.hstack([base, delta(base, 1), delta(base, 2)]).astype(np.float32)


def video_aligned(features: np.ndarray) -> tuple[np.ndarray, int]:
    """Truncates 100 Hz features to whole 25 fps frames as the release does:
    returns (features[: 4 * n], n)."""
    n = len(features) // FEATURES_PER_VIDEO_FRAME
    return features[: n * FEATURES_PER_VIDEO_FRAME], n
