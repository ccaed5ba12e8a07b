"""PyTorch-semantics building blocks, written once for every family and metric net.

Linear / Conv / LayerNorm / BatchNorm / MaxPool2d as Flax constructors and modules with
the project's logical axis names on every param. Param names are flax's (`kernel`, `bias`,
`scale`; BatchNorm running stats `mean`, `var` in `batch_stats`), so the converters in
jaxtalk/convert map them one rule per key.

- `torch_kernel_init`: PyTorch's default Linear/Conv kernel init,
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)); `torch_uniform_init(n)` is the same bound for any
  tensor (torch.nn.Linear's bias, torch.nn.LSTM's every tensor), `TorchLinear` uses it for
  kernel and bias.
- `lecun_kernel_init`: the init the metric nets were written with (they are only ever
  loaded from released weights).
- `dense`, `conv`, `conv1d`, `layer_norm`, `group_norm`: constructors (zero bias init).
- `batch_norm`: inference-mode BatchNorm (metric nets); `TorchBatchNorm`: a trainable one
  with torch.nn.BatchNorm's running-statistics update.
- `max_pool`: torch.nn.MaxPool2d, ceil_mode included.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers import conv_kernel_grad

Dtype = Any

BATCH_NORM_EPS = 1e-5

# PyTorch's default Linear/Conv initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
lecun_kernel_init = nn.initializers.lecun_normal()


def torch_uniform_init(n: int):
    """U(-1/sqrt(n), 1/sqrt(n)) for any shape (nn.Linear with n = fan_in, nn.LSTM with n = H)."""
    bound = 1.0 / np.sqrt(n)  # equals 1 / n ** 0.5 for every n < 5579

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class TorchLinear(nn.Module):
    """nn.Linear with its default init; kernel (in, out)."""

    features: int
    kernel_axes: Sequence[str | None] = ("embed", "mlp")
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = torch_uniform_init(x.shape[-1])
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, tuple(self.kernel_axes)),
            (x.shape[-1], self.features),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(init, (self.kernel_axes[-1],)),
            (self.features,),
            self.param_dtype,
        )
        return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


def dense(
    features: int,
    axes: tuple = ("embed", "mlp"),
    name: str | None = None,
    use_bias: bool = True,
    *,
    kernel_init=torch_kernel_init,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Dense:
    """A Dense with logical axis names on its kernel (`axes`) and bias (`axes[-1]`)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[-1],)),
        name=name,
    )


def conv(
    features: int,
    kernel: int | tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding=0,
    use_bias: bool = True,
    name: str | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    feature_group_count: int = 1,
    kernel_init=torch_kernel_init,
) -> nn.Conv:
    """A PyTorch-style Conv (symmetric integer padding) as a channels-last flax Conv; an
    integer `kernel` means a square 2-D one."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    ndim = len(kernel)
    stride = (stride,) * ndim if isinstance(stride, int) else tuple(stride)
    if isinstance(padding, int):
        padding = ((padding, padding),) * ndim
    elif isinstance(padding, tuple) and all(isinstance(p, int) for p in padding):
        padding = tuple((p, p) for p in padding)
    return nn.Conv(
        features,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=use_bias,
        feature_group_count=feature_group_count,
        conv_general_dilated=conv_kernel_grad.conv_general_dilated,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        kernel_init=nn.with_logical_partitioning(
            kernel_init, (None,) * ndim + ("conv_in", "conv_out")
        ),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
    )


def conv1d(
    features: int,
    kernel_size: int,
    name: str,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.Conv:
    """PyTorch-style Conv1d on (B, T, C): symmetric zero padding, optional groups."""
    return conv(
        features,
        (kernel_size,),
        stride=stride,
        padding=padding,
        use_bias=use_bias,
        name=name,
        dtype=dtype,
        param_dtype=param_dtype,
        feature_group_count=groups,
    )


def _norm_inits() -> dict:
    """A norm's affine initialisers (ones, zeros) with the `norm` logical axis."""
    return dict(
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
    )


