"""Multi-layer unidirectional LSTM with torch.nn.LSTM semantics, batch-first (B, T, C).

Per layer l the params mirror PyTorch's `weight_ih_l{l}`, `weight_hh_l{l}`, `bias_ih_l{l}`,
`bias_hh_l{l}` (kernels stored transposed, (in, 4H) and (H, 4H)); the 4H axis is ordered
by gates (input, forget, cell candidate g, output) and both biases are added:

    gates = x W_ih + b_ih + h W_hh + b_hh;  i, f, g, o = split(gates, 4)
    c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')

Initial states are zeros. The input projection of all time steps is one matmul; only the
recurrent part runs in a `lax.scan` over time.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import torch_uniform_init

Dtype = Any


def lstm_recurrence(input_gates, hidden_kernel, hidden_size: int):
    """Runs the recurrence given the precomputed x W_ih + b_ih + b_hh, (B, T, 4H) -> (B, T, H)."""
    b = input_gates.shape[0]
    zeros = jnp.zeros((b, hidden_size), input_gates.dtype)

    def step(carry, gates_t):
        h, c = carry
        gates = gates_t + h @ hidden_kernel
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(input_gates, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


class LSTMLayer(nn.Module):
    hidden_size: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        h4 = 4 * self.hidden_size
        init = torch_uniform_init(self.hidden_size)
        input_kernel = self.param(
            "input_kernel",
            nn.with_logical_partitioning(init, ("embed", "mlp")),
            (x.shape[-1], h4),
            self.param_dtype,
        )
        hidden_kernel = self.param(
            "hidden_kernel",
            nn.with_logical_partitioning(init, (None, "mlp")),
            (self.hidden_size, h4),
            self.param_dtype,
        )
        input_bias = self.param(
            "input_bias", nn.with_logical_partitioning(init, ("mlp",)), (h4,), self.param_dtype
        )
        hidden_bias = self.param(
            "hidden_bias", nn.with_logical_partitioning(init, ("mlp",)), (h4,), self.param_dtype
        )
        x = x.astype(self.dtype)
        gates = x @ input_kernel.astype(self.dtype) + (input_bias + hidden_bias).astype(self.dtype)
        return lstm_recurrence(gates, hidden_kernel.astype(self.dtype), self.hidden_size)


class LSTM(nn.Module):
    """Stacked LSTM: (B, T, C_in) -> outputs of the last layer (B, T, hidden_size)."""

    hidden_size: int
    num_layers: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for layer in range(self.num_layers):
            x = LSTMLayer(self.hidden_size, self.dtype, self.param_dtype, name=f"layer_{layer}")(x)
        return x
