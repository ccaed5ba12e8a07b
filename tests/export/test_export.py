"""safetensors params and serialized jax.export functions (run without jaxtalk)."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.export import jax_function, safetensors_io
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.train.grouped_init import grouped_initializers

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


def test_safetensors_round_trip(tmp_path):
    params = {
        "enc": {
            "fc_0": {
                "kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                "bias": np.zeros(3, np.float32),
            }
        },
        "ws": jnp.ones((8,), jnp.bfloat16),
    }
    safetensors_io.save_params(
        params, tmp_path / "p.safetensors", {"model": "lia", "config": {"size": 32}}
    )
    back, meta = safetensors_io.load_params(tmp_path / "p.safetensors")
    assert meta["model"] == "lia" and meta["config"] == {"size": 32}
    np.testing.assert_array_equal(back["enc"]["fc_0"]["kernel"], params["enc"]["fc_0"]["kernel"])
    assert back["ws"].dtype == jnp.bfloat16 and back["ws"].shape == (8,)
    with pytest.raises(ValueError, match="not a readable safetensors"):
        (tmp_path / "bad.safetensors").write_bytes(b"garbage")
        safetensors_io.load_params(tmp_path / "bad.safetensors")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = LIAGenerator(**TINY)
    rng = np.random.default_rng(0)
    src = rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    v = nn.unbox(jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), src, src))
    (t,) = jax.export.symbolic_shape("T")
    path = tmp_path_factory.mktemp("exp") / "lia.jaxfn"

    def fn(params, source, alphas):
        return model.apply({"params": params}, source, alphas, method="animate")

    manifest = jax_function.export_function(
        fn,
        v["params"],
        [
            jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32),
            jax.ShapeDtypeStruct((t, 5), jnp.float32),
        ],
        path,
        input_names=["source", "alphas"],
        output_names=["frames"],
        metadata={"model": "lia", "size": 32},
    )
    alphas = rng.standard_normal((3, 5)).astype(np.float32)
    want = np.asarray(jax.jit(fn)(v["params"], src, alphas))
    return path, manifest, src, alphas, want


def test_exported_function_matches_the_model(exported):
    path, manifest, src, alphas, want = exported
    assert manifest["inputs"][1]["shape"] == ["T", 5]
    assert manifest["outputs"][0]["name"] == "frames"
    fn, m = jax_function.load_function(path)
    (frames,) = fn(src, alphas)
    np.testing.assert_allclose(np.asarray(frames), want, atol=1e-5)
    (one,) = fn(src, alphas[:1])  # symbolic frame count
    assert one.shape == (1, 32, 32, 3)


def test_exported_function_runs_without_jaxtalk(exported, tmp_path):
    path, _, src, alphas, want = exported
    np.save(tmp_path / "src.npy", src)
    np.save(tmp_path / "alphas.npy", alphas)
    script = textwrap.dedent(f"""
        import json, sys, zipfile
        import numpy as np
        sys.modules["jaxtalk"] = None  # any import of jaxtalk fails
        from jax import export
        from safetensors.numpy import load
        with zipfile.ZipFile({str(path)!r}) as z:
            manifest = json.loads(z.read("manifest.json"))
            fn = export.deserialize(bytearray(z.read("function.bin")))
            w = load(z.read("weights.safetensors"))
        out = fn.call([w[n] for n in manifest["weights"]],
                      np.load({str(tmp_path / "src.npy")!r}), np.load({str(tmp_path / "alphas.npy")!r}))
        np.save({str(tmp_path / "out.npy")!r}, np.asarray(out))
        """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("PYTHONPATH", None)
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, atol=1e-5)


def test_bad_files_are_rejected(tmp_path):
    (tmp_path / "x.jaxfn").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a jaxtalk exported function"):
        jax_function.load_function(tmp_path / "x.jaxfn")
