"""An ONNX model file -> a pure JAX function and its weights, for the small CNNs releases ship
as ONNX only (LivePortrait's 203-point landmark.onnx, InsightFace's detectors).

    fn = onnx_graph.load("landmark.onnx")
    outputs = jax.jit(fn.apply)(fn.params, x)   # a tuple, in the graph's output order

The graph is evaluated node by node in its own layout (NCHW, as the file declares) with
jnp / lax versions of the ops. Floating-point tensors the file stores (initializers and
Constant nodes with more than one element) become `params`, a flat dict by tensor name, so
jit, device placement and donation work as for any params tree; integer tensors, scalars
and anything computed only from them and from shapes (Shape -> Gather -> Concat -> Reshape)
stay numpy values, evaluated once while tracing, so the function has static shapes.

The file is untrusted data: it is parsed with the `onnx` package's protobuf classes only
(nothing in it runs), its size, node count and tensor sizes are bounded, external-data
references must stay inside the model's directory, and every problem (malformed graph,
unsupported op, opset or attribute) is an `OnnxError` naming the file.

The ops are those CNN landmark and detection exports use; `OPS` lists them. LivePortrait's
landmark.onnx (a ConvNeXt, input 1x3x224x224, outputs of 214, 262 and 406 = 203*2 values,
as the public ncnn port of it shows) needs Conv, Transpose, MatMul, Gemm, Add/Sub/Mul/Div,
Pow, Sqrt, Erf, ReduceMean (its layer norms and GELUs are exported as those), Concat and
Reshape.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtalk import fs
from jaxtalk.errors import CheckpointError, one_line

MAX_FILE_BYTES = 2 << 30  # protobuf's own limit
MAX_NODES = 200_000
MAX_TENSOR_BYTES = 2 << 30
MIN_OPSET, MAX_OPSET = 7, 23  # default-domain opsets whose op semantics are implemented
PARAM_MIN_SIZE = 2  # float tensors with fewer elements are constants (eps, exponents)


class OnnxError(CheckpointError):
    """An ONNX file jaxtalk cannot import: malformed, unsafe, or using what is not implemented."""


# ----------------------------------------------------------------------------- parsing


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
    op: str
    name: str
    inputs: tuple[str, ...]  # "" = an omitted optional input
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, eq=False)
class Graph:
    path: str
    opset: int
    nodes: tuple[Node, ...]  # topologically sorted
    constants: Mapping[str, np.ndarray]  # static tensors (ints, scalars, shape-only floats)
    inputs: tuple[tuple[str, tuple[int | None, ...], np.dtype], ...]
    outputs: tuple[str, ...]


def _fail(path, message: str) -> OnnxError:
    return OnnxError(one_line(f"{path}: {message}", 400))


def _read_model(path: str, max_bytes: int):
    import onnx

    size = fs.size(path)
    if size > max_bytes:
        raise _fail(path, f"{size:,} bytes, over the {max_bytes:,}-byte limit for an ONNX file")
    with fs.open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise _fail(path, f"not an ONNX model (protobuf parse failed: {e})") from None
    if not model.HasField("graph"):
        raise _fail(path, "not an ONNX model (no graph)")
    return model


def _external_path(path: str, location: str) -> str:
    """The external-data file `location` names, refused unless it lies inside the model's
    directory (no absolute paths, no '..', no symlink out of it)."""
    base = fs.dirname(path)
    parts = location.replace("\\", "/").split("/")
    if (
        not location
        or location.startswith(("/", "\\"))
        or ":" in location
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise _fail(
            path, f"external data {location!r} is not a plain path inside the model's directory"
        )
    target = fs.join(base, *parts)
    if not fs.is_remote(base):
        real_base = os.path.realpath(base)
        if not os.path.realpath(target).startswith(real_base + os.sep):
            raise _fail(path, f"external data {location!r} resolves outside the model's directory")
    return target


def _tensor_bytes(path: str, tensor, shape: tuple[int, ...], itemsize: int) -> bytes | None:
    """Raw bytes of an externally stored tensor (bounded reads), else None."""
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    info = {e.key: e.value for e in tensor.external_data}
    target = _external_path(path, info.get("location", ""))
    try:
        offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
    except ValueError:
        raise _fail(path, f"tensor {tensor.name!r}: bad external-data offset/length") from None
    expected = math.prod(shape) * itemsize
    if length not in (-1, expected) or offset < 0:
        raise _fail(
            path, f"tensor {tensor.name!r}: external data length {length}, expected {expected}"
        )
    if offset + expected > fs.size(target):
        raise _fail(path, f"tensor {tensor.name!r}: external file {target} is too short")
    with fs.open(target, "rb") as f:
        while offset > 0:  # skipped in bounded chunks (fs file objects do not all seek)
            chunk = f.read(min(offset, 1 << 24))
            offset = offset - len(chunk) if chunk else 0
        data = f.read(expected)
    if len(data) != expected:
        raise _fail(path, f"tensor {tensor.name!r}: external file {target} is too short")
    return data


def _to_array(path: str, tensor) -> np.ndarray:
    """A TensorProto as a numpy array, its declared size checked before anything is read."""
    from onnx import TensorProto, helper, numpy_helper

    shape = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in shape):
        raise _fail(path, f"tensor {tensor.name!r}: negative dimension in {shape}")
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        raise _fail(path, f"tensor {tensor.name!r}: string/undefined tensors are not supported")
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception:
        raise _fail(path, f"tensor {tensor.name!r}: unknown data type {tensor.data_type}") from None
    if math.prod(shape) * dtype.itemsize > MAX_TENSOR_BYTES:
        raise _fail(path, f"tensor {tensor.name!r}: {shape} is over the size limit")
    raw = _tensor_bytes(path, tensor, shape, dtype.itemsize)
    if raw is not None:
        return np.frombuffer(raw, dtype).reshape(shape).copy()
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != math.prod(shape) * dtype.itemsize:
            raise _fail(path, f"tensor {tensor.name!r}: raw data size does not match {shape}")
    try:
        return np.array(numpy_helper.to_array(tensor), dtype).reshape(shape)
    except Exception as e:
        raise _fail(path, f"tensor {tensor.name!r}: cannot decode ({e})") from None


def _attrs(path: str, node) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    out = {}
    for a in node.attribute:
        if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            raise _fail(path, f"node {node.name!r} ({node.op_type}): subgraphs are not supported")
        if a.type == AttributeProto.TENSOR:
            out[a.name] = _to_array(path, a.t)
            continue
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, list):
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        out[a.name] = value
    return out


def _opset(path: str, model) -> int:
    used = {n.domain for n in model.graph.node} - {"", "ai.onnx"}
    if used:
        raise _fail(path, f"operator domain(s) {sorted(used)} are not supported (only ai.onnx)")
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise _fail(path, "no ai.onnx opset import")
    opset = int(versions[0])
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise _fail(path, f"opset {opset} is not supported ({MIN_OPSET}..{MAX_OPSET})")
    return opset


def _sorted_nodes(path: str, nodes: list[Node], known: set[str]) -> tuple[Node, ...]:
    """Nodes in an order where each one's inputs exist; OnnxError on cycles or undefined
    tensors."""
    producer = {}
    for i, node in enumerate(nodes):
        for o in node.outputs:
            if o and (o in producer or o in known):
                raise _fail(path, f"tensor {o!r} is defined twice")
            producer[o] = i
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 done
    for start in range(len(nodes)):
        stack = [(start, 0)]
        while stack:
            i, k = stack.pop()
            if k == 0:
                if state[i] == 2:
                    continue
                if state[i] == 1:
                    raise _fail(path, f"the graph has a cycle through node {nodes[i].name!r}")
                state[i] = 1
            deps = [d for d in nodes[i].inputs if d and d not in known]
            if k < len(deps):
                stack.append((i, k + 1))
                d = deps[k]
                if d not in producer:
                    raise _fail(path, f"node {nodes[i].name!r} reads undefined tensor {d!r}")
                if state[producer[d]] == 1:
                    raise _fail(path, f"the graph has a cycle through node {nodes[i].name!r}")
                if state[producer[d]] == 0:
                    stack.append((producer[d], 0))
                continue
            state[i] = 2
            order.append(nodes[i])
    return tuple(order)


def _is_param(name: str, value: np.ndarray, consumers: list[tuple[Node, int]]) -> bool:
    """A float tensor with elements enough to be a weight, read by some node as data (not
    only as a shape, size, axis or scale argument)."""
    if value.dtype.kind != "f" or value.size < PARAM_MIN_SIZE:
        return False
    return any(slot not in STATIC_INPUTS.get(node.op, ()) for node, slot in consumers)


def parse(path, max_bytes: int = MAX_FILE_BYTES) -> tuple[Graph, dict[str, np.ndarray]]:
    """(graph, float weights) of an ONNX file; OnnxError naming it when unusable."""
    path = fs.absolute(path)
    model = _read_model(path, max_bytes)
    opset = _opset(path, model)
    g = model.graph
    if len(g.node) > MAX_NODES:
        raise _fail(path, f"{len(g.node):,} nodes, over the limit of {MAX_NODES:,}")
    tensors = {}
    for t in g.initializer:
        tensors[t.name] = _to_array(path, t)
    if len(g.sparse_initializer):
        raise _fail(path, "sparse initializers are not supported")
    nodes = []
    for n in g.node:
        if n.op_type not in OPS:
            raise _fail(path, f"node {n.name!r}: op {n.op_type} is not supported by the importer")
        attrs = _attrs(path, n)
        if n.op_type == "Constant":
            if len(n.output) != 1:
                raise _fail(path, f"node {n.name!r}: a Constant has one output")
            tensors[n.output[0]] = _constant_value(path, n.name, attrs)
            continue
        nodes.append(Node(n.op_type, n.name or n.output[0], tuple(n.input), tuple(n.output), attrs))
    inputs = []
    for v in g.input:
        if v.name in tensors:  # old exporters list initializers as inputs too
            continue
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        try:
            from onnx import helper

            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        except Exception:
            raise _fail(path, f"graph input {v.name!r}: unsupported type") from None
        inputs.append((v.name, dims, dtype))
    known = set(tensors) | {name for name, _, _ in inputs}
    order = _sorted_nodes(path, nodes, known)
    outputs = tuple(o.name for o in g.output)
    defined = known | {o for n in order for o in n.outputs}
    missing = [o for o in outputs if o not in defined]
    if missing or not outputs:
        raise _fail(path, f"graph outputs {missing or '(none)'} are not computed by any node")
    consumers: dict[str, list[tuple[Node, int]]] = {}
    for node in order:
        for slot, name in enumerate(node.inputs):
            consumers.setdefault(name, []).append((node, slot))
    params = {k: v for k, v in tensors.items() if _is_param(k, v, consumers.get(k, []))}
    constants = {k: v for k, v in tensors.items() if k not in params}
    graph = Graph(path, opset, order, constants, tuple(inputs), outputs)
    return graph, params


def _constant_value(path: str, name: str, attrs: Mapping[str, Any]) -> np.ndarray:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise _fail(path, f"node {name!r}: Constant without a supported value attribute")


# ----------------------------------------------------------------------------- the function


@dataclasses.dataclass(frozen=True, eq=False)
class OnnxFunction:
    """An imported ONNX graph: `apply(params, *inputs)` -> tuple of outputs (pure, jit-able);
    `fn(*inputs)` applies it to its own params."""

    graph: Graph
    params: dict[str, jax.Array]

    @property
    def path(self) -> str:
        return self.graph.path

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.graph.inputs)

    @property
    def input_shapes(self) -> tuple[tuple[int | None, ...], ...]:
        return tuple(dims for _, dims, _ in self.graph.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.graph.outputs

    def apply(self, params: Mapping[str, Any], *inputs) -> tuple:
        return evaluate(self.graph, params, inputs)

    def __call__(self, *inputs) -> tuple:
        return self.apply(self.params, *inputs)


def load(path, max_bytes: int = MAX_FILE_BYTES, check: bool = True) -> OnnxFunction:
    """Imports an ONNX file. With `check`, graphs whose inputs have fixed shapes are traced
    once (jax.eval_shape) so unsupported attributes fail here, not at the first call."""
    graph, weights = parse(path, max_bytes)
    fn = OnnxFunction(graph, {k: jnp.asarray(v) for k, v in weights.items()})
    if check and all(d is not None for _, dims, _ in graph.inputs for d in dims):
        specs = [jax.ShapeDtypeStruct(dims, dtype) for _, dims, dtype in graph.inputs]
        jax.eval_shape(fn.apply, fn.params, *specs)
    return fn


class _Ctx:
    """What an op needs besides its inputs: the opset, and how to fail naming the node."""

    def __init__(self, graph: Graph, node: Node):
        self.graph, self.node, self.opset = graph, node, graph.opset

    def fail(self, message: str) -> OnnxError:
        return _fail(self.graph.path, f"node {self.node.name!r} ({self.node.op}): {message}")

    def static(self, value, what: str) -> np.ndarray:
        """`value` as numpy; refused when it depends on the data (shapes must be static)."""
        if value is None or isinstance(value, np.ndarray):
            return value
        if isinstance(value, (int, float, np.generic)):
            return np.asarray(value)
        raise self.fail(f"{what} must be known without the input data (static shapes only)")

    def ints(self, value, what: str) -> list[int] | None:
        value = self.static(value, what)
        return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def evaluate(graph: Graph, params: Mapping[str, Any], inputs: Sequence) -> tuple:
    if len(inputs) != len(graph.inputs):
        raise _fail(graph.path, f"expects {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[str, Any] = dict(graph.constants)
    env.update(params)
    for (name, dims, _), x in zip(graph.inputs, inputs):
        x = jnp.asarray(x)
        if len(dims) != x.ndim or any(d is not None and d != s for d, s in zip(dims, x.shape)):
            raise _fail(graph.path, f"input {name!r} has shape {x.shape}, expected {dims}")
        env[name] = x
    for node in graph.nodes:
        args = [env[i] if i else None for i in node.inputs]
        ctx = _Ctx(graph, node)
        out = OPS[node.op](ctx, args, node.attrs)
        out = out if isinstance(out, (list, tuple)) else [out]
        if len(out) < len(node.outputs) and any(node.outputs[len(out) :]):
            raise ctx.fail(f"only the first {len(out)} output(s) are supported")
        for name, value in zip(node.outputs, out):
            if name:  # numpy scalars stay numpy arrays, so they count as static
                env[name] = np.asarray(value) if isinstance(value, np.generic) else value
    return tuple(env[o] for o in graph.outputs)


# ----------------------------------------------------------------------------- op helpers


def _xp(*values):
    """numpy when every value is static (shape arithmetic), else jax.numpy."""
    return np if all(v is None or isinstance(v, np.ndarray) for v in values) else jnp


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _spatial(ctx: _Ctx, attrs, key: str, n: int, default: int) -> list[int]:
    value = list(attrs.get(key, [default] * n))
    if len(value) != n:
        raise ctx.fail(f"{key} {value} does not have {n} entries")
    return value


def _pads(ctx: _Ctx, attrs, sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis from pads / auto_pad."""
    n = len(sizes)
    auto = attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = _spatial(ctx, attrs, "pads", 2 * n, 0)
        return [(pads[i], pads[i + n]) for i in range(n)]
    if auto == "VALID":
        return [(0, 0)] * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(f"auto_pad {auto!r} is not supported")
    out = []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return out


