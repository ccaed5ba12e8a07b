"""LPIPS v0.1 (Zhang et al. 2018) with the AlexNet or VGG16 backbone, as the lpips package.

distance = sum over backbone layers l of mean_hw( w_l . (n(f0_l) - n(f1_l))^2 ), where
n() scales each feature vector to unit length and w_l is the learned 1x1 head ("lin" l).
The module (`jaxtalk.models.metric_nets.lpips.LPIPS`) takes images in [-1, 1] like the
reference; `lpips` takes [0, 1] images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxtalk.models.metric_nets.lpips import LPIPS


def lpips(variables, prediction: jnp.ndarray, target: jnp.ndarray, net: str = "alex"):
    """LPIPS per image for NHWC images in [0, 1] (variables from `convert.lpips`)."""
    return _lpips({"params": variables["params"]}, prediction, target, net)


@functools.partial(jax.jit, static_argnames=("net",))
def _lpips(variables, prediction, target, net):
    return LPIPS(net).apply(variables, 2 * prediction - 1, 2 * target - 1)
