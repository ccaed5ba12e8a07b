"""Random "released" state_dicts for the metric nets, built from a converter's rules."""

import jax
import numpy as np

from jaxtalk.convert import mapping


def random_state_dict(rules, shapes, rng, include_batch_counters=True):
    """Random arrays in the PyTorch layout under every rule's key (BatchNorm variances > 0)."""
    flat = mapping.flatten_params(shapes)
    sd = {}
    for rule in rules:
        shape = flat[rule.param_path].shape
        value = rng.standard_normal(shape).astype(np.float32)
        if rule.param_path.endswith("/var"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif rule.param_path.endswith("/scale"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif rule.param_path.endswith("/kernel"):
            fan_in = int(np.prod(shape[:-1]))
            value *= np.float32((1.0 / fan_in) ** 0.5)
        else:
            value *= np.float32(0.1)
        sd[rule.torch_key] = np.ascontiguousarray(rule.layout.to_torch(value))
        if include_batch_counters and rule.torch_key.endswith(".running_var"):
            sd[rule.torch_key[: -len("running_var")] + "num_batches_tracked"] = np.array(5)
    return sd


def param_count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