def _dims(x) -> str:
    spatial = "DHW"[3 - (x.ndim - 2) :] if x.ndim <= 5 else None
    return "NC" + spatial


# ----------------------------------------------------------------------------- ops


def _conv(ctx, args, attrs):
    x, w, b = (args + [None])[:3]
    n = x.ndim - 2
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = _spatial(ctx, attrs, "strides", n, 1)
    dilations = _spatial(ctx, attrs, "dilations", n, 1)
    pads = _pads(ctx, attrs, x.shape[2:], kernel, strides, dilations)
    spec = _dims(x)
    y = lax.conv_general_dilated(
        x,
        jnp.asarray(w, x.dtype),
        window_strides=strides,
        padding=pads,
        rhs_dilation=dilations,
        feature_group_count=int(attrs.get("group", 1)),
        dimension_numbers=(spec, "OI" + spec[2:], spec),
    )
    return y if b is None else y + jnp.reshape(b, (1, -1) + (1,) * n)


def _conv_transpose(ctx, args, attrs):
    x, w, b = (args + [None])[:3]
    n, group = x.ndim - 2, int(attrs.get("group", 1))
    sizes = x.shape[2:]
    kernel = list(attrs.get("kernel_shape", w.shape[2:]))
    strides = _spatial(ctx, attrs, "strides", n, 1)
    dilations = _spatial(ctx, attrs, "dilations", n, 1)
    extra = _spatial(ctx, attrs, "output_padding", n, 0)
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    full = [s * (i - 1) + e + k for s, i, e, k in zip(strides, sizes, extra, span)]
    auto = attrs.get("auto_pad", "NOTSET")
    if "output_shape" in attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(attrs.get("output_shape", [i * s for i, s in zip(sizes, strides)]))[-n:]
        pads = []
        for f, t in zip(full, target):
            total = f - t
            small = total // 2
            pads.append((total - small, small) if auto != "SAME_UPPER" else (small, total - small))
    elif auto == "VALID":
        pads = [(0, 0)] * n
    else:
        pads = _pads(ctx, attrs, sizes, kernel, strides, dilations)
    # (C, M/g, k...) -> (M, C/g, k...), flipped: a transposed conv is a conv of the
    # stride-dilated input with the flipped kernel.
    c, m_g = w.shape[0], w.shape[1]
    w = jnp.reshape(jnp.asarray(w, x.dtype), (group, c // group, m_g) + tuple(w.shape[2:]))
    w = jnp.swapaxes(w, 1, 2).reshape((group * m_g, c // group) + tuple(w.shape[3:]))
    w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
    padding = [(sp - 1 - pb, sp - 1 - pe + e) for sp, (pb, pe), e in zip(span, pads, extra)]
    lo = [min(p, 0) for p, _ in padding]
    hi = [min(q, 0) for _, q in padding]
    spec = _dims(x)
    y = lax.conv_general_dilated(
        x,
        w,
        window_strides=[1] * n,
        padding=[(max(p, 0), max(q, 0)) for p, q in padding],
        lhs_dilation=strides,
        rhs_dilation=dilations,
        feature_group_count=group,
        dimension_numbers=(spec, "OI" + spec[2:], spec),
    )
    if any(lo) or any(hi):  # pads larger than the kernel crop the output
        index = (slice(None),) * 2 + tuple(
            slice(-a, y.shape[2 + i] + h) for i, (a, h) in enumerate(zip(lo, hi))
        )
        y = y[index]
    return y if b is None else y + jnp.reshape(b, (1, -1) + (1,) * n)


def _channel(v, x):
    return jnp.reshape(v, (1, -1) + (1,) * (x.ndim - 2))


def _batch_norm(ctx, args, attrs):
    x, scale, bias, mean, var = args[:5]
    if attrs.get("training_mode", 0):
        raise ctx.fail("training_mode=1 is not supported (inference only)")
    eps = attrs.get("epsilon", 1e-5)
    inv = _channel(scale, x) * lax.rsqrt(_channel(var, x) + eps)
    return (x - _channel(mean, x)) * inv + _channel(bias, x)


def _instance_norm(ctx, args, attrs):
    x, scale, bias = args
    axes = tuple(range(2, x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + attrs.get("epsilon", 1e-5))
    return y * _channel(scale, x) + _channel(bias, x)


def _layer_norm(ctx, args, attrs):
    x, scale, bias = (args + [None])[:3]
    axes = tuple(range(_axis(attrs.get("axis", -1), x.ndim), x.ndim))
    mean = jnp.mean(x, axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axes, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + attrs.get("epsilon", 1e-5)) * scale
    return y if bias is None else y + bias


def _reduce_window(x, init, op, kernel, strides, dilations, pads):
    return lax.reduce_window(
        x,
        init,
        op,
        (1, 1) + tuple(kernel),
        (1, 1) + tuple(strides),
        [(0, 0), (0, 0)] + list(pads),
        window_dilation=(1, 1) + tuple(dilations),
    )


def _pool_geometry(ctx, x, attrs):
    """kernel, strides, dilations and (begin, end) pads, the end grown for ceil_mode so that
    the last window still starts inside the input or its begin padding."""
    n = x.ndim - 2
    if len(attrs.get("kernel_shape", ())) != n:
        raise ctx.fail(f"kernel_shape {attrs.get('kernel_shape')} does not fit input {x.shape}")
    kernel = list(attrs["kernel_shape"])
    strides = _spatial(ctx, attrs, "strides", n, 1)
    dilations = _spatial(ctx, attrs, "dilations", n, 1)
    pads = _pads(ctx, attrs, x.shape[2:], kernel, strides, dilations)
    grown = []
    for size, k, s, d, (pb, pe) in zip(x.shape[2:], kernel, strides, dilations, pads):
        span = (k - 1) * d + 1
        if attrs.get("ceil_mode", 0):
            out = -(-(size + pb + pe - span) // s) + 1
            if (out - 1) * s >= size + pb:
                out -= 1
        else:
            out = (size + pb + pe - span) // s + 1
        grown.append((pb, max(pe, (out - 1) * s + span - size - pb)))
    return kernel, strides, dilations, pads, grown


def _max_pool(ctx, args, attrs):
    x = args[0]
    kernel, strides, dilations, _, grown = _pool_geometry(ctx, x, attrs)
    return _reduce_window(x, -jnp.inf, lax.max, kernel, strides, dilations, grown)


def _average_pool(ctx, args, attrs):
    x = args[0]
    kernel, strides, dilations, pads, grown = _pool_geometry(ctx, x, attrs)
    total = _reduce_window(x, 0.0, lax.add, kernel, strides, dilations, grown)
    ones = jnp.ones((1, 1) + x.shape[2:], x.dtype)
    if attrs.get("count_include_pad", 0):  # explicit pads count, ceil_mode's extra does not
        ones = jnp.pad(ones, [(0, 0), (0, 0)] + list(pads), constant_values=1.0)
        grown = [(0, g - p) for (_, p), (_, g) in zip(pads, grown)]
    count = _reduce_window(ones, 0.0, lax.add, kernel, strides, dilations, grown)
    return total / count


def _global_pool(reduce):
    return lambda ctx, args, attrs: reduce(args[0], tuple(range(2, args[0].ndim)), keepdims=True)


def _matmul(ctx, args, attrs):
    return _xp(*args).matmul(args[0], args[1])


def _gemm(ctx, args, attrs):
    a, b, c = (args + [None])[:3]
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = attrs.get("alpha", 1.0) * jnp.matmul(a, b)
    return y if c is None else y + attrs.get("beta", 1.0) * c


def _binary(fn):
    return lambda ctx, args, attrs: fn(_xp(*args), args[0], args[1])


def _div(xp, a, b):
    if np.dtype(a.dtype).kind in "iu":  # integer division truncates toward zero
        q = xp.abs(a) // xp.abs(b)
        return xp.where((a < 0) != (b < 0), -q, q)
    return a / b


def _pow(ctx, args, attrs):
    x, e = args
    small = isinstance(e, np.ndarray) and e.size == 1 and np.isfinite(e).all()
    if small and float(e) == int(e) and abs(int(e)) <= 4:
        if isinstance(x, np.ndarray):
            return np.power(x, e.astype(x.dtype))
        return lax.integer_pow(x, int(e))
    return _xp(x, e).power(x, e)


def _variadic(fn):
    def op(ctx, args, attrs):
        xp = _xp(*args)
        out = args[0]
        for a in args[1:]:
            out = fn(xp, out, a)
        return out

    return op


def _mean(ctx, args, attrs):
    return _variadic(lambda xp, a, b: a + b)(ctx, args, attrs) / len(args)


def _unary(fn):
    return lambda ctx, args, attrs: fn(_xp(args[0]), args[0], attrs)


def _prelu(ctx, args, attrs):
    x, slope = args
    return jnp.where(x < 0, x * slope, x)


def _clip(ctx, args, attrs):
    x = args[0]
    if ctx.opset < 11:
        lo, hi = attrs.get("min"), attrs.get("max")
    else:
        lo, hi = (args + [None, None])[1:3]
    xp = _xp(x, lo, hi)
    if lo is not None:
        x = xp.maximum(x, xp.asarray(lo, x.dtype))
    if hi is not None:
        x = xp.minimum(x, xp.asarray(hi, x.dtype))
    return x


def _gelu(xp, x, attrs):
    if attrs.get("approximate", "none") == "tanh":
        return jax.nn.gelu(x, approximate=True)
    return jax.nn.gelu(x, approximate=False)


def _softmax(log: bool):
    def op(ctx, args, attrs):
        x = args[0]
        fn = jax.nn.log_softmax if log else jax.nn.softmax
        if ctx.opset >= 13:
            return fn(x, axis=attrs.get("axis", -1))
        axis = _axis(attrs.get("axis", 1), x.ndim)  # coerced to 2-D around `axis`
        flat = jnp.reshape(x, (math.prod(x.shape[:axis]), -1))
        return jnp.reshape(fn(flat, axis=-1), x.shape)

    return op


def _cast(ctx, args, attrs):
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    x = args[0]
    return x.astype(dtype) if isinstance(x, np.ndarray) else jnp.asarray(x).astype(dtype)


# ----------------------------------------------------------------------------- shape ops


def _shape(ctx, args, attrs):
    shape = np.asarray(args[0].shape, np.int64)
    rank = len(shape)
    start = _axis(attrs.get("start", 0), rank)
    end = _axis(attrs.get("end", rank), rank)
    return shape[max(start, 0) : min(end, rank)]


def _reshape(ctx, args, attrs):
    x = args[0]
    shape = ctx.ints(args[1], "the target shape")
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return _xp(x).reshape(x, shape)


def _flatten(ctx, args, attrs):
    x = args[0]
    axis = _axis(attrs.get("axis", 1), x.ndim)
    return _xp(x).reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:])))


def _transpose(ctx, args, attrs):
    x = args[0]
    perm = attrs.get("perm", list(range(x.ndim))[::-1])
    return _xp(x).transpose(x, perm)


def _concat(ctx, args, attrs):
    args = [a for a in args if a is not None]
    return _xp(*args).concatenate(args, axis=attrs["axis"])


def _axes_arg(ctx, args, attrs, since: int, what: str = "axes"):
    """An axes list given as an attribute before opset `since`, as input 1 from it."""
    if ctx.opset < since:
        return attrs.get("axes")
    return ctx.ints(args[1] if len(args) > 1 else None, what)


def _split(ctx, args, attrs):
    x = args[0]
    axis = _axis(attrs.get("axis", 0), x.ndim)
    sizes = attrs.get("split") if ctx.opset < 13 else ctx.ints((args + [None])[1], "split")
    n = len(ctx.node.outputs)
    if not sizes:
        size = x.shape[axis]
        chunk = -(-size // n)
        sizes = [min(chunk, size - i * chunk) for i in range(n)]
    if sum(sizes) != x.shape[axis] or len(sizes) != n:
        raise ctx.fail(f"split sizes {sizes} do not cover axis {axis} of {x.shape} in {n} parts")
    cuts = np.cumsum(sizes)[:-1].tolist()
    return _xp(x).split(x, cuts, axis=axis)


def _slice(ctx, args, attrs):
    x = args[0]
    if ctx.opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts = ctx.ints(args[1], "starts")
        ends = ctx.ints(args[2], "ends")
        axes = ctx.ints(args[3] if len(args) > 3 else None, "axes")
        steps = ctx.ints(args[4] if len(args) > 4 else None, "steps")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis, dim = _axis(axis, x.ndim), x.shape[_axis(axis, x.ndim)]
        if step == 0:
            raise ctx.fail("a slice step of 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        index[axis] = slice(start, None if end < 0 else end, step)
    return x[tuple(index)]


def _squeeze(ctx, args, attrs):
    x = args[0]
    axes = _axes_arg(ctx, args, attrs, 13)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    return _xp(x).squeeze(x, tuple(_axis(a, x.ndim) for a in axes))


def _unsqueeze(ctx, args, attrs):
    x = args[0]
    axes = _axes_arg(ctx, args, attrs, 13)
    rank = x.ndim + len(axes)
    shape, it = [], iter(x.shape)
    targets = {_axis(a, rank) for a in axes}
    for i in range(rank):
        shape.append(1 if i in targets else next(it))
    return _xp(x).reshape(x, shape)


def _gather(ctx, args, attrs):
    x, idx = args
    axis = _axis(attrs.get("axis", 0), x.ndim)
    xp = _xp(x, idx)
    idx = xp.where(idx < 0, idx + x.shape[axis], idx)
    return xp.take(x, idx, axis=axis)


def _constant_of_shape(ctx, args, attrs):
    shape = ctx.ints(args[0], "the shape")
    value = attrs.get("value", np.zeros(1, np.float32))
    return np.full(shape, value.reshape(-1)[0], value.dtype)


def _expand(ctx, args, attrs):
    x = args[0]
    shape = np.broadcast_shapes(tuple(x.shape), tuple(ctx.ints(args[1], "the shape")))
    return _xp(x).broadcast_to(x, shape)


def _tile(ctx, args, attrs):
    return _xp(args[0]).tile(args[0], ctx.ints(args[1], "repeats"))


def _range(ctx, args, attrs):
    start, limit, delta = (ctx.static(a, "Range bounds") for a in args)
    return np.arange(start, limit, delta, dtype=np.result_type(start, limit, delta))


def _where(ctx, args, attrs):
    return _xp(*args).where(*args)


def _pad(ctx, args, attrs):
    x = args[0]
    mode = attrs.get("mode", "constant")
    if ctx.opset < 11:
        pads, value, axes = attrs["pads"], attrs.get("value", 0.0), None
    else:
        pads = ctx.ints(args[1], "pads")
        value = args[2] if len(args) > 2 and args[2] is not None else 0.0
        axes = ctx.ints(args[3] if len(args) > 3 else None, "axes")
    axes = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in axes]
    n = len(axes)
    widths = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + n])
    if any(p < 0 for w in widths for p in w):
        raise ctx.fail("negative pads are not supported")
    xp = _xp(x)
    if mode == "constant":
        return xp.pad(x, widths, constant_values=xp.asarray(value, x.dtype).reshape(()))
    if mode in ("reflect", "edge"):
        return xp.pad(x, widths, mode=mode)
    raise ctx.fail(f"pad mode {mode!r} is not supported")


def _depth_to_space(ctx, args, attrs):
    x, b = args[0], int(attrs["blocksize"])
    n, c, h, w = x.shape
    if attrs.get("mode", "DCR") == "DCR":
        y = jnp.reshape(x, (n, b, b, c // (b * b), h, w)).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = jnp.reshape(x, (n, c // (b * b), b, b, h, w)).transpose(0, 1, 4, 2, 5, 3)
    return jnp.reshape(y, (n, c // (b * b), h * b, w * b))


def _reduce(name: str):
    fns = {"mean": "mean", "sum": "sum", "max": "max", "min": "min"}

    def op(ctx, args, attrs):
        x = args[0]
        since = 13 if name == "sum" else 18
        axes = _axes_arg(ctx, args, attrs, since)
        if not axes:
            if attrs.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.ndim))
        axes = tuple(_axis(a, x.ndim) for a in axes)
        return getattr(_xp(x), fns[name])(x, axes, keepdims=bool(attrs.get("keepdims", 1)))

    return op


# ----------------------------------------------------------------------------- resize


def _source_coords(ctx, mode: str, out: int, size: int, scale: float) -> np.ndarray:
    """Where each output index of one axis samples the input, by coordinate_transformation_mode."""
    x = np.arange(out, dtype=np.float32)  # float32, as onnxruntime computes them
    scale = np.float32(scale)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (size - 1) / (out - 1) if out > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * size)
        offset = size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    raise ctx.fail(f"coordinate_transformation_mode {mode!r} is not supported")


def _nearest(ctx, rule: str, coords: np.ndarray, size: int, down: bool) -> np.ndarray:
    frac = coords - np.floor(coords)
    if rule == "round_prefer_floor":
        idx = np.where(frac == 0.5, np.floor(coords), np.round(coords))
    elif rule == "round_prefer_ceil":
        idx = np.where(frac == 0.5, np.ceil(coords), np.round(coords))
    elif rule == "floor":
        idx = np.floor(coords)
    elif rule == "ceil":
        idx = np.ceil(coords)
    elif rule == "simple":  # Upsample and opset-10 Resize
        idx = np.ceil(coords) if down else np.floor(coords)
    else:
        raise ctx.fail(f"nearest_mode {rule!r} is not supported")
    return np.clip(idx, 0, size - 1).astype(np.int32)


def _resize_axis(ctx, x, axis: int, out: int, scale: float, how: Mapping[str, str]):
    size = x.shape[axis]
    coords = _source_coords(ctx, how["coords"], out, size, scale)
    if how["mode"] == "nearest":
        return jnp.take(x, _nearest(ctx, how["nearest"], coords, size, scale < 1), axis=axis)
    if how["mode"] != "linear":
        raise ctx.fail(f"resize mode {how['mode']!r} is not supported (nearest, linear)")
    coords = np.clip(coords, 0, size - 1)
    lo = np.floor(coords).astype(np.int32)
    hi = np.minimum(lo + 1, size - 1)
    shape = [1] * x.ndim
    shape[axis] = out
    w = jnp.asarray((coords - lo).reshape(shape), x.dtype)
    return jnp.take(x, lo, axis=axis) * (1 - w) + jnp.take(x, hi, axis=axis) * w


def _resize_to(ctx, x, scales, sizes, how):
    """Resizes each axis whose size or scale changes, one axis at a time (separable)."""
    for axis in range(x.ndim):
        size = x.shape[axis]
        if sizes is not None:
            out, scale = sizes[axis], sizes[axis] / size
        else:
            scale = float(scales[axis])
            out = int(math.floor(size * scale))
        if out == size and scale == 1.0:
            continue
        if out <= 0:
            raise ctx.fail(f"resizing axis {axis} of {x.shape} to {out}")
        x = _resize_axis(ctx, x, axis, out, scale, how)
    return x


def _resize(ctx, args, attrs):
    x = args[0]
    args = list(args) + [None] * 4
    if attrs.get("antialias", 0):
        raise ctx.fail("antialias=1 is not supported")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ctx.fail("keep_aspect_ratio_policy other than 'stretch' is not supported")
    if ctx.opset < 11:
        scales, sizes = ctx.static(args[1], "scales"), None
        how = {"coords": "asymmetric", "nearest": "simple"}
    else:
        scales = ctx.static(args[2], "scales")
        sizes = ctx.ints(args[3], "sizes")
        scales = None if scales is None or scales.size == 0 else scales.reshape(-1)
        how = {
            "coords": attrs.get("coordinate_transformation_mode", "half_pixel"),
            "nearest": attrs.get("nearest_mode", "round_prefer_floor"),
        }
    how["mode"] = attrs.get("mode", "nearest")
    axes = attrs.get("axes")
    if axes is not None:  # opset 18: scales/sizes for these axes only
        full_scales, full_sizes = [1.0] * x.ndim, list(x.shape)
        for i, a in enumerate(axes):
            if scales is not None:
                full_scales[_axis(a, x.ndim)] = float(scales[i])
            if sizes:
                full_sizes[_axis(a, x.ndim)] = sizes[i]
        scales, sizes = (
            (full_scales if scales is not None else None),
            (full_sizes if sizes else None),
        )
    if not sizes and scales is None:
        raise ctx.fail("neither scales nor sizes given")
    return _resize_to(ctx, x, scales, sizes or None, how)


def _upsample(ctx, args, attrs):
    x = args[0]
    scales = attrs.get("scales") if ctx.opset < 9 else ctx.static(args[1], "scales")
    how = {"coords": "asymmetric", "nearest": "simple", "mode": attrs.get("mode", "nearest")}
    return _resize_to(ctx, x, np.asarray(scales, np.float32).reshape(-1), None, how)


def _dropout(ctx, args, attrs):
    training = args[2] if len(args) > 2 else None
    if training is not None and bool(ctx.static(training, "training_mode")):
        raise ctx.fail("training_mode=True is not supported (inference only)")
    return args[0]


# ----------------------------------------------------------------------------- the table


def _hard_sigmoid(xp, x, attrs):
    return xp.clip(attrs.get("alpha", 0.2) * x + attrs.get("beta", 0.5), 0.0, 1.0)


OPS: dict[str, Callable] = {
    # linear
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul,
    "Gemm": _gemm,
    # normalization
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    # pooling
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool(jnp.mean),
    "GlobalMaxPool": _global_pool(jnp.max),
    # activations
    "Relu": _unary(lambda xp, x, a: xp.maximum(x, 0)),
    "LeakyRelu": _unary(lambda xp, x, a: xp.where(x < 0, x * a.get("alpha", 0.01), x)),
    "PRelu": _prelu,
    "Elu": _unary(lambda xp, x, a: jnp.where(x < 0, a.get("alpha", 1.0) * jnp.expm1(x), x)),
    "Sigmoid": _unary(lambda xp, x, a: jax.nn.sigmoid(x)),
    "HardSigmoid": _unary(_hard_sigmoid),
    "HardSwish": _unary(lambda xp, x, a: x * _hard_sigmoid(xp, x, {"alpha": 1 / 6})),
    "Softplus": _unary(lambda xp, x, a: jax.nn.softplus(x)),
    "Tanh": _unary(lambda xp, x, a: xp.tanh(x)),
    "Gelu": _unary(_gelu),
    "Clip": _clip,
    "Softmax": _softmax(log=False),
    "LogSoftmax": _softmax(log=True),
    # elementwise
    "Add": _binary(lambda xp, a, b: a + b),
    "Sub": _binary(lambda xp, a, b: a - b),
    "Mul": _binary(lambda xp, a, b: a * b),
    "Div": _binary(_div),
    "Pow": _pow,
    "Equal": _binary(lambda xp, a, b: xp.equal(a, b)),
    "Less": _binary(lambda xp, a, b: xp.less(a, b)),
    "Greater": _binary(lambda xp, a, b: xp.greater(a, b)),
    "Where": _where,
    "Min": _variadic(lambda xp, a, b: xp.minimum(a, b)),
    "Max": _variadic(lambda xp, a, b: xp.maximum(a, b)),
    "Sum": _variadic(lambda xp, a, b: a + b),
    "Mean": _mean,
    "Sqrt": _unary(lambda xp, x, a: xp.sqrt(x)),
    "Exp": _unary(lambda xp, x, a: xp.exp(x)),
    "Log": _unary(lambda xp, x, a: xp.log(x)),
    "Abs": _unary(lambda xp, x, a: xp.abs(x)),
    "Neg": _unary(lambda xp, x, a: -x),
    "Reciprocal": _unary(lambda xp, x, a: 1 / x),
    "Floor": _unary(lambda xp, x, a: xp.floor(x)),
    "Ceil": _unary(lambda xp, x, a: xp.ceil(x)),
    "Erf": _unary(lambda xp, x, a: lax.erf(x)),
    "Cast": _cast,
    "Identity": lambda ctx, args, attrs: args[0],
    "Dropout": _dropout,
    # reductions
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    # shapes
    "Constant": None,  # folded into the constants at load
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Gather": _gather,
    "Range": _range,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Transpose": _transpose,
    "Concat": _concat,
    "Split": _split,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Expand": _expand,
    "Tile": _tile,
    "Pad": _pad,
    "DepthToSpace": _depth_to_space,
    "Resize": _resize,
    "Upsample": _upsample,
}

# Inputs that are shapes, sizes, axes or scales: a float tensor read only here is not a weight.
STATIC_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Resize": (1, 2, 3),
    "Upsample": (1,),
    "Slice": (1, 2, 3, 4),
    "Split": (1,),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "ReduceMean": (1,),
    "ReduceSum": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "Pad": (1, 2, 3),
    "ConstantOfShape": (0,),
    "Clip": (1, 2),
    "Range": (0, 1, 2),
    "Dropout": (1, 2),
}
