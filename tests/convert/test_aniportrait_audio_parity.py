"""Parity with the official AniPortrait audio models (src/audio_models: Audio2MeshModel.infer,
Audio2PoseModel.infer) on CPU torch, at tiny widths (wav2vec2 of width 128, latent 32; the
release's 8 decoder layers and 8 heads) with random weights: every parameter perturbed, the
zero-initialised out_fn included. Their state_dicts go through jaxtalk's importer and both
sides run the same audio in float64 and float32. Audio2Pose's rollout is compared at every
generated step (the release's pose_map_r output for the newest frame, hooked at each
iteration of its loop), not only on the final sequence. Needs the official source tree:

    ANIPORTRAIT_CODE=/path/to/AniPortrait pytest -n 0 -s tests/convert/test_aniportrait_audio_parity.py
"""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import aniportrait_audio as conv
from jaxtalk.convert.mapping import flatten_params
from jaxtalk.models.aniportrait.audio2pose import rollout, sinusoid_table
from jaxtalk.models.audio.hubert import WAV2VEC2_BASE
from tests.convert.hf_parity import perturbed

CODE = os.environ.get("ANIPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="ANIPORTRAIT_CODE (official source) not set")

WAV2VEC2_TINY = dict(
    model_type="wav2vec2",
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    conv_dim=[16] * 7,
    conv_kernel=[10, 3, 3, 3, 3, 2, 2],
    conv_stride=[5, 2, 2, 2, 2, 2, 2],
    conv_bias=False,
    feat_extract_norm="group",
    do_stable_layer_norm=False,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
    mask_time_prob=0.05,
)
LATENT = 32
FRAMES = 15  # half a second at the release's 30 fps
# Max abs difference, relative to the largest output magnitude (at least 1).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("wav2vec2_tiny")
    (folder / "config.json").write_text(json.dumps(WAV2VEC2_TINY))
    sys.path.insert(0, CODE)
    from src.audio_models.model import Audio2MeshModel
    from src.audio_models.pose_model import Audio2PoseModel

    def build(cls, out_dim, seed):
        torch.manual_seed(seed)
        config = dict(
            out_dim=out_dim,
            latent_dim=LATENT,
            model_path=str(folder),
            only_last_fetures=True,
            from_pretrained=False,
        )
        model = cls(config)
        # The release sets config.output_attentions, which transformers 5 allows with the
        # eager attention only (the outputs are the same).
        model.audio_encoder.set_attn_implementation("eager")
        return perturbed(model, seed=seed, scale=0.1)

    return torch, {"mesh": build(Audio2MeshModel, 1404, 0), "pose": build(Audio2PoseModel, 6, 1)}


def audio(torch, precision):
    wav = np.random.default_rng(3).standard_normal((1, 8000))
    return wav.astype(precision), torch.from_numpy(wav.astype(precision))


def imported(torch_model, precision):
    """The official state_dict through the importer, params in `precision`."""
    sd = {k: v.detach().float().numpy() for k, v in torch_model.state_dict().items()}
    variables = conv.variables_from_state_dict(sd, source="official", audio={"num_heads": 4})
    params = jax.tree.map(lambda a: jnp.asarray(a, precision), variables["params"])
    model = conv.model_from_options(
        conv.kind_of(variables["model_config"]), variables["model_config"], dtype=precision
    )
    return model, {"params": params, "buffers": variables["buffers"]}


def relative_error(got, want):
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(1.0, np.abs(want).max()))


def set_precision(torch, module, precision):
    module = module.to(getattr(torch, precision))
    if hasattr(module, "biased_mask"):  # a plain attribute: .to() leaves it float32
        module.biased_mask = module.biased_mask.to(getattr(torch, precision))
    return module


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_audio2mesh_matches_release(official, precision):
    torch, models = official
    release = set_precision(torch, models["mesh"], precision)
    wav, wav_t = audio(torch, precision)
    with torch.no_grad():
        want = release.infer(wav_t, FRAMES).numpy()
    with jax.enable_x64(precision == "float64"):
        model, variables = imported(release, precision)
        got = np.asarray(model.apply(variables, jnp.asarray(wav), FRAMES))
    err = relative_error(got, want)
    print(
        f"\naudio2mesh {precision}: max |diff| / max |out| {err:.2e} (max |out| {np.abs(want).max():.2f})"
    )
    assert got.shape == want.shape == (1, FRAMES, 1404)
    assert err <= TOLERANCE[precision]


