"""CSIM: cosine similarity of ArcFace (IResNet-100) identity embeddings.

Inputs are face crops in [0, 1], NHWC, aligned as ArcFace expects (the 5-point
similarity transform to 112x112); other sizes are resized bilinearly to 112x112 first.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtalk.models.metric_nets.iresnet import DEPTHS, IResNet

INPUT_SIZE = 112


def embed(variables, faces: jnp.ndarray, arch: str = "iresnet100") -> jnp.ndarray:
    """(N, H, W, 3) faces in [0, 1] -> (N, 512) unit-length embeddings.

    `arch`: a name in `nets.iresnet.DEPTHS` or the blocks per stage.
    """
    depths = DEPTHS[arch] if isinstance(arch, str) else tuple(arch)
    return _embed({k: variables[k] for k in ("params", "batch_stats")}, faces, depths)


@functools.partial(jax.jit, static_argnames=("depths",))
def _embed(variables, faces, depths):
    faces = faces.astype(jnp.float32)
    if faces.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        faces = jax.image.resize(
            faces, (faces.shape[0], INPUT_SIZE, INPUT_SIZE, faces.shape[3]), "bilinear"
        )
    x = IResNet(depths).apply(variables, (faces - 0.5) / 0.5)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def csim(
    variables, prediction: jnp.ndarray, reference: jnp.ndarray, arch: str = "iresnet100"
) -> jnp.ndarray:
    """Cosine similarity per pair of faces, (N,)."""
    return jnp.sum(embed(variables, prediction, arch) * embed(variables, reference, arch), -1)
