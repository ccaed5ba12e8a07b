"""Small ONNX files for the importer's tests, built with onnx.helper, and onnxruntime as
the reference that runs them."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

IR_VERSION = 10  # every opset the importer covers runs at IR 10 in onnxruntime


def elem_type(dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def graph_model(nodes, inputs, outputs, initializers=None, opset=17):
    """A ModelProto: `inputs` {name: example array} are graph inputs, `initializers`
    {name: array} stored tensors, `outputs` {name: dtype}."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(k, elem_type(v.dtype), v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, elem_type(t), None) for k, t in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def save(model, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def run_ort(path, inputs: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)
