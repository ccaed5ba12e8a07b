"""HuBERT (Hugging Face layout): sizes, key-complete import/export, numerics against numpy."""

import dataclasses
import math

import jax
import numpy as np
import pytest
from flax import linen as nn
from scipy.special import erf

from jaxtalk.convert import hubert as conv
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import ConversionError
from jaxtalk.models.audio import hubert as H

# transformers HubertModel(config).state_dict(): number of keys and of values
HF_SIZES = {"large": (422, 315_438_720), "base": (211, 94_371_712)}


@pytest.mark.parametrize("name,config", [("large", H.HUBERT_LARGE), ("base", H.HUBERT_BASE)])
def test_full_size_matches_transformers(name, config):
    shapes = nn.meta.unbox(
        jax.eval_shape(
            lambda: H.HubertModel(config).init(
                jax.random.PRNGKey(0), np.zeros((1, 16000), np.float32)
            )
        )
    )
    n = sum(x.size for x in jax.tree.leaves(shapes["params"]))
    assert (len(conv.rules_for(config)), n) == HF_SIZES[name]
    states = jax.eval_shape(lambda v: H.HubertModel(config).apply(v, np.zeros((1, 16000))), shapes)
    assert len(states) == config.num_layers + 1
    assert (
        states[0].shape
        == (1, H.num_frames(16000), config.hidden_size)
        == (1, 49, config.hidden_size)
    )


TINY = H.HubertConfig(
    hidden_size=16,
    num_layers=2,
    num_heads=4,
    intermediate_size=24,
    conv_dim=(8, 8, 8),
    conv_kernel=(10, 3, 2),
    conv_stride=(5, 2, 2),
    pos_conv_kernel=4,
    pos_conv_groups=2,
    feat_extract_norm="layer",
    stable_layer_norm=True,
    conv_bias=True,
)


