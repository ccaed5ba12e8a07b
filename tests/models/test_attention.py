"""The attention dispatch: every choice runnable on a CPU agrees with a written-out numpy
softmax(q k^T / sqrt(d)) v (float32 and float64, with and without per-sample key
lengths), "auto" picks the plain dot product on a CPU, and the platform rules pick the
fused kernels only where their constraints hold."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models.layers import attention as attn

CPU_CHOICES = ("auto", "xla", "dot_product")


def numpy_reference(q, k, v, kv_lengths=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if kv_lengths is not None:
        present = np.arange(k.shape[1])[None, :] < np.asarray(kv_lengths)[:, None]
        logits = np.where(present[:, None, None, :], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


def _inputs(dtype, lq=7, lk=9, heads=2, dim=8):
    rng = np.random.default_rng(0)
    shape = lambda n: (3, n, heads, dim)  # noqa: E731
    return [rng.standard_normal(shape(n)).astype(dtype) for n in (lq, lk, lk)]


# jax.nn.dot_product_attention's XLA path takes its softmax in float32 even for float64
# inputs, so it agrees to float32 precision only; the dispatch's own "xla" (what "auto"
# runs on a CPU) keeps float64.
FLOAT32_SOFTMAX = ("dot_product",)


@pytest.mark.parametrize("dtype,tol", [("float32", 2e-6), ("float64", 1e-13)])
@pytest.mark.parametrize("lengths", [None, (9, 4, 1)])
def test_choices_agree_with_the_written_out_reference(dtype, tol, lengths):
    with jax.enable_x64(dtype == "float64"):
        q, k, v = _inputs(dtype)
        want = numpy_reference(q, k, v, lengths)
        got = {
            name: np.asarray(attn.attention(q, k, v, implementation=name, kv_lengths=lengths))
            for name in CPU_CHOICES
        }
        for name, out in got.items():
            assert out.dtype == np.dtype(dtype), name
            bound = 2e-6 if name in FLOAT32_SOFTMAX else tol
            assert np.abs(out - want).max() < bound, (name, np.abs(out - want).max())


def test_masked_keys_equal_absent_keys():
    q, k, v = _inputs("float32")
    short = np.asarray(attn.attention(q, k[:, :4], v[:, :4], implementation="xla"))
    masked = np.asarray(attn.attention(q, k, v, implementation="xla", kv_lengths=(4, 4, 4)))
    np.testing.assert_allclose(masked, short, rtol=0, atol=1e-6)


def test_auto_on_cpu_is_the_plain_dot_product():
    assert jax.default_backend() == "cpu"
    for lk in (16, 4096):
        q, k, _ = _inputs("float32", lq=lk, lk=lk)
        assert attn.choose(q, k) == "xla"
        assert attn.choose(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16)) == "xla"


def test_platform_rules(monkeypatch):
    def spec(lq, lk, dim, dtype):
        return jax.ShapeDtypeStruct((1, lq, 8, dim), dtype), jax.ShapeDtypeStruct(
            (1, lk, 8, dim), dtype
        )

    monkeypatch.setattr(attn, "_platform", lambda: "gpu")
    assert attn.choose(*spec(4096, 8192, 40, jnp.bfloat16)) == "cudnn"
    assert attn.choose(*spec(4096, 4096, 80, jnp.float16)) == "cudnn"
    assert attn.choose(*spec(4096, 4096, 80, jnp.float32)) == "xla"  # cuDNN: fp16/bf16 only
    assert attn.choose(*spec(256, 256, 160, jnp.bfloat16)) == "xla"  # head dim above 128
    assert attn.choose(*spec(4096, 16, 40, jnp.bfloat16)) == "xla"  # few keys (temporal)
    monkeypatch.setattr(attn, "_platform", lambda: "tpu")
    assert attn.choose(*spec(4096, 8192, 40, jnp.bfloat16)) == "pallas"
    assert attn.choose(*spec(4096, 4173, 40, jnp.bfloat16)) == "xla"  # not a block multiple
    with pytest.raises(ValueError, match="implementation"):
        attn.choose(*spec(16, 16, 8, jnp.float32), "flash")
