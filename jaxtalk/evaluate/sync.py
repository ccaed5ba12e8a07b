"""LSE-D / LSE-C: lip-sync error distance and confidence from SyncNet, as syncnet_python's
`SyncNetInstance.evaluate` (used by Wav2Lip and the talking-face papers) computes them.

For a video of T frames at 25 fps with 16 kHz audio: MFCCs at 100 Hz (python_speech_features
defaults, `jaxtalk.models.audio.mfcc`), 5-frame / 20-MFCC-step windows starting at every frame up to min(T, samples/640)
- 5, embeddings of both, then for every shift s in [-vshift, vshift] the mean over windows
of |video_i - audio_(i+s)| (audio zero-padded, torch's pairwise_distance eps 1e-6).
LSE-D is the smallest mean distance, LSE-C the median mean distance minus the smallest,
the offset is vshift minus the best shift's index.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.audio.mfcc import mfcc
from jaxtalk.models.metric_nets.syncnet import SyncNet

VIDEO_FPS = 25
AUDIO_RATE = 16000
WINDOW_FRAMES = 5
MFCC_STEPS_PER_FRAME = 4  # 100 Hz MFCC / 25 fps
DEFAULT_VSHIFT = 15  # syncnet_python's demo and Wav2Lip's scoring scripts
PAIRWISE_EPS = 1e-6


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
        raise ValueError(
            f"video too short for SyncNet: {len(frames)} frames, "
            f"{len(audio) / AUDIO_RATE:.2f} s of audio (needs > {WINDOW_FRAMES} frames)"
        )
    # cv2 reads uint8 BGR frames; the released weights expect that scale and channel order.
    bgr = np.round(np.clip(frames, 0, 1) * 255)[..., ::-1]
    clips = np.stack([bgr[i : i + WINDOW_FRAMES] for i in range(count)])
    # python_speech_features.mfcc defaults on the 16-bit integer scale that
    # scipy.io.wavfile gives syncnet_python (float64, so pre-emphasis is in float64 too).
    cepstra = mfcc(audio * 32768.0, AUDIO_RATE).T  # (13, steps)
    span = WINDOW_FRAMES * MFCC_STEPS_PER_FRAME
    windows = np.stack(
        [
            cepstra[:, i * MFCC_STEPS_PER_FRAME : i * MFCC_STEPS_PER_FRAME + span]
            for i in range(count)
        ]
    )
    return clips, windows[..., None].astype(np.float32)


# --------------------------------------------------------------------------- embeddings


@jax.jit
def _embed(variables, clips, windows):
    model = SyncNet()
    return (
        model.apply(variables, clips, method=SyncNet.embed_video),
        model.apply(variables, windows, method=SyncNet.embed_audio),
    )


def embed(variables, clips, windows, batch_size: int = 64):
    """(video, audio) embeddings (L, 1024) each, computed in batches of `batch_size`."""
    variables = {k: variables[k] for k in ("params", "batch_stats")}
    video, audio = [], []
    for start in range(0, len(clips), batch_size):
        v, a = _embed(
            variables, clips[start : start + batch_size], windows[start : start + batch_size]
        )
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
    return {
        "mean_distance_per_shift": mean_dist,
        "lse_d": min_dist,
        "lse_c": median - min_dist,
        "offset": vshift - best,
    }


def lse(
    variables,
    frames,
    audio,
    sample_rate: int = AUDIO_RATE,
    vshift: int = DEFAULT_VSHIFT,
    batch_size: int = 64,
) -> dict:
    """LSE-D, LSE-C and the AV offset (in frames) of one talking-face video."""
    clips, windows = sync_windows(frames, audio, sample_rate)
    video, audio_emb = embed(variables, clips, windows, batch_size)
    result = offset_search(video, audio_emb, vshift)
    return {
        k: np.asarray(v)
        if k == "mean_distance_per_shift"
        else float(v)
        if k != "offset"
        else int(v)
        for k, v in result.items()
    }
