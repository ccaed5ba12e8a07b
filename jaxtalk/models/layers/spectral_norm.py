"""Spectral normalisation with torch.nn.utils.spectral_norm's semantics (not flax's).

PyTorch keeps the raw weight (`weight_orig`) as the parameter and the power-iteration
vectors `weight_u` (out,) and `weight_v` (in * kh * kw,) as buffers; the weight used is
weight_orig / sigma with sigma = u^T W v, W = weight_orig viewed as (out, -1) in its
(O, I, kh, kw) layout. In training mode every forward first runs one power iteration
(v = normalize(W^T u), u = normalize(W v), normalize(x) = x / max(||x||, eps)) and stores
the new u, v; in eval mode the stored u, v are used as they are. Flax's nn.SpectralNorm
keeps sigma instead and differs in eval, hence this module.

Here `kernel` (HWIO, the params collection) is weight_orig and `u`, `v` live in the
`batch_stats` collection, with v in PyTorch's (I, kh, kw) order, so a released
state_dict maps one tensor per key without reordering and parameter counts stay those of
the trainable weights. u and v carry no gradient (PyTorch computes them under no_grad).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.conv_kernel_grad import conv_general_dilated

EPS = 1e-12


def _normalize(x, eps: float):
    return x / jnp.maximum(jnp.linalg.norm(x), eps)


def torch_matrix(kernel):
    """A (*spatial, I, O) kernel as PyTorch's weight viewed (O, I * prod(spatial))."""
    n = kernel.ndim
    return jnp.transpose(kernel, (n - 1, n - 2, *range(n - 2))).reshape(kernel.shape[-1], -1)


def spectral_normalize(module: nn.Module, kernel, train: bool, eps: float = EPS):
    """`kernel / sigma` with u, v held in `module`'s batch_stats (call from its compact
    `__call__`); `train` runs one power iteration and stores the new u, v."""
    hi = jnp.promote_types(kernel.dtype, jnp.float32)
    w = torch_matrix(kernel.astype(hi))
    out_dim, in_dim = w.shape

    def init_vector(size):
        return lambda: _normalize(jax.random.normal(module.make_rng("params"), (size,), hi), eps)

    u_var = module.variable("batch_stats", "u", init_vector(out_dim))
    v_var = module.variable("batch_stats", "v", init_vector(in_dim))
    u, v = u_var.value.astype(hi), v_var.value.astype(hi)
    if train and not module.is_initializing():
        v = _normalize(w.T @ u, eps)
        u = _normalize(w @ v, eps)
        u_var.value, v_var.value = u, v
    u, v = jax.lax.stop_gradient((u, v))  # state, not parameters: PyTorch's no_grad
    sigma = jnp.dot(u, w @ v)
    return kernel.astype(hi) / sigma


class SpectralNormConv(nn.Module):
    """torch.nn.utils.spectral_norm(nn.Conv2d(..., padding=p)) on NHWC.

    params `kernel` (weight_orig, HWIO) and `bias`; batch_stats `u`, `v`."""

    features: int
    kernel_size: int = 3
    padding: int = 1
    use_bias: bool = True
    eps: float = EPS
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                torch_nn.torch_kernel_init, (None, None, "conv_in", "conv_out")
            ),
            (k, k, x.shape[-1], self.features),
            self.param_dtype,
        )
        weight = spectral_normalize(self, kernel, train, self.eps)
        y = conv_general_dilated(
            x.astype(self.dtype),
            weight.astype(self.dtype),
            (1, 1),
            [(self.padding, self.padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if not self.use_bias:
            return y
        zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",))
        return y + self.param("bias", zeros, (self.features,), self.param_dtype).astype(y.dtype)
