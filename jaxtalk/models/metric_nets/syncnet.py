"""SyncNet v2 (joonson/syncnet_python `SyncNetModel.S`), NHWC / NDHWC, inference mode.

`audio`: MFCC windows (N, 13, 20, 1) (13 cepstra x 20 steps of 10 ms = 0.2 s);
`video`: face crops (N, 5, 224, 224, 3) (5 frames at 25 fps, BGR, 0..255, as cv2 reads them).
Both map to 1024-d embeddings whose Euclidean distance is small when lips and speech agree.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import batch_norm, conv, dense, lecun_kernel_init

# (name, out channels, kernel, stride, padding, max pool after (window, stride, padding) or
# None); torch Sequential indices are in convert/syncnet.py.
AUDIO_LAYERS = (
    ("audio_conv1", 64, (3, 3), (1, 1), (1, 1), None),  # its MaxPool2d(1, 1) is an identity
    ("audio_conv2", 192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), (0, 0))),
    ("audio_conv3", 384, (3, 3), (1, 1), (1, 1), None),
    ("audio_conv4", 256, (3, 3), (1, 1), (1, 1), None),
    ("audio_conv5", 256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), (0, 0))),
    ("audio_conv6", 512, (5, 4), (1, 1), (0, 0), None),
)
VIDEO_LAYERS = (
    ("video_conv1", 96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    ("video_conv2", 256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    ("video_conv3", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    ("video_conv4", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    ("video_conv5", 256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    ("video_conv6", 512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),
)


class _Stream(nn.Module):
    """conv -> BN -> ReLU (-> max pool) layers, flatten, then Linear-BN-ReLU-Linear."""

    layers: tuple
    prefix: str
    embedding_dim: int = 1024
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ckw = dict(kw, kernel_init=lecun_kernel_init)  # conv / dense
        x = x.astype(self.dtype)
        for name, width, kernel, stride, padding, pool in self.layers:
            layer = conv(width, kernel, stride=stride, padding=tuple(padding), name=name, **ckw)
            x = nn.relu(batch_norm(name=name.replace("conv", "bn"), **kw)(layer(x)))
            if pool is not None:
                window, pool_stride, pool_padding = pool
                x = nn.max_pool(
                    x, window, strides=pool_stride, padding=tuple((p, p) for p in pool_padding)
                )
        x = x.reshape(x.shape[0], -1)  # spatial size is 1 here, so the order is the torch one
        x = dense(512, name=f"{self.prefix}_fc1", **ckw)(x)
        x = nn.relu(batch_norm(name=f"{self.prefix}_fc_bn", **kw)(x))
        return dense(self.embedding_dim, name=f"{self.prefix}_fc2", axes=("mlp", "embed"), **ckw)(x)


class SyncNet(nn.Module):
    embedding_dim: int = 1024
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def setup(self):
        kw = dict(embedding_dim=self.embedding_dim, dtype=self.dtype, param_dtype=self.param_dtype)
        self.audio = _Stream(AUDIO_LAYERS, "audio", **kw)
        self.video = _Stream(VIDEO_LAYERS, "video", **kw)

    def embed_audio(self, mfcc_windows: jnp.ndarray) -> jnp.ndarray:
        return self.audio(mfcc_windows)

    def embed_video(self, clips: jnp.ndarray) -> jnp.ndarray:
        return self.video(clips)

    def __call__(self, mfcc_windows, clips):
        return self.embed_audio(mfcc_windows), self.embed_video(clips)
