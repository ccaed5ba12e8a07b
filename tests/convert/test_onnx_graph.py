"""The ONNX importer against onnxruntime: every op it implements, in float32, within 1e-5;
a torch-exported ConvNeXt shaped like LivePortrait's landmark.onnx under jit; and crafted
files refused with one line naming them."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxtalk.convert import onnx_graph  # noqa: E402  (after the onnx importorskip)
from tests.convert.onnx_models import (
    conv_next_landmarks,
    export_torch,
    graph_model,
    helper,
    numpy_helper,
    run_ort,
    save,
)

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def positive(*shape):
    return (rng.random(shape) + 0.5).astype(np.float32)


@dataclasses.dataclass
class Case:
    """One node: `data` are graph inputs, `consts` initializers, outputs float32 unless
    `out` says otherwise."""

    id: str
    op: str
    data: dict
    consts: dict = dataclasses.field(default_factory=dict)
    attrs: dict = dataclasses.field(default_factory=dict)
    opset: int = 17
    out: tuple = (np.float32,)
    inputs: tuple | None = None  # input names in order ("" for omitted); default data+consts


X4 = randn(2, 4, 9, 11)
NCHW = {"x": X4}

CASES = [
    # convolutions
    Case(
        "conv_pads", "Conv", NCHW, {"w": randn(6, 4, 3, 3), "b": randn(6)}, {"pads": [1, 1, 1, 1]}
    ),
    Case(
        "conv_groups_dilation_stride",
        "Conv",
        NCHW,
        {"w": randn(6, 2, 3, 3), "b": randn(6)},
        {"group": 2, "dilations": [2, 1], "strides": [2, 3], "pads": [2, 0, 1, 1]},
    ),
    Case("conv_depthwise7", "Conv", NCHW, {"w": randn(4, 1, 7, 7)}, {"group": 4, "pads": [3] * 4}),
    Case(
        "conv_same_upper",
        "Conv",
        NCHW,
        {"w": randn(3, 4, 4, 4)},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    ),
    Case(
        "conv_same_lower",
        "Conv",
        NCHW,
        {"w": randn(3, 4, 4, 3)},
        {"auto_pad": "SAME_LOWER", "strides": [2, 2]},
    ),
    Case(
        "conv_valid",
        "Conv",
        NCHW,
        {"w": randn(3, 4, 2, 2)},
        {"auto_pad": "VALID", "strides": [2, 2]},
    ),
    Case(
        "conv1d",
        "Conv",
        {"x": randn(2, 3, 10)},
        {"w": randn(5, 3, 3), "b": randn(5)},
        {"pads": [1, 2]},
    ),
    Case(
        "conv3d",
        "Conv",
        {"x": randn(1, 2, 4, 5, 6)},
        {"w": randn(3, 2, 3, 3, 3)},
        {"pads": [1] * 6},
    ),
    Case(
        "convtranspose_s2",
        "ConvTranspose",
        NCHW,
        {"w": randn(4, 3, 4, 4), "b": randn(3)},
        {"strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    Case(
        "convtranspose_groups_outpad",
        "ConvTranspose",
        NCHW,
        {"w": randn(4, 3, 3, 3)},
        {
            "group": 2,
            "strides": [2, 3],
            "output_padding": [1, 2],
            "dilations": [1, 2],
            "pads": [0, 1, 1, 0],
        },
    ),
    Case(
        "convtranspose_output_shape",
        "ConvTranspose",
        NCHW,
        {"w": randn(4, 2, 3, 3)},
        {"strides": [2, 2], "output_shape": [18, 21]},
    ),
    Case(
        "convtranspose_same",
        "ConvTranspose",
        NCHW,
        {"w": randn(4, 2, 3, 3)},
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
    ),
    Case(
        "convtranspose_bigpads",
        "ConvTranspose",
        NCHW,
        {"w": randn(4, 2, 2, 2)},
        {"pads": [2, 2, 2, 2]},
    ),
    Case("matmul_batched", "MatMul", {"a": randn(2, 3, 5)}, {"b": randn(5, 4)}),
    Case(
        "gemm",
        "Gemm",
        {"a": randn(5, 3)},
        {"b": randn(4, 5), "c": randn(4)},
        {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0},
    ),
    Case("gemm_noc", "Gemm", {"a": randn(3, 5)}, {"b": randn(5, 4)}),
    # normalization
    Case(
        "batchnorm9",
        "BatchNormalization",
        NCHW,
        {"s": randn(4), "b": randn(4), "m": randn(4), "v": positive(4)},
        {"epsilon": 1e-3},
        opset=9,
    ),
    Case(
        "batchnorm15",
        "BatchNormalization",
        NCHW,
        {"s": randn(4), "b": randn(4), "m": randn(4), "v": positive(4)},
        opset=15,
    ),
    Case("instancenorm", "InstanceNormalization", NCHW, {"s": randn(4), "b": randn(4)}),
    Case(
        "layernorm_last",
        "LayerNormalization",
        NCHW,
        {"s": randn(11), "b": randn(11)},
        {"epsilon": 1e-6},
    ),
    Case("layernorm_axis1", "LayerNormalization", NCHW, {"s": randn(4, 9, 11)}, {"axis": 1}),
    # pooling
    Case(
        "maxpool",
        "MaxPool",
        NCHW,
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    Case(
        "maxpool_ceil_dil",
        "MaxPool",
        NCHW,
        attrs={"kernel_shape": [2, 3], "strides": [2, 2], "dilations": [2, 1], "ceil_mode": 1},
    ),
    Case(
        "maxpool_same",
        "MaxPool",
        NCHW,
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    ),
    Case(
        "avgpool",
        "AveragePool",
        NCHW,
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    ),
    Case(
        "avgpool_incl_ceil",
        "AveragePool",
        NCHW,
        attrs={
            "kernel_shape": [3, 2],
            "strides": [2, 2],
            "pads": [1, 0, 1, 1],
            "count_include_pad": 1,
            "ceil_mode": 1,
        },
    ),
    Case(
        "avgpool_ceil",
        "AveragePool",
        NCHW,
        attrs={"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    ),
    Case("gap", "GlobalAveragePool", NCHW),
    Case("gmp", "GlobalMaxPool", NCHW),
    # activations
    Case("relu", "Relu", NCHW),
    Case("leakyrelu", "LeakyRelu", NCHW, attrs={"alpha": 0.1}),
    Case("prelu", "PRelu", NCHW, {"slope": randn(4, 1, 1)}),
    Case("elu", "Elu", NCHW, attrs={"alpha": 0.7}),
    Case("sigmoid", "Sigmoid", NCHW),
    Case("hardsigmoid", "HardSigmoid", NCHW, attrs={"alpha": 0.3, "beta": 0.6}),
    Case("hardswish", "HardSwish", {"x": 4 * X4}),
    Case("softplus", "Softplus", NCHW),
    Case("tanh", "Tanh", NCHW),
    Case("gelu", "Gelu", NCHW, opset=20),
    Case("gelu_tanh", "Gelu", NCHW, attrs={"approximate": "tanh"}, opset=20),
    Case("clip9", "Clip", NCHW, attrs={"min": -0.5, "max": 0.7}, opset=9),
    Case("clip13", "Clip", NCHW, {"lo": np.float32(-0.2), "hi": np.float32(0.3)}),
    Case("clip13_max_only", "Clip", NCHW, {"hi": np.float32(0.3)}, inputs=("x", "", "hi")),
    Case("softmax11", "Softmax", NCHW, attrs={"axis": 2}, opset=11),
    Case("softmax13", "Softmax", NCHW, attrs={"axis": 1}),
    Case("logsoftmax", "LogSoftmax", NCHW),
    # elementwise
    Case("add_bcast", "Add", NCHW, {"y": randn(4, 1, 1)}),
    Case("sub", "Sub", {"x": randn(3, 4), "y": randn(3, 4)}),
    Case("mul_bcast", "Mul", NCHW, {"y": randn(11)}),
    Case("div", "Div", NCHW, {"y": positive(9, 11)}),
    Case("pow_square", "Pow", NCHW, {"e": np.float32(2.0)}),
    Case("pow_tensor", "Pow", {"x": positive(3, 4), "e": randn(3, 4)}),
    Case(
        "equal",
        "Equal",
        {"x": np.array([1, 2, 3], np.int64), "y": np.array([1, 0, 3], np.int64)},
        out=(np.bool_,),
    ),
    Case("less", "Less", {"x": randn(3, 4), "y": randn(3, 4)}, out=(np.bool_,)),
    Case("greater", "Greater", {"x": randn(3, 4), "y": randn(3, 4)}, out=(np.bool_,)),
    Case("where", "Where", {"c": rng.random((3, 4)) > 0.5, "x": randn(3, 4), "y": randn(4)}),
    Case("min3", "Min", {"a": randn(3, 4), "b": randn(3, 4), "c": randn(4)}),
    Case("max3", "Max", {"a": randn(3, 4), "b": randn(3, 4), "c": randn(4)}),
    Case("sum3", "Sum", {"a": randn(3, 4), "b": randn(3, 4), "c": randn(4)}),
    Case("mean3", "Mean", {"a": randn(3, 4), "b": randn(3, 4), "c": randn(4)}),
    Case("sqrt", "Sqrt", {"x": positive(3, 4)}),
    Case("exp", "Exp", NCHW),
    Case("log", "Log", {"x": positive(3, 4)}),
    Case("abs", "Abs", NCHW),
    Case("neg", "Neg", NCHW),
    Case("reciprocal", "Reciprocal", {"x": positive(3, 4)}),
    Case("floor", "Floor", {"x": 3 * randn(3, 4)}),
    Case("ceil", "Ceil", {"x": 3 * randn(3, 4)}),
    Case("erf", "Erf", NCHW),
    Case("cast_int", "Cast", {"x": 3 * randn(3, 4)}, attrs={"to": 6}, out=(np.int32,)),
    Case("identity", "Identity", NCHW),
    Case("dropout", "Dropout", NCHW),
    # reductions
    Case("reducemean13", "ReduceMean", NCHW, attrs={"axes": [1, 3], "keepdims": 0}, opset=13),
    Case("reducemean18", "ReduceMean", NCHW, {"axes": np.array([-2, -1], np.int64)}, opset=18),
    Case("reducesum13", "ReduceSum", NCHW, {"axes": np.array([1], np.int64)}, opset=13),
    Case("reducemax_all", "ReduceMax", NCHW, attrs={"keepdims": 0}, opset=13),
    Case("reducemin", "ReduceMin", NCHW, attrs={"axes": [2]}, opset=13),
    # shapes
    Case("flatten", "Flatten", NCHW),
    Case("flatten2", "Flatten", NCHW, attrs={"axis": 2}),
    Case("reshape", "Reshape", NCHW, {"s": np.array([0, -1, 11], np.int64)}),
    Case("transpose", "Transpose", NCHW, attrs={"perm": [0, 2, 3, 1]}),
    Case("concat", "Concat", {"a": randn(2, 3, 4), "b": randn(2, 5, 4)}, attrs={"axis": 1}),
    Case(
        "split11",
        "Split",
        NCHW,
        attrs={"axis": 1, "split": [1, 3]},
        opset=11,
        out=(np.float32,) * 2,
    ),
    Case(
        "split13",
        "Split",
        NCHW,
        {"s": np.array([5, 6], np.int64)},
        {"axis": -1},
        opset=13,
        out=(np.float32,) * 2,
    ),
    Case(
        "split18",
        "Split",
        NCHW,
        attrs={"axis": 3, "num_outputs": 3},
        opset=18,
        out=(np.float32,) * 3,
    ),
    Case(
        "slice9",
        "Slice",
        NCHW,
        attrs={"starts": [1, -5], "ends": [3, 1000], "axes": [1, 3]},
        opset=9,
    ),
    Case(
        "slice13_steps",
        "Slice",
        NCHW,
        {
            "st": np.array([-1, 8, 0], np.int64),
            "en": np.array([-1000, 1, 9], np.int64),
            "ax": np.array([3, 2, 1], np.int64),
            "sp": np.array([-2, -3, 2], np.int64),
        },
    ),
    Case("squeeze11", "Squeeze", {"x": randn(1, 3, 1, 4)}, attrs={"axes": [0, -2]}, opset=11),
    Case("squeeze13_all", "Squeeze", {"x": randn(1, 3, 1, 4)}, opset=13),
    Case("unsqueeze11", "Unsqueeze", {"x": randn(3, 4)}, attrs={"axes": [0, 3]}, opset=11),
    Case(
        "unsqueeze13", "Unsqueeze", {"x": randn(3, 4)}, {"a": np.array([1, -1], np.int64)}, opset=13
    ),
    Case("gather_neg", "Gather", NCHW, {"i": np.array([[0, -1], [2, 1]], np.int64)}, {"axis": 1}),
    Case("expand", "Expand", {"x": randn(3, 1)}, {"s": np.array([2, 1, 4], np.int64)}),
    Case("tile", "Tile", {"x": randn(2, 3)}, {"r": np.array([2, 3], np.int64)}),
    Case(
        "pad_constant",
        "Pad",
        NCHW,
        {"p": np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64), "v": np.float32(0.5)},
    ),
    Case(
        "pad_reflect",
        "Pad",
        NCHW,
        {"p": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)},
        {"mode": "reflect"},
    ),
    Case(
        "pad_edge9", "Pad", NCHW, attrs={"mode": "edge", "pads": [0, 0, 1, 1, 0, 0, 2, 2]}, opset=9
    ),
    Case("depthtospace_dcr", "DepthToSpace", {"x": randn(1, 8, 3, 4)}, attrs={"blocksize": 2}),
    Case(
        "depthtospace_crd",
        "DepthToSpace",
        {"x": randn(1, 8, 3, 4)},
        attrs={"blocksize": 2, "mode": "CRD"},
    ),
    # resizing
    Case(
        "resize_nearest_asym_floor",
        "Resize",
        NCHW,
        {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 3], np.float32)},
        {
            "mode": "nearest",
            "coordinate_transformation_mode": "asymmetric",
            "nearest_mode": "floor",
        },
    ),
    Case(
        "resize_nearest_halfpixel",
        "Resize",
        NCHW,
        {"sc": np.array([1, 1, 1.5, 0.6], np.float32)},
        {"mode": "nearest"},
        inputs=("x", "", "sc"),
    ),
    Case(
        "resize_bilinear",
        "Resize",
        NCHW,
        {"sc": np.array([1, 1, 2, 2], np.float32)},
        {"mode": "linear"},
        inputs=("x", "", "sc"),
    ),
    Case(
        "resize_linear_down_pytorch",
        "Resize",
        NCHW,
        {"sc": np.array([1, 1, 0.5, 0.7], np.float32)},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        inputs=("x", "", "sc"),
    ),
    Case(
        "resize_align_corners_sizes",
        "Resize",
        NCHW,
        {"sz": np.array([2, 4, 5, 17], np.int64)},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        inputs=("x", "", "", "sz"),
    ),
    Case(
        "resize_nearest_ceil_sizes",
        "Resize",
        NCHW,
        {"sz": np.array([2, 4, 20, 7], np.int64)},
        {"mode": "nearest", "nearest_mode": "round_prefer_ceil"},
        inputs=("x", "", "", "sz"),
        opset=13,
    ),
    Case(
        "resize10_down",
        "Resize",
        NCHW,
        {"sc": np.array([1, 1, 0.5, 0.6], np.float32)},
        {"mode": "nearest"},
        opset=10,
    ),
    Case(
        "resize_pytorch_to_one",
        "Resize",
        NCHW,
        {"sz": np.array([2, 4, 1, 5], np.int64)},
        {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        inputs=("x", "", "", "sz"),
    ),
    Case(
        "resize10",
        "Resize",
        NCHW,
        {"sc": np.array([1, 1, 2, 2], np.float32)},
        {"mode": "nearest"},
        opset=10,
    ),
    Case(
        "resize11_linear",
        "Resize",
        NCHW,
        {"roi": np.zeros(0, np.float32), "sc": np.array([1, 1, 2, 1.5], np.float32)},
        {"mode": "linear"},
        opset=11,
    ),
    Case(
        "upsample9",
        "Upsample",
        NCHW,
        {"sc": np.array([1, 1, 2, 3], np.float32)},
        {"mode": "nearest"},
        opset=9,
    ),
    Case(
        "upsample9_linear",
        "Upsample",
        NCHW,
        {"sc": np.array([1, 1, 2, 2], np.float32)},
        {"mode": "linear"},
        opset=9,
    ),
]


def build(case: Case, path):
    names = case.inputs or tuple(case.data) + tuple(case.consts)
    outs = {f"y{i}": t for i, t in enumerate(case.out)}
    node = helper.make_node(case.op, list(names), list(outs), **case.attrs)
    consts = {k: np.asarray(v) for k, v in case.consts.items()}
    return save(graph_model([node], case.data, outs, consts, case.opset), path)


def check_against_ort(path, feeds: dict, jit: bool = False, tol: float = 1e-5):
    fn = onnx_graph.load(path)
    apply = jax.jit(fn.apply) if jit else fn.apply
    got = apply(fn.params, *feeds.values())
    want = run_ort(path, feeds)
    assert len(got) == len(want)
    errors = []
    for g, w in zip(got, want):
        g = np.asarray(g)
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind == "f":
            errors.append(float(np.max(np.abs(g - w) / (1 + np.abs(w)), initial=0)))
            assert errors[-1] <= tol, errors[-1]
        else:
            np.testing.assert_array_equal(g.astype(w.dtype), w)
    return fn, errors


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_onnxruntime(case, tmp_path):
    check_against_ort(build(case, tmp_path / f"{case.id}.onnx"), case.data)


def test_every_op_is_covered():
    covered = {c.op for c in CASES} | {"Constant", "Shape", "ConstantOfShape", "Range"}
    assert set(onnx_graph.OPS) <= covered, sorted(set(onnx_graph.OPS) - covered)


def test_shape_arithmetic_is_static_under_jit(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (a torch.flatten export), Constant,
    ConstantOfShape and Range: folded while tracing, so jit sees static shapes."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["shape"]),
        n("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
        n("Gather", ["shape", "zero"], ["batch"]),
        n("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        n("Constant", [], ["minus1"], value_ints=[-1]),
        n("Concat", ["batch1", "minus1"], ["target"], axis=0),
        n("Reshape", ["x", "target"], ["flat"]),
        n("Shape", ["flat"], ["fshape"], start=-1),
        n(
            "ConstantOfShape",
            ["fshape"],
            ["ones"],
            value=numpy_helper.from_array(np.ones(1, np.float32)),
        ),
        n("Range", ["r0", "r1", "r2"], ["ramp"]),
        n("Cast", ["ramp"], ["rampf"], to=1),
        n("Mul", ["ones", "rampf"], ["scaled"]),
        n("Add", ["flat", "scaled"], ["y"]),
    ]
    consts = {
        "axes0": np.array([0], np.int64),
        "r0": np.array(0, np.int64),
        "r1": np.array(396, np.int64),
        "r2": np.array(1, np.int64),
    }
    path = save(graph_model(nodes, NCHW, {"y": np.float32}, consts, opset=15), tmp_path / "s.onnx")
    fn, _ = check_against_ort(path, NCHW, jit=True)
    assert fn.params == {}  # every tensor here is a shape or a scalar


@pytest.mark.parametrize("opset", [11, 17])
def test_convnext_landmark_net_under_jit(opset, tmp_path):
    """opset 11 decomposes the layer norms and GELUs into ReduceMean/Sub/Pow/Sqrt/Div/Erf as
    the released landmark.onnx does; opset 17 exports LayerNormalization."""
    pytest.importorskip("torch")
    import onnx

    x = rng.random((1, 3, 224, 224), dtype=np.float32)
    path = export_torch(
        conv_next_landmarks(), __import__("torch").from_numpy(x), tmp_path / "l.onnx", opset
    )
    ops = {n.op_type for n in onnx.load(path).graph.node}
    if opset == 11:
        assert {"Erf", "Pow", "Sqrt", "ReduceMean"} <= ops, ops
    else:
        assert "LayerNormalization" in ops, ops
    fn, errors = check_against_ort(path, {"input": x}, jit=True)
    assert [o.shape for o in fn(x)] == [(1, 214), (1, 262), (1, 406)]
    assert all(v.ndim >= 1 and v.size > 1 for v in fn.params.values())
    print(f"opset {opset}: {sorted(ops)}; max rel. error vs onnxruntime {max(errors):.2e}")


def test_torch_cnn_export_with_batchnorm_prelu_pool_upsample(tmp_path):
    """A detector-style torch net through the legacy exporter, opset 9 (Upsample) and 13."""
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.PReLU(8),
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
        nn.Softmax(dim=1),
    ).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    x = rng.random((2, 3, 32, 32), dtype=np.float32)
    for opset in (9, 13):
        path = export_torch(net, torch.from_numpy(x), tmp_path / f"cnn{opset}.onnx", opset)
        check_against_ort(path, {"input": x}, jit=True)


# ----------------------------------------------------------------------------- refused files


def refused(path, match: str, **kwargs) -> str:
    with pytest.raises(onnx_graph.OnnxError) as info:
        onnx_graph.load(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert match in message, message
    return message


def one_relu(opset=13, op="Relu", domain=""):
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    return graph_model([node], {"x": randn(2, 3)}, {"y": np.float32}, opset=opset)


def test_refuses_garbage_truncated_and_oversized(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xff\xff\xff not a protobuf")
    refused(bad, "not an ONNX model")
    good = save(one_relu(), tmp_path / "good.onnx")
    data = open(good, "rb").read()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    refused(cut, "not an ONNX model")
    refused(good, "byte limit", max_bytes=10)


def test_refuses_unsupported_ops_opsets_and_domains(tmp_path):
    refused(
        save(one_relu(op="NonMaxSuppression"), tmp_path / "op.onnx"),
        "NonMaxSuppression is not supported",
    )
    refused(save(one_relu(opset=99), tmp_path / "opset.onnx"), "opset 99 is not supported")
    model = one_relu(domain="com.microsoft")
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    refused(save(model, tmp_path / "domain.onnx"), "com.microsoft")
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")
    model = graph_model([node], NCHW, {"y": np.float32}, {"sc": np.array([1, 1, 2, 2], np.float32)})
    refused(save(model, tmp_path / "cubic.onnx"), "resize mode 'cubic'")


def test_refuses_malformed_graphs(tmp_path):
    n = helper.make_node
    cyclic = [n("Relu", ["x", "b"], ["a"]), n("Relu", ["a"], ["b"]), n("Relu", ["a"], ["y"])]
    refused(
        save(graph_model(cyclic, {"x": randn(2)}, {"y": np.float32}), tmp_path / "c.onnx"), "cycle"
    )
    undefined = [n("Add", ["x", "nowhere"], ["y"])]
    refused(
        save(graph_model(undefined, {"x": randn(2)}, {"y": np.float32}), tmp_path / "u.onnx"),
        "undefined tensor 'nowhere'",
    )
    twice = [n("Relu", ["x"], ["y"]), n("Relu", ["x"], ["y"])]
    refused(
        save(graph_model(twice, {"x": randn(2)}, {"y": np.float32}), tmp_path / "t.onnx"),
        "defined twice",
    )
    model = graph_model(
        [n("Relu", ["x"], ["y"])], {"x": randn(2)}, {"y": np.float32}, {"w": randn(3)}
    )
    model.graph.initializer[0].raw_data = b"\0" * 5  # 3 floats declared, 5 bytes stored
    refused(save(model, tmp_path / "raw.onnx"), "raw data size")
    shaped = graph_model([n("Reshape", ["x", "s"], ["y"])], {"x": randn(6)}, {"y": np.float32})
    shaped.graph.node.insert(0, n("Cast", ["x"], ["s"], to=7))  # a shape read from the data
    refused(save(shaped, tmp_path / "dyn.onnx"), "static shapes only")


def external_model(tmp_path, location: str):
    from onnx import TensorProto

    model = graph_model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        {"x": randn(2, 3)},
        {"y": np.float32},
        {"w": randn(2, 3)},
    )
    w = model.graph.initializer[0]
    payload = w.raw_data
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(payload)))):
        w.external_data.add(key=key, value=value)
    return model, payload


def test_external_data_inside_the_directory_loads(tmp_path):
    model, payload = external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(payload)
    x = randn(2, 3)
    check_against_ort(save(model, tmp_path / "ext.onnx"), {"x": x})


@pytest.mark.parametrize(
    "location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin", "link.bin"]
)
def test_external_data_outside_the_directory_is_refused(location, tmp_path):
    inner = tmp_path / "model"
    inner.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 24)
    (inner / "link.bin").symlink_to(tmp_path / "outside.bin")
    model, _ = external_model(inner, location)
    refused(save(model, inner / "ext.onnx"), "external data")