def layer_norm(
    name: str,
    eps: float = 1e-5,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    fast_variance: bool = True,
) -> nn.LayerNorm:
    """nn.LayerNorm over the last axis (PyTorch's default eps 1e-5); `fast_variance=False`
    computes the variance as PyTorch does, from the centred values, not E[x^2] - E[x]^2."""
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=fast_variance,
        name=name,
        **_norm_inits(),
    )


def group_norm(
    name: str,
    groups: int = 32,
    eps: float = 1e-5,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
) -> nn.GroupNorm:
    """nn.GroupNorm over the last axis with `groups` groups (statistics over every other
    non-batch axis, as torch's over (C/G, H, W)); the two-pass variance, as torch computes it."""
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        use_fast_variance=False,
        name=name,
        **_norm_inits(),
    )


def batch_norm(
    name: str | None = None,
    epsilon: float = BATCH_NORM_EPS,
    momentum: float = 0.9,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> nn.BatchNorm:
    """Inference-mode BatchNorm with PyTorch's default epsilon (running stats in batch_stats)."""
    return nn.BatchNorm(
        use_running_average=True,
        epsilon=epsilon,
        momentum=momentum,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        **_norm_inits(),
    )


def conv_bias(module: nn.Module, features: int, param_dtype) -> jax.Array:
    """A conv's `bias` (zeros, axis conv_out), created in `module`'s scope (call from its
    compact `__call__`), for modules that compute their conv themselves."""
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",))
    return module.param("bias", init, (features,), param_dtype)


def norm_affine(module: nn.Module, channels: int, param_dtype) -> tuple[jax.Array, jax.Array]:
    """A norm's per-channel `scale` (ones) and `bias` (zeros), created in `module`'s scope
    (call from its compact `__call__`)."""
    names = ("norm",)
    scale_init = nn.with_logical_partitioning(nn.initializers.ones_init(), names)
    bias_init = nn.with_logical_partitioning(nn.initializers.zeros_init(), names)
    return (
        module.param("scale", scale_init, (channels,), param_dtype),
        module.param("bias", bias_init, (channels,), param_dtype),
    )


class TorchBatchNorm(nn.Module):
    """BatchNorm over all axes but the last, with torch.nn.BatchNorm semantics.

    Train mode normalises with the biased batch variance and updates the running stats
    with momentum 0.1 using the *unbiased* variance (as PyTorch does; flax.linen.BatchNorm
    uses the biased one). Eval mode uses the running stats. Params `scale`, `bias`;
    `batch_stats`: `mean`, `var`.
    """

    epsilon: float = BATCH_NORM_EPS
    momentum: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        scale, bias = norm_affine(self, c, self.param_dtype)
        # Statistics in >= fp32: float32 for fp16/bf16 compute, float64 stays float64.
        hi = jnp.promote_types(self.dtype, jnp.float32)
        stats_dtype = jnp.promote_types(self.param_dtype, jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), stats_dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), stats_dtype))
        xf = x.astype(hi)
        if train:
            axes = tuple(range(x.ndim - 1))
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            if not self.is_initializing():
                n = math.prod(x.shape[:-1])
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        inv = jax.lax.rsqrt(var.astype(hi) + self.epsilon) * scale.astype(hi)
        y = (xf - mean.astype(hi)) * inv + bias.astype(hi)
        return y.astype(self.dtype)


def max_pool(
    x: jnp.ndarray, window: int, stride: int, padding: int = 0, ceil_mode: bool = False
) -> jnp.ndarray:
    """torch.nn.MaxPool2d semantics, including ceil_mode (extra right/bottom windows)."""
    pads = []
    for size in x.shape[1:3]:
        low = high = padding
        if ceil_mode:
            out = -(-(size + 2 * padding - window) // stride) + 1
            if (out - 1) * stride >= size + padding:  # a window may not start in the padding
                out -= 1
            high = (out - 1) * stride + window - size - padding
        pads.append((low, max(high, padding)))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)
