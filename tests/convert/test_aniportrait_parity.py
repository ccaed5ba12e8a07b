"""Parity with AniPortrait's release code (Zejun-Yang/AniPortrait, run under torch only when
ANIPORTRAIT_CODE points at a checkout) at tiny widths, every tensor random (the zero-init
final_proj and motion-module proj_out included), through `jaxtalk.convert.aniportrait`:

- the PoseGuider in train mode (batch statistics, the running statistics it leaves behind,
  the reference branch included) and in eval mode;
- the Lmk2Video forward as train_stage_1/2.py run it: the ReferenceNet writes its bank at
  t=0 (ReferenceAttentionControl "write", fusion "full"), the denoising UNet3D with its v2
  motion modules reads it and adds the PoseGuider's features.

The release's unet_2d_condition.py needs diffusers 0.24, so the ReferenceNet is diffusers'
UNet2DConditionModel (the class it adapts) with the release's BasicTransformerBlock swapped
into every transformer, which is what the release's ReferenceAttentionControl hooks; its
file drops conv_norm_out / conv_out as the release's does. The denoising UNet3D, its motion
modules, the PoseGuider and the reference-attention hooks are the release's own modules.

float64 to 1e-9 and float32 to 1e-4 (max abs) on every output. The release's `update()`
casts the bank to float16 by default; the comparison passes the model's dtype (the
float16 rounding is the release's, not the architecture's). diffusers computes timestep
features and the release its position tables in float32 even in a float64 model; the float64
comparison gives both sides float64 ones.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import aniportrait as ap
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import flatten_params
from jaxtalk.models.latent_diffusion.motion_module import position_table
from tests.convert.test_sd_unet_parity import float64_time_features

CODE = os.environ.get("ANIPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(
    not CODE, reason="ANIPORTRAIT_CODE (a Zejun-Yang/AniPortrait checkout) not set"
)
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("einops")
yaml = pytest.importorskip("yaml")

C = 32  # the PoseGuider's noise_latent_channels; the UNets' blocks are C, 2C, 4C, 4C
B, F, SIDE, CROSS = 2, 3, 128, 16  # pose images SIDE x SIDE, latents SIDE / 8
HEADS, HEAD_DIM = 2, 8  # the PoseGuider transformers' (16 x 88 in the release)
TOL = {"float64": 1e-9, "float32": 1e-4}


def _release():
    if CODE not in sys.path:
        sys.path.insert(0, CODE)
    from src.models import attention, pose_guider, unet_3d
    from src.models.mutual_self_attention import ReferenceAttentionControl

    return pose_guider, attention, unet_3d, ReferenceAttentionControl


def _with_release_blocks(unet, attention):
    """Every diffusers BasicTransformerBlock replaced by the release's, weights kept."""
    blocks = [
        (name, m)
        for name, m in unet.named_modules()
        if isinstance(m, diffusers.models.attention.BasicTransformerBlock)
    ]
    for name, old in blocks:
        heads = old.attn1.heads
        new = attention.BasicTransformerBlock(
            old.norm1.normalized_shape[0],
            heads,
            old.attn1.inner_dim // heads,
            cross_attention_dim=old.attn2.to_k.in_features,
        )
        new.load_state_dict(old.state_dict(), strict=True)
        parent, child = name.rsplit(".", 1)
        unet.get_submodule(parent)[int(child)] = new
    return unet


