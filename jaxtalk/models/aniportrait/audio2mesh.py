"""AniPortrait's Audio2Mesh: speech -> per-frame offsets of the 468 canonical face-mesh
vertices (Zejun-Yang/AniPortrait src/audio_models/model.py, `Audio2MeshModel`).

  wav2vec2-base (its conv features linearly resampled to the video's frame count before
  the transformer; `jaxtalk.models.audio.hubert`) -> last hidden state (768)
  -> Linear 768->512 (`in_fn`) -> Linear 512->1404 (`out_fn`, zero-initialised)

No nonlinearity between the two linears, as released. The output is 468 x 3 vertex
offsets that the release adds to the reference image's canonical (pose-free) MediaPipe
mesh (scripts/audio2vid.py: `pred + face_result['lmks3d']`). 95,485,692 parameters with
the released sizes (the masked-spec embedding of wav2vec2 included).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.audio.hubert import WAV2VEC2_BASE, HubertConfig, HubertModel
from jaxtalk.models.layers.torch_nn import dense

Dtype = Any

NUM_VERTICES = 468  # MediaPipe's canonical face mesh without the 10 iris points


def audio_features(
    encoder: HubertModel, wav, frames: int, only_last: bool, train: bool
) -> jnp.ndarray:
    """wav2vec2 features at `frames` steps: the last hidden state (the release's setting,
    `only_last_fetures: True`) or the mean of every hidden state."""
    states = encoder(wav, train=train, frames=frames)
    return states[-1] if only_last else sum(states) / len(states)


class Audio2Mesh(nn.Module):
    """Raw normalised 16 kHz audio (B, samples) -> vertex offsets (B, frames, out_dim)."""

    audio: HubertConfig = WAV2VEC2_BASE
    latent_dim: int = 512
    out_dim: int = NUM_VERTICES * 3
    only_last_features: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, wav, frames: int, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        encoder = HubertModel(self.audio, name="audio_encoder", **kw)
        x = audio_features(encoder, wav, frames, self.only_last_features, train)
        x = dense(self.latent_dim, ("embed", "mlp"), "in_fn", **kw)(x)
        return dense(
            self.out_dim,
            ("mlp", "embed"),
            "out_fn",
            kernel_init=nn.initializers.zeros_init(),  # the release starts from "no offset"
            **kw,
        )(x)
