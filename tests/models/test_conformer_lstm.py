"""Conformer and LSTM blocks against independent numpy computations (ESPnet / PyTorch math)."""

import math

import jax
import numpy as np
from flax import linen as nn

from jaxtalk.models.layers import conformer as cf
from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.lstm import LSTM


def _randomize(tree, seed=0, scale=0.3):
    leaves, treedef = jax.tree.flatten(nn.meta.unbox(tree))
    rng = np.random.RandomState(seed)
    return jax.tree.unflatten(
        treedef, [rng.randn(*l.shape).astype(np.float32) * scale for l in leaves]
    )


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _swish(x):
    return x * _sigmoid(x)


def _linear(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def _layer_norm(x, p, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_rel_table(t, d):
    """ESPnet's construction: positive positions flipped, then negative ones 1..T-1."""
    pos = np.arange(t, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, d, 2) * -(math.log(10000.0) / d))
    plus, minus = np.zeros((t, d)), np.zeros((t, d))
    plus[:, 0::2], plus[:, 1::2] = np.sin(pos * div), np.cos(pos * div)
    minus[:, 0::2], minus[:, 1::2] = np.sin(-pos * div), np.cos(-pos * div)
    return np.concatenate([plus[::-1], minus[1:]], 0)


def _np_rel_shift(x):
    """ESPnet's pad-and-reshape trick on (B, H, T, 2T-1)."""
    b, h, t, n = x.shape
    padded = np.concatenate([np.zeros((b, h, t, 1)), x], -1).reshape(b, h, n + 1, t)
    return padded[:, :, 1:].reshape(b, h, t, n)[..., : n // 2 + 1]


def _np_rel_attention(x, pos, p, heads):
    b, t, d = x.shape
    dk = d // heads

    def split(y):
        return y.reshape(y.shape[0], y.shape[1], heads, dk).transpose(0, 2, 1, 3)

    q = _linear(x, p["linear_q"]).reshape(b, t, heads, dk)
    k, v = split(_linear(x, p["linear_k"])), split(_linear(x, p["linear_v"]))
    pp = split(pos @ p["linear_pos"]["kernel"])
    ac = (q + p["pos_bias_u"]).transpose(0, 2, 1, 3) @ k.transpose(0, 1, 3, 2)
    bd = _np_rel_shift((q + p["pos_bias_v"]).transpose(0, 2, 1, 3) @ pp.transpose(0, 1, 3, 2))
    s = (ac + bd) / math.sqrt(dk)
    s = np.exp(s - s.max(-1, keepdims=True))
    s = s / s.sum(-1, keepdims=True)
    out = (s @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    return _linear(out, p["linear_out"])


def _np_conv_module(x, p, stats, kernel):
    c = x.shape[-1]
    y = _linear(
        x, {"kernel": p["pointwise_conv1"]["kernel"][0], "bias": p["pointwise_conv1"]["bias"]}
    )
    y = y[..., :c] * _sigmoid(y[..., c:])
    pad = (kernel - 1) // 2
    yp = np.pad(y, ((0, 0), (pad, pad), (0, 0)))
    w = p["depthwise_conv"]["kernel"][:, 0, :]  # (K, C)
    y = sum(yp[:, i : i + x.shape[1]] * w[i] for i in range(kernel)) + p["depthwise_conv"]["bias"]
    y = (y - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * p["norm"]["scale"] + p["norm"]["bias"]
    y = _swish(y)
    return y @ p["pointwise_conv2"]["kernel"][0] + p["pointwise_conv2"]["bias"]


def _np_ff(x, p):
    return _linear(_swish(_linear(x, p["w_1"])), p["w_2"])


def test_relative_positional_table_matches_espnet_construction():
    table = cf.relative_positional_encoding(7, 16)
    assert table.shape == (13, 16)
    np.testing.assert_allclose(table, _np_rel_table(7, 16), atol=2e-6)


def test_rel_shift_indices_equal_pad_reshape_trick():
    t = 5
    x = np.random.RandomState(0).randn(1, 1, t, 2 * t - 1)
    ours = np.take_along_axis(x, cf.rel_shift_indices(t)[None, None], -1)
    np.testing.assert_array_equal(ours, _np_rel_shift(x))


def test_rel_pos_attention_matches_numpy():
    b, t, d, h = 2, 6, 8, 2
    rng = np.random.RandomState(1)
    x = rng.randn(b, t, d).astype(np.float32)
    pos = _np_rel_table(t, d)[None].astype(np.float32)
    mod = cf.RelPositionMultiHeadAttention(d, h, dropout_rate=0.5)
    params = _randomize(mod.init(jax.random.PRNGKey(0), x, pos)["params"])
    got = mod.apply({"params": params}, x, pos)  # eval: no dropout
    want = _np_rel_attention(x.astype(np.float64), pos, params, h)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_conv_module_glu_depthwise_batchnorm_matches_numpy():
    x = np.random.RandomState(2).randn(2, 9, 6).astype(np.float32)
    mod = cf.ConvolutionModule(6, kernel_size=5)
    variables = mod.init(jax.random.PRNGKey(0), x)
    params = _randomize(variables["params"], seed=3)
    stats = {
        "norm": {
            "mean": np.linspace(-1, 1, 6, dtype=np.float32),
            "var": np.linspace(0.5, 2, 6, dtype=np.float32),
        }
    }
    got = mod.apply({"params": params, "batch_stats": stats}, x)
    want = _np_conv_module(x.astype(np.float64), params, stats["norm"], 5)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_batch_norm_train_uses_batch_stats_and_torch_running_update():
    x = np.random.RandomState(4).randn(3, 5, 4).astype(np.float32) * 2 + 1
    bn = torch_nn.TorchBatchNorm()
    variables = bn.init(jax.random.PRNGKey(0), x)
    y, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    flat = x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(
        np.asarray(y),
        ((flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)).reshape(x.shape),
        atol=1e-5,
    )
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * flat.mean(0), atol=1e-6)
    np.testing.assert_allclose(
        updates["batch_stats"]["var"], 0.9 + 0.1 * flat.var(0, ddof=1), atol=1e-5
    )


def test_conformer_encoder_matches_numpy_post_ln_macaron_block():
    b, t, d, h, k = 2, 7, 8, 2, 3
    x = np.random.RandomState(5).randn(b, t, d).astype(np.float32)
    enc = cf.ConformerEncoder(d, num_heads=h, num_blocks=2, kernel_size=k)
    variables = enc.init(jax.random.PRNGKey(0), x)
    params = _randomize(variables["params"], seed=6)
    stats = _randomize(variables["batch_stats"], seed=7)
    stats = jax.tree.map(np.abs, stats)  # variances must be positive
    got = enc.apply({"params": params, "batch_stats": stats}, x)

    y = x.astype(np.float64) * math.sqrt(d)
    pos = _np_rel_table(t, d)[None]
    for i in range(2):
        p, s = params[f"encoders_{i}"], stats[f"encoders_{i}"]
        y = _layer_norm(y + 0.5 * _np_ff(y, p["feed_forward_macaron"]), p["norm_ff_macaron"])
        y = _layer_norm(y + _np_rel_attention(y, pos, p["self_attn"], h), p["norm_mha"])
        y = _layer_norm(
            y + _np_conv_module(y, p["conv_module"], s["conv_module"]["norm"], k), p["norm_conv"]
        )
        y = _layer_norm(y + 0.5 * _np_ff(y, p["feed_forward"]), p["norm_ff"])
        y = _layer_norm(y, p["norm_final"])
    np.testing.assert_allclose(np.asarray(got), y, atol=2e-4)


def test_conformer_dropout_only_in_train_mode():
    x = np.random.RandomState(8).randn(1, 5, 8).astype(np.float32)
    enc = cf.ConformerEncoder(8, num_blocks=1, kernel_size=3)
    variables = enc.init(jax.random.PRNGKey(0), x)
    a = enc.apply(variables, x)
    np.testing.assert_array_equal(a, enc.apply(variables, x))
    b, _ = enc.apply(
        variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"]
    )
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


def test_lstm_matches_numpy_gate_order_ifgo_and_both_biases():
    b, t, cin, hid = 2, 6, 5, 4
    x = np.random.RandomState(9).randn(b, t, cin).astype(np.float32)
    lstm = LSTM(hid, num_layers=2)
    params = _randomize(lstm.init(jax.random.PRNGKey(0), x)["params"], seed=10, scale=0.5)
    got = lstm.apply({"params": params}, x)

    y = x.astype(np.float64)
    for layer in range(2):
        p = params[f"layer_{layer}"]
        hs, c, hcur = [], np.zeros((b, hid)), np.zeros((b, hid))
        for step in range(t):
            z = (
                y[:, step] @ p["input_kernel"]
                + p["input_bias"]
                + hcur @ p["hidden_kernel"]
                + p["hidden_bias"]
            )
            i, f, g, o = (z[:, n * hid : (n + 1) * hid] for n in range(4))
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            hcur = _sigmoid(o) * np.tanh(c)
            hs.append(hcur)
        y = np.stack(hs, 1)
    np.testing.assert_allclose(np.asarray(got), y, atol=1e-5)


def test_kernels_carry_logical_axis_names():
    x = np.zeros((1, 4, 8), np.float32)
    boxed = cf.ConformerEncoder(8, num_blocks=1, kernel_size=3).init(jax.random.PRNGKey(0), x)
    specs = nn.get_partition_spec(boxed["params"])["encoders_0"]
    assert tuple(specs["self_attn"]["linear_q"]["kernel"]) == ("embed", "heads")
    assert tuple(specs["self_attn"]["linear_out"]["kernel"]) == ("heads", "embed")
    assert tuple(specs["feed_forward"]["w_2"]["kernel"]) == ("mlp", "embed")
    assert tuple(specs["conv_module"]["depthwise_conv"]["kernel"]) == (None, "conv_in", "conv_out")
    assert tuple(specs["norm_final"]["scale"]) == ("norm",)
