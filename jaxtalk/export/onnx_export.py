"""ONNX export of an animator's inference function: a jaxpr -> ONNX translator of our own.

`export_onnx(spec, path)` takes the `ExportedFunction` an animator's `export_function()`
returns (the same one `.jaxfn` export uses), traces `spec.fn(spec.params, *inputs)` to a
jaxpr with the parameters closed over, and writes an ONNX graph (opset `OPSET`):

- Constant folding: every equation whose operands are all known (parameters, literals,
  iotas) is evaluated here with jax and stored as an initializer. Weight-only work (LIA's
  QR orthogonalisation of the motion directions, equalized-lr scales, blur kernels,
  sampling grids) therefore never reaches ONNX; the graph holds only input-dependent ops.
- Dynamic axes: a symbolic dimension of an input spec (`jax.export.symbolic_shape("T")`)
  becomes an ONNX `dim_param` of the same name; shapes that depend on it are computed in
  the graph from the input's `Shape`.
- Calls (`jit`, `custom_jvp_call`, `custom_vjp_call`, `checkpoint`) are inlined.

Why a translator of our own: jax2onnx (0.17) would downgrade orbax-checkpoint below the
range jaxtalk pins and pulls in equinox, huggingface_hub and netron; tf2onnx needs
TensorFlow through jax2tf, which jaxtalk does not install; and a jaxpr carries typed Python
parameters (no MLIR text to parse). The ops the warping families use are a short list;
an unsupported primitive is an `OnnxExportError` naming it, which is where a new family
(e.g. LivePortrait's 3-D warping) adds its translation rule to `_RULES`.

`check_onnx(path, spec)` runs the file in ONNX Runtime on random inputs and returns the
max abs difference from the jax function.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import os
from typing import Any, Callable, Sequence

import numpy as np

from jaxtalk import fs
from jaxtalk.errors import InputError

OPSET = 18  # reductions take their axes as an input from 18 on; ONNX Runtime >= 1.14
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class OnnxExportError(InputError):
    """A function that cannot be written as ONNX (an op without a translation rule)."""


# ----------------------------------------------------------------------------- the graph
class _Graph:
    """ONNX nodes and initializers under construction, with fresh value names."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._names = itertools.count()
        self.dims: dict[str, str] = {}  # symbol -> int64 [1] value holding it

    def name(self, hint: str = "v") -> str:
        return f"{hint}_{next(self._names)}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs) -> Any:
        from onnx import helper

        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, np.int64), "ints")

    def shape(self, dims: Sequence[Any]) -> str:
        """An int64 [rank] shape value for `dims` (ints or symbolic dimensions)."""
        if all(isinstance(d, (int, np.integer)) for d in dims):
            return self.ints([int(d) for d in dims])
        parts = [self.dim(d) for d in dims]
        return self.op("Concat", parts, axis=0)

    def dim(self, d: Any) -> str:
        """One dimension as an int64 [1] value: a constant, or computed from the inputs."""
        if isinstance(d, (int, np.integer)):
            return self.ints([int(d)])
        env = {s: _DimValue(self, self.dims[s]) for s in self.dims}
        try:
            value = d._evaluate(env)  # a polynomial of the input symbols
        except KeyError as e:
            raise OnnxExportError(f"dimension {d} uses a symbol no input has ({e})") from None
        return value.name if isinstance(value, _DimValue) else self.ints([int(value)])


class _DimValue:
    """An int64 [1] graph value with the arithmetic `_DimExpr._evaluate` applies."""

    def __init__(self, graph: _Graph, name: str):
        self.graph, self.name = graph, name

    def _binary(self, op: str, other) -> "_DimValue":
        other = other.name if isinstance(other, _DimValue) else self.graph.ints([int(other)])
        return _DimValue(self.graph, self.graph.op(op, [self.name, other]))

    def __add__(self, other):
        return self._binary("Add", other)

    def __mul__(self, other):
        return self._binary("Mul", other)

    def __floordiv__(self, other):
        return self._binary("Div", other)  # dimensions are non-negative: floor == trunc

    def __mod__(self, other):
        return self._binary("Mod", other)

    __radd__, __rmul__ = __add__, __mul__


# ----------------------------------------------------------------------------- values
class _Const:
    """A value known at export time (folded)."""

    def __init__(self, value):
        self.value = np.asarray(value)


def _name(graph: _Graph, value) -> str:
    """The graph value of an operand (a folded constant becomes an initializer on use)."""
    if isinstance(value, _Const):
        if not hasattr(value, "onnx_name"):
            value.onnx_name = graph.const(value.value)
        return value.onnx_name
    return value


