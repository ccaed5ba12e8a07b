"""AniTalker's 39-d MFCC front end against a straightforward per-frame numpy/scipy computation."""

import math

import numpy as np
import pytest
import scipy.fftpack

from jaxtalk.models.audio import mfcc as M


def _reference_mfcc(wav, sr=16000):
    """Loop-per-frame MFCC with python_speech_features' default parameters."""
    x = np.append(wav[0], wav[1:] - np.float32(0.97) * wav[:-1]).astype(np.float64)
    flen, fstep, nfft = 400, 160, 512
    nframes = 1 if len(x) <= flen else 1 + int(math.ceil((len(x) - flen) / fstep))
    x = np.concatenate([x, np.zeros((nframes - 1) * fstep + flen - len(x))])
    # triangular filters on floor-rounded FFT bins of mel-spaced corners
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 28)
    corner = np.floor((nfft + 1) * 700 * (10 ** (mel / 2595) - 1) / sr).astype(int)
    fb = np.zeros((26, nfft // 2 + 1))
    for j in range(26):
        for i in range(corner[j], corner[j + 1]):
            fb[j, i] = (i - corner[j]) / (corner[j + 1] - corner[j])
        for i in range(corner[j + 1], corner[j + 2]):
            fb[j, i] = (corner[j + 2] - i) / (corner[j + 2] - corner[j + 1])
    out = []
    for f in range(nframes):
        frame = x[f * fstep : f * fstep + flen]
        p = np.abs(np.fft.rfft(frame, nfft)) ** 2 / nfft
        c = scipy.fftpack.dct(np.log(np.maximum(fb @ p, 1e-300)), type=2, norm="ortho")[:13]
        c = c * (1 + 11 * np.sin(np.pi * np.arange(13) / 22))
        c[0] = np.log(p.sum())
        out.append(c)
    return np.array(out)


def _reference_delta(c, n):
    padded = np.pad(c, ((n, n), (0, 0)), mode="edge")
    denom = 2 * sum(k * k for k in range(1, n + 1))
    return np.array(
        [np.arange(-n, n + 1) @ padded[t : t + 2 * n + 1] / denom for t in range(len(c))]
    )


def _speech_like(n, seed=0):
    t = np.arange(n) / 16000
    rng = np.random.RandomState(seed)
    return (
        0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t)) + 0.05 * rng.randn(n)
    ).astype(np.float32)


@pytest.mark.parametrize("n", [400, 401, 8000 + 77])
def test_mfcc_39_matches_reference(n):
    wav = _speech_like(n)
    feats = M.anitalker_mfcc(wav)
    base = _reference_mfcc(wav)
    want = np.hstack([base, _reference_delta(base, 1), _reference_delta(base, 2)])
    assert feats.shape == want.shape == (len(base), 39) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, want, atol=1e-4, rtol=1e-5)


def test_rate_alignment_and_errors():
    feats = M.anitalker_mfcc(_speech_like(16000))
    assert len(feats) == 99  # 1 + ceil((16000 - 400) / 160)
    aligned, frames = M.video_aligned(feats)
    assert frames == 24 and aligned.shape == (96, 39)
    with pytest.raises(ValueError):
        M.anitalker_mfcc(_speech_like(16000), sample_rate=44100)
    silent = M.anitalker_mfcc(np.zeros(1600, np.float32))
    assert np.all(np.isfinite(silent))


def test_matches_python_speech_features_when_installed():
    psf = pytest.importorskip("python_speech_features")
    wav = _speech_like(12345, seed=1)
    m = psf.mfcc(signal=wav, samplerate=16000, numcep=13, winlen=0.025, winstep=0.01)
    ref = np.hstack((m, psf.base.delta(m, 1), psf.base.delta(m, 2)))
    np.testing.assert_allclose(M.anitalker_mfcc(wav), ref, atol=1e-5)
