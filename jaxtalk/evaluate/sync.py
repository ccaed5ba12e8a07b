"""LSE-D / LSE-C: lip-sync error distance and confidence from SyncNet, as syncnet_python's
`SyncNetInstance.evaluate` (used by Wav2Lip and the talking-face papers) computes them.

For a video of T frames at 25 fps with 16 kHz audio: MFCCs at 100 Hz (python_speech_features
defaults), 5-frame / 20-MFCC-step windows starting at every frame up to min(T, samples/640)
- 5, embeddings of both, then for every shift s in [-vshift, vshift] the mean over windows
of |video_i - audio_(i+s)| (audio zero-padded, torch's pairwise_distance eps 1e-6).
LSE-D is the smallest mean distance, LSE-C the median mean distance minus the smallest,
the offset is vshift minus the best shift's index.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.evaluate.nets.syncnet import SyncNet

VIDEO_FPS = 25
AUDIO_RATE = 16000
WINDOW_FRAMES = 5
MFCC_STEPS_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
DEFAULT_VSHIFT = 15  # syncnet_python's demo and Wav2Lip's scoring scripts
PAIRWISE_EPS = 1e-6


# --------------------------------------------------------------------------- MFCC


def _hz_to_mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel_to_hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def mel_filterbank(num_filters: int = 26, nfft: int = 512, sample_rate: int = AUDIO_RATE):
    """Triangular filters on FFT bins floor((nfft + 1) * hz / rate), (num_filters, nfft//2+1)."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), num_filters + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate)
    bank = np.zeros((num_filters, nfft // 2 + 1))
    for j in range(num_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def _ortho_dct2(x: np.ndarray) -> np.ndarray:
    """scipy.fftpack.dct(x, type=2, norm='ortho') along the last axis."""
    n = x.shape[-1]
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    scale = np.full(n, np.sqrt(2.0 / n))
    scale[0] = np.sqrt(1.0 / n)
    return (x @ basis.T) * scale


def mfcc(audio, sample_rate: int = AUDIO_RATE, num_cepstra: int = 13, num_filters: int = 26,
         nfft: int = 512, preemphasis: float = 0.97, lifter: int = 22) -> np.ndarray:
    """python_speech_features.mfcc with its defaults (25 ms frames, 10 ms step, no window,
    log energy as coefficient 0), (frames, num_cepstra). `audio` on the 16-bit integer
    scale, as scipy.io.wavfile reads a PCM wav (multiply [-1, 1] floats by 32768)."""
    signal = np.asarray(audio, np.float64).reshape(-1)
    signal = np.append(signal[:1], signal[1:] - preemphasis * signal[:-1])
    frame_len, step = round(0.025 * sample_rate), round(0.01 * sample_rate)
    count = 1 if len(signal) <= frame_len else 1 + math.ceil((len(signal) - frame_len) / step)
    signal = np.concatenate([signal, np.zeros((count - 1) * step + frame_len - len(signal))])
    frames = signal[np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    tiny = np.finfo(float).eps
    energy = power.sum(1)
    energy = np.where(energy == 0, tiny, energy)
    bands = power @ mel_filterbank(num_filters, nfft, sample_rate).T
    bands = np.where(bands == 0, tiny, bands)
    cepstra = _ortho_dct2(np.log(bands))[:, :num_cepstra]
    cepstra *= 1 + (lifter / 2.0) * np.sin(np.pi * np.arange(num_cepstra) / lifter)
    cepstra[:, 0] = np.log(energy)
    return cepstra


# --------------------------------------------------------------------------- windows


def sync_windows(frames, audio, sample_rate: int = AUDIO_RATE):
    """Cuts a video into SyncNet's inputs.

    frames: (T, 224, 224, 3) RGB face crops in [0, 1] at 25 fps; audio: 16 kHz samples in
    [-1, 1]. Returns (clips (L, 5, 224, 224, 3) BGR 0..255, mfcc windows (L, 13, 20, 1)).
    """
    if sample_rate != AUDIO_RATE:
        raise ValueError(f"SyncNet expects {AUDIO_RATE} Hz audio, got {sample_rate} Hz")
    frames = np.asarray(frames, np.float32)
    audio = np.asarray(audio, np.float64).reshape(-1)
    usable = min(len(frames), len(audio) // (AUDIO_RATE // VIDEO_FPS))
    count = usable - WINDOW_FRAMES
    if count < 1:
        raise ValueError(f"video too short for SyncNet: {len(frames)} frames, "
                         f"{len(audio) / AUDIO_RATE:.2f} s of audio (needs > {WINDOW_FRAMES} frames)")
    # cv2 reads uint8 BGR frames; the released weights expect that scale and channel order.
    bgr = np.round(np.clip(frames, 0, 1) * 255)[..., ::-1]
    clips = np.stack([bgr[i:i + WINDOW_FRAMES] for i in range(count)])
    cepstra = mfcc(audio * 32768.0).T  # (13, steps)
    span = WINDOW_FRAMES * MFCC_STEPS_PER_FRAME
    windows = np.stack([cepstra[:, i * MFCC_STEPS_PER_FRAME:i * MFCC_STEPS_PER_FRAME + span]
                        for i in range(count)])
    return clips, windows[..., None].astype(np.float32)


# --------------------------------------------------------------------------- embeddings


@jax.jit
def _embed(variables, clips, windows):
    model = SyncNet()
    return (model.apply(variables, clips, method=SyncNet.embed_video),
            model.apply(variables, windows, method=SyncNet.embed_audio))


def embed(variables, clips, windows, batch_size: int = 64):
    """(video, audio) embeddings (L, 1024) each, computed in batches of `batch_size`."""
    variables = {k: variables[k] for k in ("params", "batch_stats")}
    video, audio = [], []
    for start in range(0, len(clips), batch_size):
        v, a = _embed(variables, clips[start:start + batch_size],
                      windows[start:start + batch_size])
        video.append(np.asarray(v))
        audio.append(np.asarray(a))
    return np.concatenate(video), np.concatenate(audio)


@functools.partial(jax.jit, static_argnames=("vshift",))
def offset_search(video_embeddings, audio_embeddings, vshift: int = DEFAULT_VSHIFT):
    """Mean distance per shift (2 vshift + 1,), and LSE-D, LSE-C and the AV offset."""
    count = video_embeddings.shape[0]
    padded = jnp.pad(audio_embeddings, ((vshift, vshift), (0, 0)))
    shifts = jnp.arange(2 * vshift + 1)
    # window i against audio windows i - vshift .. i + vshift (zeros past the ends)
    candidates = padded[jnp.arange(count)[:, None] + shifts[None, :]]
    diff = video_embeddings[:, None, :] - candidates + PAIRWISE_EPS
    mean_dist = jnp.mean(jnp.linalg.norm(diff, axis=-1), axis=0)
    best = jnp.argmin(mean_dist)
    min_dist = mean_dist[best]
    median = jnp.sort(mean_dist)[vshift]  # odd count: the middle value (torch.median)
    return {"mean_distance_per_shift": mean_dist, "lse_d": min_dist,
            "lse_c": median - min_dist, "offset": vshift - best}


def lse(variables, frames, audio, sample_rate: int = AUDIO_RATE,
        vshift: int = DEFAULT_VSHIFT, batch_size: int = 64) -> dict:
    """LSE-D, LSE-C and the AV offset (in frames) of one talking-face video."""
    clips, windows = sync_windows(frames, audio, sample_rate)
    video, audio_emb = embed(variables, clips, windows, batch_size)
    result = offset_search(video, audio_emb, vshift)
    return {k: np.asarray(v) if k == "mean_distance_per_shift" else float(v) if k != "offset"
            else int(v) for k, v in result.items()}
