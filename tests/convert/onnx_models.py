"""Small ONNX files for the importer's tests, built with onnx.helper, and onnxruntime as
the reference that runs them."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

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


def conv_next_landmarks(width: int = 8):
    """A tiny ConvNeXt with the layout of LivePortrait's landmark.onnx (as its public ncnn
    port shows): conv4 stem + channels-first LayerNorm, blocks of dwconv7 -> channels-last
    LayerNorm -> Linear 4x -> exact GELU -> Linear -> layer scale, residual; downsample LN +
    conv2; heads on the pooled features: 214, 262 and (with the stage-3 pool) 406 = 203*2,
    the last through a sigmoid so that a random net's points stay inside its crop."""
    import torch
    from torch import nn

    class ChannelsFirstNorm(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.randn(c)), nn.Parameter(torch.randn(c))

        def forward(self, x):
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(s + 1e-6)
            return self.weight[:, None, None] * x + self.bias[:, None, None]

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
            self.norm = nn.LayerNorm(c, eps=1e-6)
            self.fc1, self.fc2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
            self.gamma = nn.Parameter(torch.rand(c))

        def forward(self, x):
            y = self.dw(x).permute(0, 2, 3, 1)
            y = self.gamma * self.fc2(nn.functional.gelu(self.fc1(self.norm(y))))
            return x + y.permute(0, 3, 1, 2)

    class Net(nn.Module):
        def __init__(self, c):
            super().__init__()
            dims = [c, 2 * c, 4 * c, 8 * c]
            self.stem = nn.Sequential(nn.Conv2d(3, c, 4, stride=4), ChannelsFirstNorm(c))
            self.stages = nn.ModuleList(nn.Sequential(Block(d), Block(d)) for d in dims)
            self.down = nn.ModuleList(
                nn.Sequential(ChannelsFirstNorm(a), nn.Conv2d(a, b, 2, stride=2))
                for a, b in zip(dims, dims[1:])
            )
            self.norm3, self.norm = nn.LayerNorm(dims[2], eps=1e-6), nn.LayerNorm(dims[3], eps=1e-6)
            self.head_a, self.head_b = nn.Linear(dims[3], 214), nn.Linear(dims[3], 262)
            self.head_pts = nn.Linear(dims[2] + dims[3], 406)

        def forward(self, x):
            x = self.stem(x)
            for i, stage in enumerate(self.stages):
                if i:
                    x = self.down[i - 1](x)
                x = stage(x)
                if i == 2:
                    mid = self.norm3(x.mean([-2, -1]))
            top = self.norm(x.mean([-2, -1]))
            pts = torch.sigmoid(self.head_pts(torch.cat([mid, top], 1)))
            return self.head_a(top), self.head_b(top), pts

    torch.manual_seed(0)
    return Net(width).eval()


def export_torch(module, example, path, opset: int) -> str:
    import torch

    with torch.no_grad():
        torch.onnx.export(
            module, (example,), str(path), input_names=["input"], opset_version=opset, dynamo=False
        )
    return str(path)
