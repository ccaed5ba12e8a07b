"""Mapping rules shared by the metric-net converters (conv, linear, BatchNorm, PReLU).

Rule targets carry their collection ("params/..." or "batch_stats/..."), so one
`mapping.to_params` call against the whole variables tree checks every key and shape.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np

from jaxtalk.convert import mapping


def conv(torch_prefix: str, path: str, bias: bool = True,
         layout: mapping.Layout = mapping.CONV2D) -> list[mapping.Rule]:
    rules = [mapping.Rule(f"{torch_prefix}.weight", f"params/{path}/kernel", layout)]
    if bias:
        rules.append(mapping.Rule(f"{torch_prefix}.bias", f"params/{path}/bias"))
    return rules


def linear(torch_prefix: str, path: str, bias: bool = True) -> list[mapping.Rule]:
    return conv(torch_prefix, path, bias, mapping.LINEAR)


def batch_norm(torch_prefix: str, path: str) -> list[mapping.Rule]:
    return [mapping.Rule(f"{torch_prefix}.weight", f"params/{path}/scale"),
            mapping.Rule(f"{torch_prefix}.bias", f"params/{path}/bias"),
            mapping.Rule(f"{torch_prefix}.running_mean", f"batch_stats/{path}/mean"),
            mapping.Rule(f"{torch_prefix}.running_var", f"batch_stats/{path}/var")]


def prelu(torch_prefix: str, path: str) -> list[mapping.Rule]:
    return [mapping.Rule(f"{torch_prefix}.weight", f"params/{path}/alpha")]


def is_batch_counter(key: str) -> bool:
    """BatchNorm's num_batches_tracked carries nothing inference needs."""
    return key.endswith(".num_batches_tracked")


def variable_shapes(module: nn.Module, *example_inputs) -> dict:
    """{"params": ..., "batch_stats": ...} shapes, unboxed, without running the net."""
    return nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *example_inputs))


def import_variables(state: Mapping[str, np.ndarray], rules: Iterable[mapping.Rule],
                     shapes: Mapping, source: str,
                     ignore: Callable[[str], bool] = is_batch_counter) -> dict:
    return dict(mapping.to_params(state, rules, shapes, source=source, ignore=ignore))


def export_state_dict(variables: Mapping, rules: Iterable[mapping.Rule]) -> dict:
    """The released layout, with a zero num_batches_tracked beside every BatchNorm."""
    rules = list(rules)
    tree = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    state = mapping.to_state_dict(tree, rules)
    out = {}
    for key, value in state.items():
        out[key] = value
        if key.endswith(".running_var"):
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


def mirrored(shapes: Mapping, linear_modules: Iterable[str] = ()) -> list[mapping.Rule]:
    """Rules for a module tree whose names mirror the PyTorch attribute path
    ("Mixed_5b/branch1x1/conv/kernel" <-> "Mixed_5b.branch1x1.conv.weight").

    Convs, BatchNorms and (the named) linear layers are recognised by their leaves.
    """
    linear_modules = set(linear_modules)
    flat = mapping.flatten_params(shapes.get("params", {}))
    modules = sorted({path.rsplit("/", 1)[0] for path in flat})
    rules = []
    for module in modules:
        leaves = {path.rsplit("/", 1)[1] for path in flat if path.rsplit("/", 1)[0] == module}
        torch_prefix = module.replace("/", ".")
        if leaves >= {"scale", "bias"} and "kernel" not in leaves:
            rules += batch_norm(torch_prefix, module)
        elif module in linear_modules:
            rules += linear(torch_prefix, module, "bias" in leaves)
        elif "kernel" in leaves:
            rules += conv(torch_prefix, module, "bias" in leaves)
        elif leaves == {"alpha"}:
            rules += prelu(torch_prefix, module)
        else:
            raise ValueError(f"no PyTorch layout known for {module} with leaves {sorted(leaves)}")
    return rules