def _static(shape) -> bool:
    return all(isinstance(d, (int, np.integer)) for d in shape)


def _same(a, b) -> bool:
    """Two dimensions (ints or symbolic) that are provably equal."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an inconclusive symbolic comparison
        return False


# ----------------------------------------------------------------------------- rules
# A rule: (graph, eqn, operand names, operand avals) -> list of output names.
Rule = Callable[..., list]
_RULES: dict[str, Rule] = {}


def rule(*names: str):
    def register(fn: Rule) -> Rule:
        for n in names:
            _RULES[n] = fn
        return fn

    return register


def _simple(op_type: str, **attrs) -> Rule:
    return lambda g, eqn, xs, avals: [g.op(op_type, xs, **attrs)]


for _prim, _op in {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "max": "Max",
    "min": "Min",
    "pow": "Pow",
    "ge": "GreaterOrEqual",
    "gt": "Greater",
    "le": "LessOrEqual",
    "lt": "Less",
    "eq": "Equal",
    "exp": "Exp",
    "log": "Log",
    "tanh": "Tanh",
    "logistic": "Sigmoid",
    "sqrt": "Sqrt",
    "neg": "Neg",
    "abs": "Abs",
    "floor": "Floor",
    "ceil": "Ceil",
    "sign": "Sign",
    "erf": "Erf",
    "sin": "Sin",
    "cos": "Cos",
    "stop_gradient": "Identity",
    "copy": "Identity",
    "copy_p": "Identity",
    "reduce_precision": "Identity",
    "optimization_barrier": "Identity",
}.items():
    _RULES[_prim] = _simple(_op)


@rule("and", "or", "not")
def _logical(g, eqn, xs, avals):
    kind = eqn.primitive.name
    if np.dtype(avals[0].dtype) == np.bool_:
        return [g.op(kind.capitalize(), xs)]
    return [g.op("Bitwise" + kind.capitalize(), xs)]


@rule("ne")
def _ne(g, eqn, xs, avals):
    return [g.op("Not", [g.op("Equal", xs)])]


@rule("rsqrt")
def _rsqrt(g, eqn, xs, avals):
    return [g.op("Reciprocal", [g.op("Sqrt", xs)])]


@rule("erfc")
def _erfc(g, eqn, xs, avals):  # exact GELU's 0.5 * erfc(-x / sqrt 2) (LivePortrait's M)
    one = g.const(np.ones((), np.dtype(avals[0].dtype)))
    return [g.op("Sub", [one, g.op("Erf", xs)])]


@rule("square")
def _square(g, eqn, xs, avals):
    return [g.op("Mul", [xs[0], xs[0]])]


@rule("integer_pow")
def _integer_pow(g, eqn, xs, avals):
    exponent = np.asarray(eqn.params["y"], np.dtype(avals[0].dtype))
    return [g.op("Pow", [xs[0], g.const(exponent)])]


@rule("select_n")
def _select_n(g, eqn, xs, avals):
    if len(xs) != 3:
        raise OnnxExportError(f"select_n with {len(xs) - 1} cases (ONNX Where takes 2)")
    pred = xs[0]
    if np.dtype(avals[0].dtype) != np.bool_:
        pred = g.op("Cast", [pred], to=_onnx_dtype(np.bool_))
    return [g.op("Where", [pred, xs[2], xs[1]])]  # select_n picks case[pred]


@rule("clamp")
def _clamp(g, eqn, xs, avals):
    lo, x, hi = xs
    return [g.op("Max", [g.op("Min", [x, hi]), lo])]


def _onnx_dtype(dtype) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


@rule("convert_element_type")
def _convert(g, eqn, xs, avals):
    return [g.op("Cast", xs, to=_onnx_dtype(eqn.params["new_dtype"]))]


@rule("broadcast_in_dim")
def _broadcast_in_dim(g, eqn, xs, avals):
    shape, kept = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    x = xs[0]
    new_axes = [i for i in range(len(shape)) if i not in kept]
    if new_axes:
        x = g.op("Unsqueeze", [x, g.ints(new_axes)])
    source = [1] * len(shape)
    for src_axis, out_axis in enumerate(kept):
        source[out_axis] = avals[0].shape[src_axis]
    # Expand broadcasts numpy-style: 1 keeps an axis the operand already has in full.
    target = [1 if _same(s, d) else d for s, d in zip(source, shape)]
    if all(_same(t, 1) for t in target):
        return [x]
    return [g.op("Expand", [x, g.shape(target)])]


@rule("reshape")
def _reshape(g, eqn, xs, avals):
    if eqn.params.get("dimensions") is not None:
        raise OnnxExportError("reshape with a dimension permutation")
    return [g.op("Reshape", [xs[0], g.shape(eqn.params["new_sizes"])])]


def _with_axes(op_type: str) -> Rule:
    """An op taking the equation's `dimensions` as its axes input."""
    return lambda g, eqn, xs, avals: [g.op(op_type, [xs[0], g.ints(eqn.params["dimensions"])])]