def _randomize(model, seed):
    """Every parameter random (norm scales near 1), running statistics random too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
            base = 1.0 if ("norm" in name and name.endswith("weight")) or name == "scale" else 0.0
            p.copy_(base + noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen, dtype=b.dtype))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen, dtype=b.dtype))
    return model


def _pose_guider(seed):
    pose_guider, *_ = _release()
    model = pose_guider.PoseGuider(noise_latent_channels=C)
    for i, width in enumerate((C, 2 * C, 4 * C, 4 * C)):  # the release's, at tiny widths
        setattr(
            model,
            f"cross_attn{i + 1}",
            pose_guider.Transformer2DModel(
                in_channels=width, num_attention_heads=HEADS, attention_head_dim=HEAD_DIM
            ),
        )
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.num_batches_tracked.fill_(7)
    return _randomize(model, seed)


def _released_unet3d_kwargs():
    """The inflated UNet's settings as the release's inference config gives them (motion
    modules with the mid-block one, inflated GroupNorm, no temporal attention)."""
    path = os.path.join(CODE, "configs", "inference", "inference_v2.yaml")
    with open(path) as f:
        return yaml.safe_load(f)["unet_additional_kwargs"]


def _unets(seed):
    _, attention, unet_3d, _ = _release()
    common = dict(
        block_out_channels=(C, 2 * C, 4 * C, 4 * C),
        cross_attention_dim=CROSS,
        attention_head_dim=8,
    )
    reference = _with_release_blocks(diffusers.UNet2DConditionModel(**common), attention)
    denoiser = unet_3d.UNet3DConditionModel(
        **common,
        **_released_unet3d_kwargs(),
    )
    return _randomize(reference, seed), _randomize(denoiser, seed + 1)


def _float64_tables(model):
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("pos_encoder.pe"):
                b.copy_(torch.from_numpy(position_table(b.shape[1], b.shape[2])[None]))


def _np(t):
    return t.detach().cpu().numpy()


def _write_release(root, reference, denoiser, guider, dtype):
    """The four release files as train_stage_1/2.py save them."""
    root.mkdir()
    state = {k: _np(v) for k, v in denoiser.state_dict().items()}
    files = {
        "reference_unet.pth": {
            k: _np(v)
            for k, v in reference.state_dict().items()
            if not k.startswith(("conv_norm_out.", "conv_out."))
        },
        "denoising_unet.pth": {k: v for k, v in state.items() if "motion_modules." not in k},
        "motion_module.pth": {k: v for k, v in state.items() if "motion_modules." in k},
        "pose_guider.pth": {k: _np(v) for k, v in guider.state_dict().items()},
    }
    for name, sd in files.items():
        torch_pickle.save(sd, root / name)
    return ap.import_checkpoint(root, pose_guider_heads=HEADS, dtype=dtype)


def _inputs(dtype):
    rng = np.random.default_rng(0)
    return dict(
        pose=rng.uniform(-1, 1, (B, 3, F, SIDE, SIDE)).astype(dtype),
        ref_pose=rng.uniform(-1, 1, (B, 3, SIDE, SIDE)).astype(dtype),
        ref_latents=rng.standard_normal((B, 4, SIDE // 8, SIDE // 8)).astype(dtype),
        latents=rng.standard_normal((B, 4, F, SIDE // 8, SIDE // 8)).astype(dtype),
        context=rng.standard_normal((B, 1, CROSS)).astype(dtype),
        t=np.array([10.0, 981.0], dtype),
    )


def _cl(x, video=False):
    """NCHW / NCFHW -> NHWC / NFHWC."""
    return np.moveaxis(x, 1, -1) if not video else x.transpose(0, 2, 3, 4, 1)


def _flat_stats(guider):
    return {
        k: _np(v)
        for k, v in guider.state_dict().items()
        if k.endswith(("running_mean", "running_var"))
    }


def _jax_stats(batch_stats, config):
    """batch_stats in the release's key names (through the converter's rules)."""
    rules, _ = ap.pose_guider_layout(config)
    flat = flatten_params({"batch_stats": batch_stats})
    return {r.torch_key: np.asarray(flat[r.param_path]) for r in rules if r.param_path in flat}


@pytest.fixture(scope="module")
def release_models():
    guider = _pose_guider(0)
    reference, denoiser = _unets(10)
    return guider, reference, denoiser


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pose_guider_and_lmk2video_forward_match_the_release(tmp_path, release_models, dtype):
    _, _, _, Control = _release()
    tdtype = getattr(torch, dtype)
    guider, reference, denoiser = (m.to(tdtype) for m in release_models)
    if dtype == "float64":
        for m in (reference, denoiser):
            float64_time_features(m)
        _float64_tables(denoiser)
    x = _inputs(dtype)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731

    with jax.enable_x64(dtype == "float64"):
        variables = _write_release(tmp_path / "release", reference, denoiser, guider, dtype)
        cfg = variables["model_config"]
        modules = ap.models(cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        pg = {
            "params": variables["params"]["pose_guider"],
            "batch_stats": variables["batch_stats"]["pose_guider"],
        }
        pose, ref_pose = _cl(x["pose"], video=True), _cl(x["ref_pose"])
        guide = jax.jit(modules["pose_guider"].apply, static_argnames="train")
        errors = {}

        # The PoseGuider, eval then train (train mode moves the release's statistics).
        with torch.no_grad():
            feats = guider.eval()(as_t(x["pose"]), as_t(x["ref_pose"]))
            want_eval = [_np(f) for f in feats]
            guider.train()
            want_train = [_np(f) for f in guider(as_t(x["pose"]), as_t(x["ref_pose"]))]
        got_eval = guide(pg, pose, ref_pose, train=False)
        got_train, updated = jax.jit(
            modules["pose_guider"].apply, static_argnames=("train", "mutable")
        )(pg, pose, ref_pose, train=True, mutable=("batch_stats",))
        for name, want, got in (("eval", want_eval, got_eval), ("train", want_train, got_train)):
            errors[f"pose guider {name}"] = max(
                float(np.abs(np.asarray(g) - _cl(w, video=True)).max()) for g, w in zip(got, want)
            )
        want_stats = _flat_stats(guider)
        got_stats = _jax_stats(updated["batch_stats"], ap.configs(cfg)["pose_guider"])
        assert sorted(got_stats) == sorted(want_stats)
        errors["pose guider statistics"] = max(
            float(np.abs(got_stats[k] - want_stats[k]).max()) for k in want_stats
        )

        # Reference bank at t=0, then the denoising UNet with the eval-mode pose features
        # (computed before the train-mode call moved the statistics).
        writer = Control(
            reference, do_classifier_free_guidance=False, mode="write", fusion_blocks="full"
        )
        reader = Control(
            denoiser, do_classifier_free_guidance=False, mode="read", fusion_blocks="full"
        )
        with torch.no_grad():
            reference(as_t(x["ref_latents"]), torch.zeros(B, dtype=tdtype), as_t(x["context"]))
            reader.update(writer, dtype=tdtype)
            want = denoiser(
                as_t(x["latents"]),
                as_t(x["t"]),
                encoder_hidden_states=as_t(x["context"]),
                pose_cond_fea=feats,
            ).sample
        writer.clear()
        reader.clear()
        params = variables["params"]
        _, bank = jax.jit(modules["reference"].apply)(
            {"params": params["reference"]},
            _cl(x["ref_latents"]),
            np.zeros(B, dtype),
            x["context"],
        )
        got = jax.jit(modules["denoiser"].apply)(
            {"params": params["denoiser"]},
            _cl(x["latents"], video=True),
            x["t"],
            x["context"],
            bank,
            None,
            got_eval,
        )
        want = _cl(_np(want), video=True)
        errors["denoising UNet"] = float(np.abs(np.asarray(got) - want).max())
        # without the pose features or the bank the output moves: both were read
        plain = jax.jit(modules["denoiser"].apply)(
            {"params": params["denoiser"]}, _cl(x["latents"], video=True), x["t"], x["context"]
        )
        assert float(np.abs(np.asarray(plain) - want).max()) > 1e-3

    print(f"\nAniPortrait release vs jaxtalk ({dtype}, max abs):", errors)
    assert all(e <= TOL[dtype] for e in errors.values()), errors