def _hf_keys(cfg, style="parametrizations"):
    """The HF key names and torch shapes for a HubertConfig, written out independently."""
    d, k = cfg.hidden_size, cfg.pos_conv_kernel
    keys = {"masked_spec_embed": (d,)}
    cin = 1
    for i, (c, kk) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel)):
        keys[f"feature_extractor.conv_layers.{i}.conv.weight"] = (c, cin, kk)
        if cfg.conv_bias:
            keys[f"feature_extractor.conv_layers.{i}.conv.bias"] = (c,)
        if cfg.feat_extract_norm == "layer" or i == 0:
            keys[f"feature_extractor.conv_layers.{i}.layer_norm.weight"] = (c,)
            keys[f"feature_extractor.conv_layers.{i}.layer_norm.bias"] = (c,)
        cin = c
    keys.update(
        {
            "feature_projection.layer_norm.weight": (cin,),
            "feature_projection.layer_norm.bias": (cin,),
            "feature_projection.projection.weight": (d, cin),
            "feature_projection.projection.bias": (d,),
            "encoder.pos_conv_embed.conv.bias": (d,),
            "encoder.layer_norm.weight": (d,),
            "encoder.layer_norm.bias": (d,),
        }
    )
    g, v = (
        ("weight_g", "weight_v")
        if style == "legacy"
        else ("parametrizations.weight.original0", "parametrizations.weight.original1")
    )
    keys[f"encoder.pos_conv_embed.conv.{g}"] = (1, 1, k)
    keys[f"encoder.pos_conv_embed.conv.{v}"] = (d, d // cfg.pos_conv_groups, k)
    for i in range(cfg.num_layers):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            keys[p + f"attention.{proj}.weight"], keys[p + f"attention.{proj}.bias"] = (d, d), (d,)
        keys[p + "feed_forward.intermediate_dense.weight"] = (cfg.intermediate_size, d)
        keys[p + "feed_forward.intermediate_dense.bias"] = (cfg.intermediate_size,)
        keys[p + "feed_forward.output_dense.weight"] = (d, cfg.intermediate_size)
        keys[p + "feed_forward.output_dense.bias"] = (d,)
        for n in ("layer_norm", "final_layer_norm"):
            keys[p + f"{n}.weight"], keys[p + f"{n}.bias"] = (d,), (d,)
    return keys


def _random_state_dict(keys, seed=0):
    rng = np.random.RandomState(seed)
    return {
        k: (rng.randn(*s) * 0.3 + (1.0 if k.endswith("layer_norm.weight") else 0.0)).astype(
            np.float32
        )
        for k, s in keys.items()
    }


@pytest.mark.parametrize("style,prefix", [("parametrizations", ""), ("legacy", "hubert.")])
def test_import_export_key_complete(tmp_path, style, prefix):
    sd = _random_state_dict(_hf_keys(TINY, style))
    torch_pickle.save({prefix + k: v for k, v in sd.items()}, tmp_path / "pytorch_model.bin")
    out = conv.import_checkpoint(tmp_path / "pytorch_model.bin", num_heads=4, conv_stride=(5, 2, 2))
    assert conv.hubert_config(out["model_config"]) == TINY
    np.testing.assert_array_equal(
        out["params"]["pos_conv_embed"]["weight_v"],
        sd[
            f"encoder.pos_conv_embed.conv."
            f"{'weight_v' if style == 'legacy' else 'parametrizations.weight.original1'}"
        ].transpose(2, 1, 0),
    )
    conv.export_checkpoint(out, tmp_path / "back.bin", weight_norm_keys=style)
    back = torch_pickle.load_state_dict(tmp_path / "back.bin")
    assert set(back) == {prefix + k for k in sd}  # the prefix read is written back
    for k in sd:
        np.testing.assert_array_equal(back[prefix + k], sd[k])
    del sd["encoder.layers.1.final_layer_norm.bias"]
    torch_pickle.save(sd, tmp_path / "broken.bin")
    with pytest.raises(ConversionError, match="final_layer_norm"):
        conv.import_checkpoint(tmp_path / "broken.bin", num_heads=4, conv_stride=(5, 2, 2))


def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _ln(x, w, b, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _np_hubert(sd, cfg, wav):
    """Straight numpy HubertModel forward (HF semantics) from torch-layout weights."""
    x = wav[:, None].astype(np.float64)  # (samples, C)
    for i, (k, s) in enumerate(zip(cfg.conv_kernel, cfg.conv_stride)):
        w = sd[f"feature_extractor.conv_layers.{i}.conv.weight"]  # (O, I, K)
        n = (len(x) - k) // s + 1
        x = np.stack([np.einsum("ki,oik->o", x[t * s : t * s + k], w) for t in range(n)])
        x = x + sd.get(f"feature_extractor.conv_layers.{i}.conv.bias", 0)
        p = f"feature_extractor.conv_layers.{i}.layer_norm."
        if cfg.feat_extract_norm == "layer":
            x = _ln(x, sd[p + "weight"], sd[p + "bias"])
        elif i == 0:  # GroupNorm with a group per channel: normalise over time
            x = _ln(x.T, 1.0, 0.0).T * sd[p + "weight"] + sd[p + "bias"]
        x = _gelu(x)
    x = _ln(x, sd["feature_projection.layer_norm.weight"], sd["feature_projection.layer_norm.bias"])
    x = x @ sd["feature_projection.projection.weight"].T + sd["feature_projection.projection.bias"]
    g = sd["encoder.pos_conv_embed.conv.parametrizations.weight.original0"]
    v = sd["encoder.pos_conv_embed.conv.parametrizations.weight.original1"]
    w = g * v / np.sqrt((v**2).sum(axis=(0, 1), keepdims=True))  # (O, I/g, K)
    k, groups, d = cfg.pos_conv_kernel, cfg.pos_conv_groups, cfg.hidden_size
    xp = np.pad(x, ((k // 2, k // 2), (0, 0)))
    per = d // groups
    pos = np.zeros((len(xp) - k + 1, d))
    for gi in range(groups):
        sl = slice(gi * per, (gi + 1) * per)
        for t in range(len(pos)):
            pos[t, sl] = np.einsum("ki,oik->o", xp[t : t + k, sl], w[sl])
    pos = _gelu(pos[: len(x)] + sd["encoder.pos_conv_embed.conv.bias"])
    x = x + pos
    if not cfg.stable_layer_norm:
        x = _ln(x, sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    states = []
    for i in range(cfg.num_layers):
        states.append(x)
        p = f"encoder.layers.{i}."
        lin = lambda y, n: y @ sd[p + n + ".weight"].T + sd[p + n + ".bias"]
        norm = lambda y, n: _ln(y, sd[p + n + ".weight"], sd[p + n + ".bias"])
        h = norm(x, "layer_norm") if cfg.stable_layer_norm else x
        hd = d // cfg.num_heads
        q, kk, vv = (
            lin(h, f"attention.{n}").reshape(len(h), cfg.num_heads, hd)
            for n in ("q_proj", "k_proj", "v_proj")
        )
        s = np.einsum("qhd,khd->hqk", q, kk) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        x = x + lin(np.einsum("hqk,khd->qhd", s, vv).reshape(len(h), d), "attention.out_proj")
        ff = lambda y: lin(
            _gelu(lin(y, "feed_forward.intermediate_dense")), "feed_forward.output_dense"
        )
        if cfg.stable_layer_norm:
            x = x + ff(norm(x, "final_layer_norm"))
        else:
            x = norm(x, "layer_norm")
            x = norm(x + ff(x), "final_layer_norm")
    if cfg.stable_layer_norm:
        x = _ln(x, sd["encoder.layer_norm.weight"], sd["encoder.layer_norm.bias"])
    states.append(x)
    return states


TINY_BASE = dataclasses.replace(
    TINY, feat_extract_norm="group", stable_layer_norm=False, conv_bias=False
)


@pytest.mark.parametrize("cfg", [TINY, TINY_BASE], ids=["large_style", "base_style"])
def test_forward_matches_numpy(tmp_path, cfg):
    sd = _random_state_dict(_hf_keys(cfg), seed=1)
    torch_pickle.save(sd, tmp_path / "m.bin")
    out = conv.import_checkpoint(tmp_path / "m.bin", num_heads=4, conv_stride=(5, 2, 2))
    assert conv.hubert_config(out["model_config"]) == cfg
    wav = H.normalize_waveform(np.random.RandomState(2).randn(700))
    got = H.HubertModel(cfg).apply({"params": out["params"]}, wav[None])
    want = _np_hubert(sd, cfg, wav)
    assert len(got) == len(want) == cfg.num_layers + 1
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a)[0], b, atol=2e-4, rtol=1e-4)
    stacked = H.stack_for_anitalker(got)
    assert stacked.shape == (1, got[0].shape[1] + 1, 3, 16)
    np.testing.assert_array_equal(stacked[:, -1], stacked[:, -2])


def test_against_transformers_when_installed(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    for norm, stable, bias in (("layer", True, True), ("group", False, False)):
        hf_cfg = transformers.HubertConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=24,
            conv_dim=(8, 8, 8),
            conv_kernel=(10, 3, 2),
            conv_stride=(5, 2, 2),
            num_conv_pos_embeddings=4,
            num_conv_pos_embedding_groups=2,
            feat_extract_norm=norm,
            do_stable_layer_norm=stable,
            conv_bias=bias,
        )
        model = transformers.HubertModel(hf_cfg).eval()
        torch_pickle.save({k: v.numpy() for k, v in model.state_dict().items()}, tmp_path / "m.bin")
        out = conv.import_checkpoint(tmp_path / "m.bin", num_heads=4, conv_stride=(5, 2, 2))
        wav = H.normalize_waveform(np.random.RandomState(3).randn(900))
        with torch.no_grad():
            o = model(torch.from_numpy(wav)[None], output_hidden_states=True)
        cfg = conv.hubert_config(out["model_config"])
        got = H.HubertModel(cfg).apply({"params": out["params"]}, wav[None])
        # all but the last state are the inputs of each layer in every transformers version
        for a, b in zip(got[:-1], o.hidden_states[:-1]):
            np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4)
        np.testing.assert_allclose(np.asarray(got[-1]), o.last_hidden_state.numpy(), atol=1e-4)