_RULES["squeeze"] = _with_axes("Squeeze")
_RULES["expand_dims"] = _with_axes("Unsqueeze")


@rule("transpose")
def _transpose(g, eqn, xs, avals):
    return [g.op("Transpose", xs, perm=list(eqn.params["permutation"]))]


@rule("rev")
def _rev(g, eqn, xs, avals):
    axes = list(eqn.params["dimensions"])
    n = len(axes)
    return [
        g.op(
            "Slice",
            [xs[0], g.ints([-1] * n), g.ints([INT64_MIN] * n), g.ints(axes), g.ints([-1] * n)],
        )
    ]


def _slice(g, x, shape, starts, limits, strides=None):
    """x[starts:limits:strides] over every axis; a limit equal to the axis size is 'to the end'
    (so symbolic axes taken whole need no shape arithmetic)."""
    axes, begin, end, step = [], [], [], []
    for axis, (size, s, e) in enumerate(zip(shape, starts, limits)):
        st = 1 if strides is None else int(strides[axis])
        if _same(s, 0) and _same(e, size) and st == 1:
            continue
        if not isinstance(s, (int, np.integer)):
            raise OnnxExportError(f"slice starting at a symbolic index {s}")
        axes.append(axis)
        begin.append(int(s))
        end.append(INT64_MAX if _same(e, size) else int(e))
        step.append(st)
    if not axes:
        return x
    return g.op("Slice", [x, g.ints(begin), g.ints(end), g.ints(axes), g.ints(step)])


@rule("slice")
def _slice_rule(g, eqn, xs, avals):
    p = eqn.params
    shape = avals[0].shape
    return [_slice(g, xs[0], shape, p["start_indices"], p["limit_indices"], p["strides"])]


@rule("pad")
def _pad(g, eqn, xs, avals):
    config = eqn.params["padding_config"]
    if any(int(interior) for _, _, interior in config):
        raise OnnxExportError("pad with interior padding")
    shape = avals[0].shape
    starts = [max(0, -int(lo)) for lo, _, _ in config]
    limits = [d if int(hi) >= 0 else d + int(hi) for (_, hi, _), d in zip(config, shape)]
    x = _slice(g, xs[0], shape, starts, limits)
    pads = [max(0, int(lo)) for lo, _, _ in config] + [max(0, int(hi)) for _, hi, _ in config]
    if not any(pads):
        return [x]
    return [g.op("Pad", [x, g.ints(pads), xs[1]], mode="constant")]


@rule("concatenate")
def _concatenate(g, eqn, xs, avals):
    return [g.op("Concat", xs, axis=int(eqn.params["dimension"]))]


@rule("stack")
def _stack(g, eqn, xs, avals):
    axis = int(eqn.params["axis"])
    return [g.op("Concat", [g.op("Unsqueeze", [x, g.ints([axis])]) for x in xs], axis=axis)]


@rule("split")
def _split(g, eqn, xs, avals):
    sizes, axis = eqn.params["sizes"], int(eqn.params["axis"])
    return g_list(g.op("Split", [xs[0], g.ints(sizes)], outputs=len(sizes), axis=axis))


def g_list(out) -> list:
    return out if isinstance(out, list) else [out]


@rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
def _reduce(g, eqn, xs, avals):
    op = {"sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd"}
    kind = op[eqn.primitive.name.split("_")[1]]
    return [g.op(kind, [xs[0], g.ints(eqn.params["axes"])], keepdims=0)]


