"""A toy portrait model: the driving frame's colours blended into the source by two convs."""

import flax.linen as nn
import jax.numpy as jnp

CONV_KERNEL = (None, None, "conv_in", "conv_out")


class ToyPortrait(nn.Module):
    features: int = 8
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def _conv(self, features, name):
        return nn.Conv(
            features,
            (3, 3),
            padding=1,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), CONV_KERNEL),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
            name=name,
        )

    @nn.compact
    def __call__(self, source, driving):
        """source, driving: (N, H, W, 3) in [-1, 1] -> (N, H, W, 3) in [-1, 1]."""
        h = nn.relu(self._conv(self.features, "net_0")(jnp.concatenate([source, driving], -1)))
        return jnp.tanh(source + self._conv(3, "net_2")(h))
