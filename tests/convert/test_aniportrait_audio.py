"""AniPortrait audio2mesh.pt / audio2pose.pt: small files in the released key layout (the key
names written out here, independently of the converter's rules) -> `jaxtalk import` ->
weights file -> `jaxtalk export` is the same file bit for bit (float32 and float16, both
weight-norm namings); a missing, unexpected or misshapen key is one line naming the file
and the key; the importer's model runs on the imported params."""

import dataclasses

import numpy as np
import pytest

from jaxtalk.convert import aniportrait_audio as conv
from jaxtalk.convert import releases, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, flatten_params
from jaxtalk.models.aniportrait.audio2pose import sinusoid_table
from jaxtalk.models.audio import hubert as H
from tests.convert.test_hubert import _hf_keys, _random_state_dict
from tests.models.aniportrait.test_audio_models import TINY_AUDIO

# wav2vec2-base's layout (group norm on the first conv, no conv bias, post-LN) at small sizes;
# hidden 64 gives the one head the importer infers (hidden / 64).
ENCODER = dataclasses.replace(TINY_AUDIO, hidden_size=64, num_heads=1, intermediate_size=32)
LATENT, LAYERS, FFN, IDS, MAX_LEN = 16, 2, 32, 5, 40


def linear_keys(name, out_dim, in_dim):
    return {f"{name}.weight": (out_dim, in_dim), f"{name}.bias": (out_dim,)}


def release_keys(kind, style="legacy"):
    """Key -> shape of Audio2MeshModel / Audio2PoseModel's state_dict at the sizes above."""
    keys = {f"audio_encoder.{k}": s for k, s in _hf_keys(ENCODER, style).items()}
    if kind == "mesh":
        return keys | linear_keys("in_fn", LATENT, 64) | linear_keys("out_fn", 1404, LATENT)
    keys |= linear_keys("pose_map", LATENT, 6) | linear_keys("in_fn", LATENT, 64)
    keys["PPE.pe"] = (1, MAX_LEN, LATENT)
    d = LATENT
    for i in range(LAYERS):
        t = f"transformer_decoder.layers.{i}."
        for attn in ("self_attn", "multihead_attn"):
            keys[t + f"{attn}.in_proj_weight"] = (3 * d, d)
            keys[t + f"{attn}.in_proj_bias"] = (3 * d,)
            keys |= linear_keys(t + f"{attn}.out_proj", d, d)
        keys |= linear_keys(t + "linear1", FFN, d) | linear_keys(t + "linear2", d, FFN)
        for n in (1, 2, 3):
            keys[t + f"norm{n}.weight"], keys[t + f"norm{n}.bias"] = (d,), (d,)
    return keys | linear_keys("pose_map_r", 6, d) | {"id_embed.weight": (IDS, d)}


def release_file(path, kind, style="legacy", dtype=np.float32, seed=0):
    keys = release_keys(kind, style)
    sd = _random_state_dict({k: s for k, s in keys.items() if k != "PPE.pe"}, seed)
    if kind == "pose":
        sd["PPE.pe"] = sinusoid_table(MAX_LEN, LATENT)[None]
    sd = {k: sd[k].astype(dtype) for k in keys}  # the file's key order
    torch_pickle.save(sd, path)
    return sd