@rule("reduce_window_sum")
def _reduce_window_sum(g, eqn, xs, avals):
    """Window sums (avg_pool's numerator) as AveragePool x window size: the windowed axes
    moved last, all others merged into the pool's batch axis (channels 1)."""
    p = eqn.params
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        raise OnnxExportError("reduce_window_sum with dilation")
    shape, out_shape = avals[0].shape, eqn.outvars[0].aval.shape
    window = [
        i
        for i, (k, s, pad) in enumerate(
            zip(p["window_dimensions"], p["window_strides"], p["padding"])
        )
        if k != 1 or s != 1 or tuple(pad) != (0, 0)
    ]
    if not window:
        return [xs[0]]
    other = [i for i in range(len(shape)) if i not in window]
    perm = other + window
    x = g.op("Transpose", [xs[0]], perm=perm)
    batch = functools.reduce(operator.mul, [shape[i] for i in other], 1)
    x = g.op("Reshape", [x, g.shape([batch, 1, *[shape[i] for i in window]])])
    pads = [int(p["padding"][i][0]) for i in window] + [int(p["padding"][i][1]) for i in window]
    x = g.op(
        "AveragePool",
        [x],
        kernel_shape=[int(p["window_dimensions"][i]) for i in window],
        strides=[int(p["window_strides"][i]) for i in window],
        pads=pads,
        count_include_pad=1,
    )
    size = math.prod(int(p["window_dimensions"][i]) for i in window)
    x = g.op("Mul", [x, g.const(np.asarray(size, avals[0].dtype))])
    x = g.op("Reshape", [x, g.shape([out_shape[i] for i in perm])])
    return [g.op("Transpose", [x], perm=[perm.index(i) for i in range(len(perm))])]


