"""Random variables in a flax model's shapes, drawn with numpy, for tests that need some
weights rather than the model's own initialisation: only the init's shapes are traced, none
of it is compiled (a jitted init is seconds of XLA compiling on a CPU; tracing its shapes is
a fraction of that)."""

import flax.linen as nn
import jax
import numpy as np

from jaxtalk.models.param_hook import eval_shape_init

ONES = ("scale", "var")  # norm scales, running variances
ZEROS = ("bias", "mean")


def random_variables(init, *args, seed: int = 0):
    """`init(*args)`'s tree (boxed metadata removed) with fresh numpy values: ones for norm
    scales and running variances, zeros for biases and running means, and N(0, 1 / fan_in)
    for everything else (fan_in: the product of all but the last axis), which keeps
    activations at about unit scale through a stack of linear layers."""
    shapes = nn.meta.unbox(eval_shape_init(init, *args))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = getattr(path[-1], "key", "")
        if name in ONES:
            return np.ones(leaf.shape, leaf.dtype)
        if name in ZEROS:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
        return rng.normal(0.0, fan_in**-0.5, leaf.shape).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)
