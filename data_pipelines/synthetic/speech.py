"""A speech-like audio track and the mouth opening it drives.

Syllables (voiced harmonics shaped by vowel formants, with a noise burst for the
consonant) separated by gaps and pauses. The mouth opening per video frame is the
syllable envelope over that frame times the vowel's openness (its first formant), so
both the loudness and the spectrum of the audio carry it: a speech-to-motion model can
learn it from the audio alone.
"""

from __future__ import annotations

import numpy as np

# (F1, F2) in Hz and openness in [0, 1] for a few vowels: open vowels have a high F1.
VOWELS = np.array(
    [
        (750, 1200, 1.0),  # a
        (500, 1800, 0.6),  # e
        (300, 2300, 0.3),  # i
        (500, 900, 0.55),  # o
        (320, 800, 0.35),  # u
    ]
)


def syllable_track(
    duration: float, rng: np.random.Generator, rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Envelope [S] in [0, 1] and per-sample vowel index [S] (-1 in silences)."""
    n = int(round(duration * rate))
    env = np.zeros(n, np.float32)
    vowel = np.full(n, -1, np.int32)
    t = rng.uniform(0.05, 0.3)
    while t < duration:
        length = rng.uniform(0.12, 0.3)
        a, b = int(t * rate), min(int((t + length) * rate), n)
        if b > a:
            env[a:b] = rng.uniform(0.5, 1.0) * np.sin(np.linspace(0, np.pi, b - a)) ** 0.7
            vowel[a:b] = rng.integers(len(VOWELS))
        t += length + (rng.uniform(0.3, 0.8) if rng.random() < 0.12 else rng.uniform(0.02, 0.1))
    return env, vowel


def synthesize(duration: float, pitch: float, rng: np.random.Generator, rate: int = 16000):
    """Returns (audio float32 [S] in [-1, 1], envelope [S], openness [S])."""
    env, vowel = syllable_track(duration, rng, rate)
    n = len(env)
    t = np.arange(n) / rate
    f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = VOWELS[np.maximum(vowel, 0)]
    voiced = np.zeros(n, np.float64)
    for k in range(1, int(4000 // pitch) + 1):
        fk = k * f0
        # Harmonic amplitude from two formant bumps and a -6 dB/octave source tilt.
        w = (
            np.exp(-0.5 * ((fk - formants[:, 0]) / 120) ** 2)
            + 0.6 * np.exp(-0.5 * ((fk - formants[:, 1]) / 180) ** 2)
            + 0.05
        ) / k
        voiced += w * np.sin(k * phase)
    voiced /= np.abs(voiced).max() + 1e-9
    # Consonant: a short noise burst at each syllable onset.
    onset = np.flatnonzero(np.diff((vowel >= 0).astype(np.int8)) == 1) + 1
    burst = np.zeros(n)
    for o in onset:
        m = min(int(0.03 * rate), n - o)
        burst[o : o + m] = rng.normal(0, 1, m) * np.linspace(1, 0, m)
    audio = 0.7 * env * voiced + 0.15 * burst + 0.003 * rng.normal(0, 1, n)
    openness = np.where(vowel >= 0, formants[:, 2], 0.0)
    return (
        (audio / max(1.0, np.abs(audio).max())).astype(np.float32),
        env,
        openness.astype(np.float32),
    )


def mouth_per_frame(env: np.ndarray, openness: np.ndarray, fps: float, rate: int) -> np.ndarray:
    """Mouth opening in [0, 1] for each video frame: mean of envelope x openness over the frame."""
    spf = int(round(rate / fps))
    n = len(env) // spf
    drive = (env * (0.4 + 0.6 * openness))[: n * spf].reshape(n, spf).mean(1)
    return np.clip(drive / 0.8, 0, 1).astype(np.float32)