@rule("dot_general")
def _dot_general(g, eqn, xs, avals):
    """Any dot_general as an Einsum: batch axes, then lhs free axes, then rhs free axes."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs = [next(letters) for _ in avals[0].shape]
    rhs = [None] * len(avals[1].shape)
    for i, j in itertools.chain(zip(lb, rb), zip(lc, rc)):
        rhs[j] = lhs[i]
    rhs = [r or next(letters) for r in rhs]
    out = [lhs[i] for i in lb]
    out += [c for i, c in enumerate(lhs) if i not in lb and i not in lc]
    out += [c for j, c in enumerate(rhs) if j not in rb and j not in rc]
    equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
    return [g.op("Einsum", xs, equation=equation)]


@rule("conv_general_dilated")
def _conv(g, eqn, xs, avals):
    """Any-layout convolution as NCHW ONNX Conv between two transposes."""
    p = eqn.params
    dn = p["dimension_numbers"]
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise OnnxExportError("conv_general_dilated with lhs dilation or batch groups")
    pads = [int(lo) for lo, _ in p["padding"]] + [int(hi) for _, hi in p["padding"]]
    if any(v < 0 for v in pads):
        raise OnnxExportError("conv_general_dilated with negative padding")
    lhs = g.op("Transpose", [xs[0]], perm=list(dn.lhs_spec))
    rhs = g.op("Transpose", [xs[1]], perm=list(dn.rhs_spec))
    out = g.op(
        "Conv",
        [lhs, rhs],
        strides=list(p["window_strides"]),
        pads=pads,
        dilations=list(p["rhs_dilation"]),
        group=int(p["feature_group_count"]),
    )
    inverse = [0] * len(dn.out_spec)
    for k, axis in enumerate(dn.out_spec):
        inverse[axis] = k
    return [g.op("Transpose", [out], perm=inverse)]


@rule("gather")
def _gather(g, eqn, xs, avals, consts=None):
    """Two forms: a window at constant start indices (jnp indexing with symbolic shapes
    lowers slices to it) -> Slice; one row per index with a leading batch axis (the
    grid sampler's vmapped lookup) -> GatherND with batch_dims=1."""
    p = eqn.params
    dn = p["dimension_numbers"]
    sizes = p["slice_sizes"]
    shape = avals[0].shape
    if consts is not None and consts[1] is not None and not dn.operand_batching_dims:
        start = np.asarray(consts[1]).reshape(-1)
        if len(start) != len(dn.start_index_map):
            return [_take(g, eqn, xs, avals)]
        starts, limits = [0] * len(shape), list(shape)
        for axis, s in zip(dn.start_index_map, start.tolist()):
            s = min(max(int(s), 0), int(shape[axis]) - int(sizes[axis]))  # XLA clamps
            starts[axis], limits[axis] = s, s + int(sizes[axis])
        for axis, size in enumerate(sizes):
            if axis not in dn.start_index_map and not _same(size, shape[axis]):
                limits[axis] = size
        x = _slice(g, xs[0], shape, starts, limits)
        if dn.collapsed_slice_dims:
            x = g.op("Squeeze", [x, g.ints(list(dn.collapsed_slice_dims))])
        return [x]
    if _is_take(eqn, avals):
        return [_take(g, eqn, xs, avals)]
    if (
        tuple(dn.operand_batching_dims) == (0,)
        and tuple(dn.start_indices_batching_dims) == (0,)
        and len(shape) == 3
        and tuple(dn.collapsed_slice_dims) == (1,)
        and tuple(dn.start_index_map) == (1,)
        and tuple(dn.offset_dims) == (len(avals[1].shape) - 1,)
    ):
        index = g.op("Cast", [xs[1]], to=_onnx_dtype(np.int64))
        return [g.op("GatherND", [xs[0], index], batch_dims=1)]
    raise OnnxExportError(f"gather of this form has no ONNX rule: {dn}, slice sizes {sizes}")


def _is_take(eqn, avals) -> bool:
    """jnp.take-style indexing along one axis `a` (x[:, idx] with an index array): one
    collapsed axis, full slices elsewhere, the index batch where `a` was."""
    dn, sizes = eqn.params["dimension_numbers"], eqn.params["slice_sizes"]
    shape, batch = avals[0].shape, len(avals[1].shape) - 1
    if dn.operand_batching_dims or len(dn.start_index_map) != 1 or avals[1].shape[-1] != 1:
        return False
    (a,) = dn.start_index_map
    full = all(_same(n, shape[i]) for i, n in enumerate(sizes) if i != a)
    offsets = tuple(range(a)) + tuple(range(a + batch, batch + len(shape) - 1))
    return tuple(dn.collapsed_slice_dims) == (a,) and full and tuple(dn.offset_dims) == offsets


def _take(g, eqn, xs, avals) -> str:
    """ONNX Gather along the one indexed axis, the indices clamped as XLA clamps them."""
    (a,) = eqn.params["dimension_numbers"].start_index_map
    if not _is_take(eqn, avals):
        raise OnnxExportError(f"gather of this form has no ONNX rule: {eqn.params}")
    index = g.op("Cast", [xs[1]], to=_onnx_dtype(np.int64))
    index = g.op("Squeeze", [index, g.ints([len(avals[1].shape) - 1])])
    top = g.op("Sub", [g.dim(avals[0].shape[a]), g.ints([1])])
    index = g.op("Clip", [index, g.const(np.asarray(0, np.int64)), g.op("Squeeze", [top])])
    return g.op("Gather", [xs[0], index], axis=a)


_CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call")
_CALLS += ("checkpoint", "remat")


def _sub_jaxpr(eqn):
    """(jaxpr, consts) of a call equation, or None."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(key)
        if sub is not None:
            return (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
    raise OnnxExportError(f"{eqn.primitive.name} without a jaxpr parameter")


# ----------------------------------------------------------------------------- translation
def _fold(eqn, values: list) -> list:
    """Evaluates one equation on known operands with jax (its own implementation)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)  # jax < 0.7: a pair
    out = eqn.primitive.bind(*subfuns, *values, **params)
    out = out if eqn.primitive.multiple_results else [out]
    return [_Const(np.asarray(o)) for o in out]


