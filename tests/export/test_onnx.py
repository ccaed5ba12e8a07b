"""ONNX export (jaxtalk/export/onnx_export.py): the stage-1 inference functions of LIA and
AniTalker run in ONNX Runtime within 1e-4 of jax, with the frame axis dynamic; the
translation rules on a function built to exercise them; the command; the errors."""

import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtalk import inference
from jaxtalk.convert import weights
from jaxtalk.inference.animator import ExportedFunction
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.generator import LIAGenerator
from tests import cli_processes
from tests.train.helpers import REPO, cli_env

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from jaxtalk.export import onnx_export  # noqa: E402  (needs onnx)
from jaxtalk.train.grouped_init import grouped_initializers

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    x = jnp.zeros((1, 32, 32, 3))
    out = {}
    for kind, cls in (("lia", LIAGenerator), ("anitalker_stage1", AniTalkerMotion)):
        params = nn.meta.unbox(
            jax.jit(grouped_initializers(cls(**TINY).init))(jax.random.PRNGKey(4), x, x)["params"]
        )
        out[kind] = str(d / f"{kind}.safetensors")
        weights.save(
            {"params": params, "model_config": dict(TINY, kind=kind)}, out[kind], release=kind
        )
    return out


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("kind", ["lia", "anitalker_stage1"])
def test_stage1_function_matches_jax_in_onnx_runtime(weight_files, kind, tmp_path):
    spec = inference.open_animator(weight_files[kind], driver="video").export_function()
    path = tmp_path / f"{kind}.onnx"
    summary = onnx_export.export_onnx(spec, path)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == onnx_export.OPSET == summary["opset"]
    assert [i.name for i in model.graph.input] == ["source", "alphas"]
    assert _dims(model.graph.input[1]) == ["T", 5]  # the dynamic frame axis
    assert _dims(model.graph.output[0]) == ["T", 32, 32, 3]
    # Weight-only work (the QR of the motion directions) was folded at export time.
    assert "Conv" in summary["ops"] and not any("Qr" in op for op in summary["ops"])
    for frames in (1, 4):
        error = onnx_export.check_onnx(str(path), spec, {"T": frames}, seed=frames)
        print(f"{kind} T={frames}: max abs error {error:.2e}")
        assert error < TOLERANCE, error


def _rules_function(params, x, y):
    """Ops the stage-1 graph does not all use, each in a form that can go wrong."""
    t = x.shape[0]
    conv = lax.conv_general_dilated(
        x,
        params["kernel"],
        window_strides=(2, 1),
        padding=((1, 2), (0, 1)),
        rhs_dilation=(1, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=2,
    )
    batched = jnp.einsum("tij,tjk->tki", y, y)  # batch + contraction, transposed output
    flipped = lax.rev(x, (1, 2))
    cropped = lax.pad(x, 0.5, ((0, 0, 0), (-1, 2, 0), (1, -2, 0), (0, 0, 0)))
    tiled = jnp.broadcast_to(params["bias"], (t, 2, 4))
    picked = jnp.where(x > 0, jnp.exp(-x), jnp.maximum(x, -0.5) ** 2)
    reduced = jnp.max(picked, axis=(1, 2)) - jnp.sum(flipped, axis=(1, 2)) / 7.0
    pooled = nn.avg_pool(x, (3, 2), strides=(2, 1), padding=((1, 1), (0, 1)))  # window sums
    taken = x[:, jnp.array([4, 0, 0, 2])]  # constant indices along one axis
    return (
        conv.reshape(t, -1).sum(1)
        + batched.reshape(t, -1).mean(1)
        + cropped[:, 1:3].reshape(t, -1).std(1)
        + tiled.reshape(t, -1) @ jnp.ones(8)
        + reduced @ jnp.arange(4.0)
        + jax.nn.sigmoid(jnp.tanh(y[:, 0, 0]))
        + pooled.reshape(t, -1) @ jnp.linspace(-1.0, 1.0, 80)
        + taken.reshape(t, -1) @ jnp.linspace(0.0, 1.0, 80)
    )


def test_translation_rules_on_random_inputs(tmp_path):
    (t,) = jax.export.symbolic_shape("T")
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.standard_normal((3, 2, 2, 6)).astype(np.float32),
        "bias": rng.standard_normal((2, 1)).astype(np.float32),
    }
    spec = ExportedFunction(
        _rules_function,
        params,
        [
            jax.ShapeDtypeStruct((t, 7, 5, 4), jnp.float32),
            jax.ShapeDtypeStruct((t, 3, 3), jnp.float32),
        ],
        ["x", "y"],
        ["out"],
        {"model": "rules"},
    )
    path = tmp_path / "rules.onnx"
    onnx_export.export_onnx(spec, path)
    for frames in (1, 5):
        assert onnx_export.check_onnx(str(path), spec, {"T": frames}) < TOLERANCE


def test_an_op_without_a_rule_is_named(tmp_path):
    spec = ExportedFunction(
        lambda p, x: jnp.sort(x * p),
        np.float32(2.0),
        [jax.ShapeDtypeStruct((4,), jnp.float32)],
        ["x"],
        ["y"],
        {},
    )
    with pytest.raises(
        onnx_export.OnnxExportError, match="no ONNX rule for the jax primitive 'sort'"
    ):
        onnx_export.export_onnx(spec, tmp_path / "sort.onnx")
    assert not (tmp_path / "sort.onnx").exists()


def test_export_command_writes_and_checks_onnx(weight_files, tmp_path):
    out = tmp_path / "s1.onnx"
    proc = cli_processes.run(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "export",
            f"--weights={weight_files['anitalker_stage1']}",
            "--format=onnx",
            f"--out={out}",
        ],
        cwd=REPO,
        env=cli_env(1),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ONNX opset 18" in proc.stdout and "alphas (T, 5) float32" in proc.stdout
    error = float(re.search(r"max abs error (\S+)", proc.stdout).group(1))
    assert error < TOLERANCE, proc.stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    (frames,) = session.run(
        None,
        {
            "source": rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32),
            "alphas": rng.standard_normal((2, 5)).astype(np.float32),
        },
    )
    assert frames.shape == (2, 32, 32, 3) and np.isfinite(frames).all()
