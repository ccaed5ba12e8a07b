"""wav2vec2-base (AniPortrait's audio encoder) through the HuBERT network and converter:
sizes at full scale, a Wav2Vec2ForCTC folder round trip (prefix and CTC head kept),
errors, AniPortrait's linear resampling of the conv features, and parity with
transformers' Wav2Vec2Model on a tiny config with random weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxtalk.convert import hf_files, releases, torch_pickle, weights
from jaxtalk.convert import hubert as conv
from jaxtalk.convert.mapping import ConversionError, to_params
from jaxtalk.models.audio import hubert as H
from jaxtalk.models.param_hook import eval_shape_init
from tests.convert.hf_parity import check, errors, hf_fields, numpy_state, reference
from tests.convert.test_hubert import TINY_BASE
from tests.convert.test_sd_vae import assert_same
from tests.evaluate.torch_layout import random_state_dict

TINY_W2V = TINY_BASE  # wav2vec2-base style: group-norm first conv, post-LN, no conv bias
TINY_HF_CONFIG = {
    "architectures": ["Wav2Vec2ForCTC"],
    "model_type": "wav2vec2",
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 24,
    "conv_dim": [8, 8, 8],
    "conv_kernel": [10, 3, 2],
    "conv_stride": [5, 2, 2],
    "num_conv_pos_embeddings": 4,
    "num_conv_pos_embedding_groups": 2,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "conv_bias": False,
    "vocab_size": 5,
}


def _shapes(config):
    model = H.HubertModel(config)
    return nn.unbox(eval_shape_init(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 400))))[
        "params"
    ]


def test_full_size():
    params = _shapes(H.WAV2VEC2_BASE)
    assert sum(x.size for x in jax.tree.leaves(params)) == 94_371_712
    assert len(conv.rules_for(H.WAV2VEC2_BASE, "parametrizations")) == 211


def test_full_size_key_list_matches_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = transformers.Wav2Vec2Model(transformers.Wav2Vec2Config())  # = wav2vec2-base
    state = model.state_dict()
    assert {r.torch_key for r in conv.rules_for(H.WAV2VEC2_BASE, "parametrizations")} == set(state)
    assert sum(v.numel() for v in state.values()) == 94_371_712


def ctc_state(seed=0):
    """A Wav2Vec2ForCTC file: the encoder under wav2vec2., the CTC head beside it."""
    rng = np.random.default_rng(seed)
    rules = conv.rules_for(TINY_W2V, "legacy")
    state = random_state_dict(rules, _shapes(TINY_W2V), rng, False)
    out = {"wav2vec2." + k: v for k, v in state.items()}
    out["lm_head.weight"] = rng.standard_normal((5, 16)).astype(np.float32)
    out["lm_head.bias"] = rng.standard_normal(5).astype(np.float32)
    return out


def test_ctc_folder_round_trip(tmp_path):
    state = ctc_state()
    folder = tmp_path / "wav2vec2-base-960h"
    folder.mkdir()
    torch_pickle.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
    stored = releases.import_release("wav2vec2_base", folder, output=str(tmp_path / "w.st"))
    variables = weights.load(stored)
    assert conv.hubert_config(variables["model_config"]) == TINY_W2V  # heads, strides: config
    assert set(variables["buffers"]) == {"lm_head.weight", "lm_head.bias"}
    releases.export_release("wav2vec2_base", variables, tmp_path / "out")
    assert_same(torch_pickle.load_state_dict(tmp_path / "out" / "pytorch_model.bin"), state)
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == TINY_HF_CONFIG
    conv.export_checkpoint(variables, tmp_path / "one.safetensors")
    assert_same(hf_files.read_state_dict(str(tmp_path / "one.safetensors"))[0], state)


def test_unknown_keys_beside_the_encoder_fail_in_one_line(tmp_path):
    state = ctc_state()
    state["classifier.weight"] = np.zeros((2, 16), np.float32)
    torch_pickle.save(state, tmp_path / "m.bin")
    with pytest.raises(ConversionError, match="unexpected key 'classifier.weight'") as info:
        conv.import_checkpoint(tmp_path / "m.bin")
    assert "\n" not in str(info.value) and "m.bin" in str(info.value)
    state = ctc_state()
    del state["wav2vec2.encoder.layers.1.attention.k_proj.bias"]
    torch_pickle.save(state, tmp_path / "m.bin")
    with pytest.raises(
        ConversionError, match="missing key 'encoder.layers.1.attention.k_proj.bias'"
    ) as info:
        conv.import_checkpoint(tmp_path / "m.bin", num_heads=4, conv_stride=(5, 2, 2))
    assert "\n" not in str(info.value)


@jax.enable_x64(True)
def test_linear_resample():
    ramp = np.arange(50, dtype=np.float64)[None, :, None] * np.array([1.0, -2.0])
    for frames in (1, 2, 30, 75):
        out = np.asarray(H.linear_resample(ramp, frames))
        assert out.shape == (1, frames, 2)
        want = np.linspace(0, 49, frames) if frames > 1 else np.zeros(1)
        np.testing.assert_allclose(out[0, :, 0], want, atol=1e-12)
        np.testing.assert_allclose(out[0, :, 1], -2 * want, atol=1e-12)
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((2, 49, 3))
    for frames in (1, 30, 100):
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x).transpose(1, 2), size=frames, mode="linear", align_corners=True
        ).transpose(1, 2)
        np.testing.assert_allclose(H.linear_resample(x, frames), want.numpy(), atol=1e-12)
    with pytest.raises(ValueError):
        H.linear_resample(x, 0)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_parity_with_transformers(tmp_path, precision):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.Wav2Vec2Config(**hf_fields(TINY_HF_CONFIG))
    model = reference(lambda: transformers.Wav2Vec2Model(hf_config), precision)
    state = numpy_state(model)
    hf_files.write_state_dict(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
    config = conv.hubert_config(conv.import_checkpoint(tmp_path)["model_config"])
    assert config == TINY_W2V
    rules = conv.rules_for(config, conv.weight_norm_style(state))
    params = to_params(state, rules, _shapes(config), dtype=precision)
    wav = H.normalize_waveform(np.random.default_rng(1).standard_normal(1200)).astype(precision)
    frames = 7  # AniPortrait resamples the conv features to the video's frame count
    with torch.no_grad():
        x = torch.from_numpy(wav)[None]
        plain = model(x, output_hidden_states=True)
        # AniPortrait's forward: the conv features (B, C, T) resampled before the rest
        extract = model.feature_extractor.forward
        model.feature_extractor.forward = lambda wav: torch.nn.functional.interpolate(
            extract(wav), size=frames, mode="linear", align_corners=True
        )
        resampled = model(x, output_hidden_states=True)
    jdtype = getattr(jnp, precision)
    with jax.enable_x64(precision == "float64"):
        ours = H.HubertModel(config, dtype=jdtype, param_dtype=jdtype)
        params = jax.tree.map(lambda a: jnp.asarray(a, jdtype), params)
        run = jax.jit(ours.apply, static_argnames="frames")
        got_plain = run({"params": params}, wav[None])
        got_resampled = run({"params": params}, wav[None], frames=frames)
    found = {}
    for name, got, want in (("plain", got_plain, plain), ("resampled", got_resampled, resampled)):
        assert len(got) == len(want.hidden_states) == config.num_layers + 1
        found[name] = max((errors(g, w.numpy()) for g, w in zip(got, want.hidden_states)))
        found[name + "_last"] = errors(got[-1], want.last_hidden_state.numpy())
    assert got_resampled[-1].shape == (1, frames, 16)
    check("wav2vec2", precision, found)