def official_rollout(torch, release, wav_t, identity):
    """The release's infer and, from a hook on pose_map_r, the pose it generated at each
    step (the newest frame of that iteration's decoder output)."""
    steps = []
    hook = release.pose_map_r.register_forward_hook(lambda m, i, out: steps.append(out[:, -1]))
    default = torch.get_default_dtype()
    torch.set_default_dtype(wav_t.dtype)  # infer starts from torch.zeros (default dtype)
    try:
        with torch.no_grad():
            final = release.infer(wav_t, FRAMES, torch.LongTensor([identity]))
    finally:
        hook.remove()
        torch.set_default_dtype(default)
    return final.numpy(), torch.stack(steps, 1).numpy()


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_audio2pose_rollout_matches_release_step_by_step(official, precision):
    torch, models = official
    release = set_precision(torch, models["pose"], precision)
    identity = 37
    wav, wav_t = audio(torch, precision)
    final, steps = official_rollout(torch, release, wav_t, identity)
    # The table the model computes is the release's to the last bits of torch's float32
    # exp and sin; an imported model uses the file's own (the "buffers" collection).
    table = release.PPE.pe[0].float().numpy()
    np.testing.assert_allclose(sinusoid_table(600, LATENT), table, atol=2e-5)
    with jax.enable_x64(precision == "float64"):
        model, variables = imported(release, precision)
        ident = jnp.asarray([identity])
        got = np.asarray(
            jax.jit(lambda v, w: rollout(model, v, w, FRAMES, ident))(variables, jnp.asarray(wav))
        )
        # Teacher forcing on the generated poses reproduces them (query t = pose t-1).
        forced = np.asarray(model.apply(variables, jnp.asarray(wav), jnp.asarray(got), ident))
    assert steps.shape == got.shape == (1, FRAMES, 6)
    per_step = [relative_error(got[:, i], steps[:, i]) for i in range(FRAMES)]
    err_final = relative_error(got, final)
    err_forced = relative_error(forced, got)
    print(
        f"\naudio2pose {precision}: worst step {max(per_step):.2e} (step "
        f"{int(np.argmax(per_step))}), final sequence {err_final:.2e}, teacher-forced "
        f"{err_forced:.2e}; max |pose| {np.abs(final).max():.2f}, spread over steps "
        f"{np.ptp(final[0], axis=0).max():.2f}"
    )
    assert max(per_step) <= TOLERANCE[precision]
    assert err_final <= TOLERANCE[precision]
    assert err_forced <= TOLERANCE[precision]


def test_full_size_keys_shapes_and_order_match_release(tmp_path, monkeypatch):
    """The released models at full size (wav2vec2-base-960h's config), built on torch's meta
    device: the state_dict's keys, in order, are the importer's (PPE.pe after in_fn, as
    registered), each shape maps onto the Flax parameter's, and the parameter counts are
    95,485,692 and 120,058,758."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    sys.path.insert(0, CODE)
    from src.audio_models import pose_model
    from src.audio_models.model import Audio2MeshModel
    from src.audio_models.pose_model import Audio2PoseModel

    # Its biased mask (a plain attribute, not in the state_dict) is built with a CPU tensor
    # constructor that the meta device refuses.
    monkeypatch.setattr(pose_model, "init_biased_mask", lambda **_: None)
    config = dict(latent_dim=512, model_path=str(tmp_path), only_last_fetures=True)
    for kind, cls, out_dim, count in (
        ("mesh", Audio2MeshModel, 1404, 95_485_692),
        ("pose", Audio2PoseModel, 6, 120_058_758),
    ):
        with torch.device("meta"):
            release = cls(dict(config, out_dim=out_dim, from_pretrained=False))
        assert sum(p.numel() for p in release.parameters()) == count
        shapes = {k: tuple(v.shape) for k, v in release.state_dict().items()}
        style = "parametrizations" if any("parametrizations" in k for k in shapes) else "legacy"
        options = dict(audio=dataclasses.asdict(WAV2VEC2_BASE), latent_dim=512, out_dim=out_dim)
        if kind == "pose":
            options.update(num_layers=8, ffn_dim=1024, num_ids=100, max_len=600)
        rules = conv.rules_for(kind, options, style)
        order = [r.torch_key for r in rules]
        if kind == "pose":
            order = list(conv._insert_after(dict.fromkeys(order), "in_fn.bias", "PPE.pe", None))
        assert order == list(shapes)
        params = flatten_params(conv.reference_params(conv.model_from_options(kind, options), kind))
        assert sum(int(np.prod(s.shape)) for s in params.values()) == count
        for rule in rules:
            mapped = rule.layout.to_flax(np.broadcast_to(np.float32(0), shapes[rule.torch_key]))
            assert mapped.shape == params[rule.param_path].shape, rule.torch_key