def _translate(g: _Graph, jaxpr, consts: Sequence, args: Sequence) -> list:
    """Values of `jaxpr`'s outputs given its constants and inputs (graph names or _Const)."""
    from jax.extend.core import Literal

    env: dict = {}

    def read(v):
        return _Const(np.asarray(v.val, v.aval.dtype)) if isinstance(v, Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts):
        env[var] = value if isinstance(value, (_Const, str)) else _Const(value)
    for var, value in zip(jaxpr.invars, args):
        env[var] = value
    for eqn in jaxpr.eqns:
        operands = [read(v) for v in eqn.invars]
        if all(isinstance(o, _Const) for o in operands) and all(
            _static(v.aval.shape) for v in eqn.outvars
        ):
            outs = _fold(eqn, [o.value for o in operands])
        elif (sub := _sub_jaxpr(eqn)) is not None:
            outs = _translate(g, sub[0], sub[1], operands)
        elif eqn.primitive.name in _RULES:
            avals = [v.aval for v in eqn.invars]
            names = [_name(g, o) for o in operands]
            fn = _RULES[eqn.primitive.name]
            if eqn.primitive.name == "gather":
                known = [o.value if isinstance(o, _Const) else None for o in operands]
                outs = fn(g, eqn, names, avals, consts=known)
            else:
                outs = fn(g, eqn, names, avals)
        else:
            raise OnnxExportError(
                f"no ONNX rule for the jax primitive {eqn.primitive.name!r} "
                f"(add one to jaxtalk/export/onnx_export.py)"
            )
        for var, value in zip(eqn.outvars, outs):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _value_info(name: str, aval):
    from onnx import helper

    dims = [int(d) if isinstance(d, (int, np.integer)) else str(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, _onnx_dtype(aval.dtype), dims)


def to_onnx(spec, opset: int = OPSET):
    """The `ExportedFunction` `spec` as an onnx.ModelProto (see the module doc)."""
    import jax
    from onnx import helper

    closed = jax.make_jaxpr(lambda *inputs: spec.fn(spec.params, *inputs))(*spec.input_specs)
    g = _Graph()
    names = list(spec.input_names)
    for name, s in zip(names, spec.input_specs):
        for axis, d in enumerate(s.shape):
            if not isinstance(d, (int, np.integer)) and str(d) not in g.dims:
                shape = g.op("Shape", [name], start=axis, end=axis + 1)
                g.dims[str(d)] = shape
    outs = _translate(g, closed.jaxpr, closed.consts, names)
    out_names = list(spec.output_names)
    for value, name in zip(outs, out_names):
        g.nodes.append(helper.make_node("Identity", [_name(g, value)], [name]))
    used = {i for node in g.nodes for i in node.input}  # e.g. a gather's folded indices
    graph = helper.make_graph(
        g.nodes,
        "jaxtalk_" + str(spec.metadata.get("model", "function")),
        [_value_info(n, a.aval) for n, a in zip(names, closed.jaxpr.invars)],
        [_value_info(n, v.aval) for n, v in zip(out_names, closed.jaxpr.outvars)],
        initializer=[t for t in g.initializers if t.name in used],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="jaxtalk",
    )
    model.ir_version = min(model.ir_version, 10)  # what ONNX Runtime 1.2x reads
    helper.set_model_props(model, {k: str(v) for k, v in spec.metadata.items()})
    return model


def export_onnx(spec, path: str | os.PathLike, opset: int = OPSET) -> dict:
    """Writes `spec` to `path` (.onnx, local or gs://); returns a summary (ops, sizes)."""
    import onnx

    model = to_onnx(spec, opset)
    onnx.checker.check_model(model)
    path = os.fspath(path)
    data = model.SerializeToString()
    with fs.local_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    ops = sorted({n.op_type for n in model.graph.node})
    return {
        "path": path,
        "opset": opset,
        "nodes": len(model.graph.node),
        "ops": ops,
        "bytes": len(data),
    }


def shape_text(spec) -> str:
    """'(T, 5) float32': a spec's shape with its symbolic (dynamic) axes by name."""
    return f"({', '.join(str(d) for d in spec.shape)}) {np.dtype(spec.dtype)}"


def random_inputs(spec, dims: dict[str, int], seed: int = 0) -> list[np.ndarray]:
    """Inputs for `spec` with symbolic axes set from `dims` (e.g. {"T": 3}): uniform [-1, 1]."""
    rng = np.random.default_rng(seed)
    out = []
    for s in spec.input_specs:
        shape = [int(d) if isinstance(d, (int, np.integer)) else dims[str(d)] for d in s.shape]
        out.append(rng.uniform(-1, 1, shape).astype(np.dtype(s.dtype)))
    return out


def check_onnx(path: str, spec, dims: dict[str, int] | None = None, seed: int = 0) -> float:
    """Max abs difference between ONNX Runtime running `path` and jax running `spec`, on
    random inputs (symbolic axes sized by `dims`, default 3 each)."""
    import jax
    import onnxruntime as ort

    symbols = {str(d) for s in spec.input_specs for d in s.shape if not isinstance(d, int)}
    dims = {**{s: 3 for s in symbols}, **(dims or {})}
    inputs = random_inputs(spec, dims, seed)
    with fs.local_file(path) as local:
        session = ort.InferenceSession(local, providers=["CPUExecutionProvider"])
    got = session.run(None, dict(zip(spec.input_names, inputs)))
    want = jax.jit(spec.fn)(spec.params, *inputs)
    want = want if isinstance(want, (list, tuple)) else [want]
    return max(float(np.abs(np.asarray(w) - o).max()) for w, o in zip(want, got))


__all__ = [
    "OPSET",
    "OnnxExportError",
    "check_onnx",
    "export_onnx",
    "random_inputs",
    "shape_text",
    "to_onnx",
]
