"""Conv / dense constructors with the project's logical axis names, shared by the metric nets."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

CONV_KERNEL_AXES = (None, None, "conv_in", "conv_out")


def conv(features: int, kernel: int | tuple[int, int], *, stride: int | tuple[int, int] = 1,
         padding=0, use_bias: bool = True, name: str | None = None,
         dtype=jnp.float32, param_dtype=jnp.float32, feature_group_count: int = 1) -> nn.Conv:
    """A PyTorch-style Conv2d (symmetric integer padding) as an NHWC flax Conv."""
    kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
    stride = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    elif isinstance(padding, tuple) and all(isinstance(p, int) for p in padding):
        padding = tuple((p, p) for p in padding)
    return nn.Conv(features, kernel, strides=stride, padding=padding, use_bias=use_bias,
                   feature_group_count=feature_group_count, dtype=dtype,
                   param_dtype=param_dtype, name=name,
                   kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                            CONV_KERNEL_AXES),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                          ("conv_out",)))


def dense(features: int, *, use_bias: bool = True, name: str | None = None,
          axes=("embed", "mlp"), dtype=jnp.float32, param_dtype=jnp.float32) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           (axes[1],)))


def batch_norm(name: str | None = None, epsilon: float = 1e-5, momentum: float = 0.9,
               dtype=jnp.float32, param_dtype=jnp.float32) -> nn.BatchNorm:
    """Inference-mode BatchNorm with PyTorch's default epsilon (running stats in batch_stats)."""
    return nn.BatchNorm(use_running_average=True, epsilon=epsilon, momentum=momentum,
                        dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("norm",)))


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
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
