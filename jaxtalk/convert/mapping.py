"""Key-complete, shape-checked mapping between PyTorch state_dicts and Flax params.

A converter for one release is a list of `Rule`s: which state_dict key goes to which
param path, and the layout change between them (conv OIHW <-> HWIO, linear (O,I) <->
(I,O), ...). `to_params` applies the rules and fails loudly on any missing or unexpected
key or wrong shape; `to_state_dict` applies them backwards, so export is exact.

Shared by every converter, written once here: the rule builders for torch modules
(`linear`, `conv`, `conv1d`, `norm`, `running_stats`, `batch_norm`, `prelu`), the
state_dict helpers (`count_indices`, `is_batch_counter`, `overlay`) and, for networks converted as a
whole variables tree (rule targets carrying their collection, "params/..." or
"batch_stats/..."), `variable_shapes`, `import_variables`, `export_state_dict`, `mirrored`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from jaxtalk.errors import InputError
from jaxtalk.models.param_hook import eval_shape_init

Array = np.ndarray


@dataclasses.dataclass(frozen=True)
class Layout:
    """A pair of inverse array transforms: PyTorch layout -> Flax layout and back."""

    name: str
    to_flax: Callable[[Array], Array]
    to_torch: Callable[[Array], Array]


IDENTITY = Layout("identity", lambda w: w, lambda w: w)
LINEAR = Layout("linear", lambda w: w.T, lambda w: w.T)
CONV1D = Layout("conv1d", lambda w: w.transpose(2, 1, 0), lambda w: w.transpose(2, 1, 0))
CONV2D = Layout("conv2d", lambda w: w.transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1))
CONV3D = Layout(
    "conv3d", lambda w: w.transpose(2, 3, 4, 1, 0), lambda w: w.transpose(4, 3, 0, 1, 2)
)
# ConvTranspose2d weights are (I, O, H, W) and flax's ConvTranspose (transpose_kernel=False)
# correlates, so the kernel is also flipped spatially.
CONV_TRANSPOSE2D = Layout(
    "conv_transpose2d",
    lambda w: w.transpose(2, 3, 0, 1)[::-1, ::-1],
    lambda w: w[::-1, ::-1].transpose(2, 3, 0, 1),
)


def reshape(shape_flax: tuple[int, ...], shape_torch: tuple[int, ...]) -> Layout:
    """A pure reshape, e.g. a (1, C, 1, 1) bias stored as (C,)."""
    return Layout(
        f"reshape{shape_flax}", lambda w: w.reshape(shape_flax), lambda w: w.reshape(shape_torch)
    )


@dataclasses.dataclass(frozen=True)
class Rule:
    torch_key: str
    param_path: str  # '/'-joined path in the params tree, e.g. 'encoder/conv1/kernel'
    layout: Layout = IDENTITY


class ConversionError(InputError):
    """A state_dict that does not match the release layout; lists every problem."""


def _fail(source: str, problems: list[str]) -> None:
    if problems:
        shown = "\n  ".join(problems[:40])
        more = f"\n  ... and {len(problems) - 40} more" if len(problems) > 40 else ""
        raise ConversionError(f"{source}: {len(problems)} problem(s):\n  {shown}{more}")


def flatten_params(params: Mapping) -> dict[str, Any]:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(params)).items()}


def to_params(
    state_dict: Mapping[str, Any],
    rules: Iterable[Rule],
    reference: Mapping,
    source: str = "state_dict",
    ignore: Callable[[str], bool] = lambda k: False,
    dtype=np.float32,
) -> dict:
    """Builds a params tree shaped like `reference` (a params tree or its eval_shape).

    Every state_dict key must be used by a rule (or ignored by `ignore`, e.g. for
    buffers that carry no information such as BatchNorm's num_batches_tracked), every
    rule must find its key, and every reference param must be produced with its shape.
    A float tensor already of `dtype` whose layout needs no copy is used as it is, so a
    param may be a (read-only) view of `state_dict`'s array.
    """
    rules = list(rules)
    expected = {k: tuple(v.shape) for k, v in flatten_params(reference).items()}
    problems, out, used = [], {}, set()
    for rule in rules:
        if rule.torch_key not in state_dict:
            problems.append(f"missing key {rule.torch_key!r} (for {rule.param_path})")
            continue
        used.add(rule.torch_key)
        value = np.asarray(rule.layout.to_flax(np.asarray(state_dict[rule.torch_key])))
        if rule.param_path not in expected:
            problems.append(f"rule target {rule.param_path!r} is not a model parameter")
        elif value.shape != expected[rule.param_path]:
            problems.append(
                f"{rule.torch_key!r}: shape {tuple(np.shape(state_dict[rule.torch_key]))} "
                f"-> {value.shape} ({rule.layout.name}) but {rule.param_path} is "
                f"{expected[rule.param_path]}"
            )
        elif rule.param_path in out:
            problems.append(f"{rule.param_path} is written by two rules")
        else:
            # a copy only where the dtype or the layout needs one (releases are GBs)
            out[rule.param_path] = (
                np.asarray(value, dtype, order="C") if value.dtype.kind == "f" else value
            )
    problems += [
        f"unexpected key {k!r} with shape {tuple(np.shape(v))}"
        for k, v in state_dict.items()
        if k not in used and not ignore(k)
    ]
    problems += [
        f"parameter {p} {s} has no source key"
        for p, s in expected.items()
        if p not in out and not any(r.param_path == p for r in rules)
    ]
    _fail(source, problems)
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()})


def to_state_dict(params: Mapping, rules: Iterable[Rule]) -> dict[str, np.ndarray]:
    """Applies the rules backwards: the released state_dict layout, ordered as the rules."""
    flat = flatten_params(jax.device_get(params))
    rules = list(rules)
    _fail(
        "params",
        [f"no rule writes back {p}" for p in flat if p not in {r.param_path for r in rules}],
    )
    return {
        r.torch_key: np.ascontiguousarray(r.layout.to_torch(np.asarray(flat[r.param_path])))
        for r in rules
    }


# ----------------------------------------------------------------------------- rule builders
# `path` is the full target path ("encoder/fc" or, in a variables tree, "params/encoder/fc").


def conv(torch_prefix: str, path: str, bias: bool = True, layout: Layout = CONV2D) -> list[Rule]:
    rules = [Rule(f"{torch_prefix}.weight", f"{path}/kernel", layout)]
    if bias:
        rules.append(Rule(f"{torch_prefix}.bias", f"{path}/bias"))
    return rules


def conv1d(torch_prefix: str, path: str, bias: bool = True) -> list[Rule]:
    return conv(torch_prefix, path, bias, CONV1D)


def linear(torch_prefix: str, path: str, bias: bool = True) -> list[Rule]:
    return conv(torch_prefix, path, bias, LINEAR)


def norm(torch_prefix: str, path: str) -> list[Rule]:
    """LayerNorm / GroupNorm / BatchNorm affine params: weight -> scale, bias -> bias."""
    return [
        Rule(f"{torch_prefix}.weight", f"{path}/scale"),
        Rule(f"{torch_prefix}.bias", f"{path}/bias"),
    ]


def running_stats(torch_prefix: str, path: str) -> list[Rule]:
    """BatchNorm running statistics (the `batch_stats` collection)."""
    return [
        Rule(f"{torch_prefix}.running_mean", f"{path}/mean"),
        Rule(f"{torch_prefix}.running_var", f"{path}/var"),
    ]


def batch_norm(torch_prefix: str, path: str) -> list[Rule]:
    """A whole BatchNorm in a variables tree: params/{path} and batch_stats/{path}."""
    return norm(torch_prefix, f"params/{path}") + running_stats(torch_prefix, f"batch_stats/{path}")


def prelu(torch_prefix: str, path: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"{path}/alpha")]


# ----------------------------------------------------------------------------- state_dicts


def count_indices(state_dict: Mapping, pattern: str) -> int:
    """1 + the largest integer the regex's first group matches in a key (0 if none)."""
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def is_batch_counter(key: str) -> bool:
    """BatchNorm's num_batches_tracked carries nothing inference needs."""
    return key.endswith(".num_batches_tracked")


def overlay(state_dict: Mapping[str, Array], kept: Mapping[str, Array]) -> dict[str, Array]:
    """`state_dict` with the tensors an import kept (buffers, counters, extra keys, exactly
    as read) written over their keys in place; kept keys it lacks are appended."""
    out = dict(state_dict)
    out.update({k: np.asarray(v) for k, v in kept.items()})
    return out


def variable_shapes(module: nn.Module, *example_inputs) -> dict:
    """{"params": ..., "batch_stats": ...} shapes, unboxed, without running the net.

    Remembered per module (its fields) and input shapes: tracing a release-size network (a
    full SD UNet: a second or more) is then done once per process, not once per import,
    export or check of the same model. Each call gets its own copy of the tree's containers."""
    inputs = tuple(  # arrays by shape; anything else (a frame count) is passed as is
        jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x
        for x in example_inputs
    )
    try:
        shapes = _cached_shapes(module, inputs)
    except TypeError:  # a field that cannot be hashed (a dict, say): traced every time
        shapes = _traced_shapes(module, inputs)
    return jax.tree.map(lambda x: x, shapes)


def _traced_shapes(module: nn.Module, inputs: tuple) -> dict:
    traced = [isinstance(x, jax.ShapeDtypeStruct) for x in inputs]

    def init(rng, *arrays):  # the other inputs (a frame count) stay Python values
        given = iter(arrays)
        return module.init(rng, *(next(given) if t else x for t, x in zip(traced, inputs)))

    arrays = [x for t, x in zip(traced, inputs) if t]
    return nn.unbox(eval_shape_init(init, jax.random.PRNGKey(0), *arrays))


_cached_shapes = functools.lru_cache(maxsize=32)(_traced_shapes)


def import_variables(
    state: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    shapes: Mapping,
    source: str,
    ignore: Callable[[str], bool] = is_batch_counter,
) -> dict:
    return dict(to_params(state, rules, shapes, source=source, ignore=ignore))


def export_state_dict(variables: Mapping, rules: Iterable[Rule]) -> dict:
    """The released layout, with a zero num_batches_tracked beside every BatchNorm."""
    rules = list(rules)
    tree = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
    state = to_state_dict(tree, rules)
    out = {}
    for key, value in state.items():
        out[key] = value
        if key.endswith(".running_var"):
            out[key[: -len("running_var")] + "num_batches_tracked"] = np.array(0, np.int64)
    return out


def mirrored(shapes: Mapping, linear_modules: Iterable[str] = ()) -> list[Rule]:
    """Rules for a module tree whose names mirror the PyTorch attribute path
    ("Mixed_5b/branch1x1/conv/kernel" <-> "Mixed_5b.branch1x1.conv.weight").

    Convs, BatchNorms and (the named) linear layers are recognised by their leaves.
    """
    linear_modules = set(linear_modules)
    flat = flatten_params(shapes.get("params", {}))
    modules = sorted({path.rsplit("/", 1)[0] for path in flat})
    rules = []
    for module in modules:
        leaves = {path.rsplit("/", 1)[1] for path in flat if path.rsplit("/", 1)[0] == module}
        torch_prefix = module.replace("/", ".")
        if leaves >= {"scale", "bias"} and "kernel" not in leaves:
            rules += batch_norm(torch_prefix, module)
        elif module in linear_modules:
            rules += linear(torch_prefix, f"params/{module}", "bias" in leaves)
        elif "kernel" in leaves:
            rules += conv(torch_prefix, f"params/{module}", "bias" in leaves)
        elif leaves == {"alpha"}:
            rules += prelu(torch_prefix, f"params/{module}")
        else:
            raise ValueError(f"no PyTorch layout known for {module} with leaves {sorted(leaves)}")
    return rules