@pytest.mark.parametrize(
    "kind,style,dtype",
    [
        ("mesh", "legacy", np.float32),
        ("pose", "parametrizations", np.float32),
        ("pose", "legacy", np.float16),
    ],
)
def test_import_export_round_trip_is_bit_exact(tmp_path, kind, style, dtype):
    sd = release_file(tmp_path / f"audio2{kind}.pt", kind, style, dtype)
    stored = tmp_path / "w.safetensors"
    releases.import_release(
        f"aniportrait_audio2{kind}", tmp_path / f"audio2{kind}.pt", output=str(stored)
    )
    loaded = weights.load(stored)
    assert loaded["model_config"]["kind"] == f"aniportrait_audio2{kind}"
    releases.export_release(f"aniportrait_audio2{kind}", loaded, tmp_path / "back.pt")
    back = torch_pickle.load_state_dict(tmp_path / "back.pt")
    assert sorted(back) == sorted(sd)  # (the order: the parity test, against torch's)
    for key, value in sd.items():
        assert back[key].dtype == value.dtype and back[key].tobytes() == value.tobytes(), key
    # The imported model runs; for the pose model on the file's own position table.
    model = conv.model_from_options(kind, loaded["model_config"])
    variables = {"params": loaded["params"], "buffers": loaded.get("buffers", {})}
    wav = np.random.default_rng(0).standard_normal((1, 4000)).astype(np.float32)
    if kind == "mesh":
        out = model.apply(variables, wav, 6)
        assert out.shape == (1, 6, 1404)
    else:
        out = model.apply(variables, wav, np.zeros((1, 6, 6), np.float32), np.array([IDS - 1]))
        assert out.shape == (1, 6, 6)
    assert np.all(np.isfinite(np.asarray(out)))
    # Mapping spot checks: torch Linear (out, in) -> kernel (in, out); packed in_proj.
    if kind == "pose":
        np.testing.assert_array_equal(
            loaded["params"]["layers_1"]["self_attn"]["in_proj_kernel"],
            sd["transformer_decoder.layers.1.self_attn.in_proj_weight"].astype(np.float32).T,
        )
        np.testing.assert_array_equal(
            loaded["params"]["id_embed"]["embedding"], sd["id_embed.weight"].astype(np.float32)
        )


def test_trained_pose_model_exports_the_computed_position_table(tmp_path):
    release_file(tmp_path / "a.pt", "pose")
    variables = conv.import_checkpoint(tmp_path / "a.pt")
    variables["buffers"] = {}
    conv.export_checkpoint(variables, tmp_path / "b.pt")
    back = torch_pickle.load_state_dict(tmp_path / "b.pt")
    np.testing.assert_array_equal(back["PPE.pe"], sinusoid_table(MAX_LEN, LATENT)[None])
    assert sorted(back) == sorted(release_keys("pose"))


def _one_line_error(path, match):
    with pytest.raises(ConversionError, match=match) as info:
        conv.import_checkpoint(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_files_are_one_line_errors_naming_file_and_key(tmp_path):
    sd = release_file(tmp_path / "a.pt", "pose")
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "pose_map_r.bias"}, "pose_map_r.bias"),
        "unexpected": (sd | {"pose_map_r.extra": np.zeros(2, np.float32)}, "pose_map_r.extra"),
        "shape": (
            sd | {"transformer_decoder.layers.1.linear2.weight": np.zeros((LATENT, 3), np.float32)},
            "layers.1.linear2.weight",
        ),
        "table": (sd | {"PPE.pe": np.zeros((1, MAX_LEN, LATENT), np.float32)}, "PPE.pe"),
        "encoder": (
            {k: v for k, v in sd.items() if not k.startswith("audio_encoder.")},
            "audio_encoder",
        ),
    }
    for name, (state, match) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch_pickle.save(state, path)
        _one_line_error(path, match)
    torch_pickle.save({"something.weight": np.zeros(3, np.float32)}, tmp_path / "other.pt")
    _one_line_error(tmp_path / "other.pt", "neither an Audio2Mesh")
    with pytest.raises(ConversionError, match="audio2pose model, not audio2mesh"):
        conv.import_checkpoint(tmp_path / "a.pt", kind="mesh")


def test_full_size_rules_cover_every_parameter():
    """At the released sizes the rules name exactly the model's parameters: wav2vec2-base's
    211 keys + 4 for audio2mesh; + 4, 18 per decoder layer and 3 for audio2pose (whose
    file also holds PPE.pe)."""
    audio = dataclasses.asdict(H.WAV2VEC2_BASE)
    sizes = {
        "mesh": (dict(out_dim=1404), 215),
        "pose": (dict(out_dim=6, num_layers=8, ffn_dim=1024, num_ids=100, max_len=600), 362),
    }
    for kind, (options, nkeys) in sizes.items():
        options = dict(options, audio=audio, latent_dim=512)
        params = conv.reference_params(conv.model_from_options(kind, options), kind)
        rules = conv.rules_for(kind, options, "legacy")
        assert len(rules) == nkeys
        assert sorted(r.param_path for r in rules) == sorted(flatten_params(params))
