"""AniPortrait's PoseGuider: landmark drawings -> the features added to the denoising UNet
after conv_in and after each down block.

    guider = PoseGuider(RELEASE)            # or PoseGuider(TINY), PoseGuider(PoseGuiderConfig(...))
    variables = guider.init(rng, pose, reference_pose, train=False)
    feats = guider.apply(variables, pose, reference_pose, train=False)
    feats, updates = guider.apply(variables, pose, reference_pose, train=True,
                                  mutable=["batch_stats"])
    unet3d.apply(unet_vars, latents, t, context, bank=bank, additions=feats)

`pose`: (B, F, H, W, 3) landmark images in [-1, 1] (or (N, H, W, 3) single frames);
`reference_pose`: (B, H, W, 3), the reference image's landmarks, or None. Returns
len(block_out_channels) + 1 NHWC features with pose's leading axes: (..., H/8, W/8, 320),
(..., H/16, W/16, 320), (..., H/32, W/32, 640), (..., H/64, W/64, 1280),
(..., H/64, W/64, 1280) for the release, which is what UNet3DConditionModel's `additions=`
takes.

As released (Zejun-Yang/AniPortrait src/models/pose_guider.py): a conv stack, each conv
followed by BatchNorm and ReLU (3->3, 4x4/2 3->16, 16, 4x4/2 16->32, 32, 4x4/2 32->64, 64,
64->128), `final_proj` (1x1 to 320, zero-initialised) times a learnable `scale` (init 2),
then per UNet level `conv_layers_{i}` (3x3 conv pairs, the second stride 2 except at the
last level) and `cross_attn{i}`, a Transformer2DModel of 16 heads x 88 whose blocks have no
cross-attention, residual around it. The reference pose goes through the same convs but,
with no cross-attention, never reaches the output: in train mode it only moves the shared
BatchNorms' running statistics (after the pose's own update, as the release orders them);
in eval mode it is skipped. BatchNorm is torch's (train: batch statistics, running stats
updated with momentum 0.1 from the unbiased variance, in the mutable `batch_stats`
collection; eval: running stats; eps 1e-5).

The release never calls `.eval()` on it: stage 1, stage 2 (frozen, yet its statistics still
move) and its inference (pipeline_pose2vid_long.py, once per 16-frame context window) all
run the BatchNorms on batch statistics. To reproduce the release's inference, apply with
`train=True, mutable=["batch_stats"]` on one window at a time and drop the updates; the
running statistics in pose_guider.pth are what training accumulated, which the release's
own inference never reads.

167,518,523 parameters (the release's nn.Parameters); batch_stats add 10,310 running
statistics; the release's state_dict (184 keys) also holds 15 num_batches_tracked counters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.latent_diffusion.transformer import Transformer2DModel
from jaxtalk.models.layers.torch_nn import TorchBatchNorm, conv

# The release's conv-stack init: He normal N(0, 2 / fan_in), zero bias; final_proj zeros.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


@dataclasses.dataclass(frozen=True)
class PoseGuiderConfig:
    # The denoising UNet's block widths: one feature after conv_in (width of the first)
    # and one after each down block.
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # Conv-stack widths: one 4x4 stride-2 stage per width but the last (so the pose image
    # is 2 ** (len(stem) - 1) times the latent size), then a 3x3 conv to the last width.
    stem: tuple[int, ...] = (16, 32, 64, 128)
    attention: bool = True  # the release's `use_ca`
    heads: int = 16
    head_dim: int = 88
    norm_groups: int = 32  # the transformers' GroupNorm
    attention_impl: str = "auto"  # jaxtalk.models.layers.attention implementation


RELEASE = PoseGuiderConfig()
# Seconds on a CPU; matches the latent_diffusion.unet TINY UNet (widths 32, 64).
TINY = PoseGuiderConfig(
    block_out_channels=(32, 64), stem=(8, 8, 8, 16), heads=2, head_dim=8, norm_groups=8
)

# (features, kernel, stride, padding) of one Conv2d + BatchNorm + ReLU.
ConvSpec = tuple[int, int, int, int]


def stem_specs(stem: Sequence[int]) -> list[ConvSpec]:
    """The conv stack: 3->3, then per stage a 4x4/2 conv and a 3x3, then 3x3 to stem[-1]."""
    specs = [(3, 3, 1, 1)]
    for width in stem[:-1]:
        specs += [(width, 4, 2, 1), (width, 3, 1, 1)]
    return specs + [(stem[-1], 3, 1, 1)]


def level_specs(block_out_channels: Sequence[int]) -> list[list[ConvSpec]]:
    """Per UNet level: a 3x3 conv at the previous width and a stride-2 one to the level's
    width (the UNet downsamples there), or, at the last level, one 3x3 conv to its width."""
    last = len(block_out_channels) - 1
    out = []
    for i, width in enumerate(block_out_channels):
        previous = block_out_channels[max(i - 1, 0)]
        if i < last:
            out.append([(previous, 3, 1, 1), (width, 3, 2, 1)])
        else:
            out.append([(width, 3, 1, 1)])
    return out


class ConvNormReLU(nn.Module):
    """Conv2d (torch padding) -> torch BatchNorm -> ReLU."""

    spec: ConvSpec
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features, kernel, stride, padding = self.spec
        x = conv(
            features,
            kernel,
            stride=stride,
            padding=padding,
            kernel_init=he_normal,
            **kw,
            name="conv",
        )(x)
        return nn.relu(TorchBatchNorm(**kw, name="norm")(x, train))


class ConvStack(nn.Module):
    """A torch nn.Sequential of ConvNormReLU (its layer j = the release's indices 3j, 3j+1)."""

    specs: tuple[ConvSpec, ...]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j, spec in enumerate(self.specs):
            x = ConvNormReLU(spec, **kw, name=f"layers_{j}")(x, train)
        return x


class PoseGuider(nn.Module):
    """Landmark images -> the UNet's additions (see the module docstring)."""

    config: PoseGuiderConfig = RELEASE
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pose, reference_pose=None, train: bool = False):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        lead = pose.shape[:-3]
        x = pose.reshape((-1,) + pose.shape[-3:]).astype(self.dtype)
        stem = ConvStack(tuple(stem_specs(cfg.stem)), **kw, name="conv_layers")
        final_proj = conv(
            cfg.block_out_channels[0],
            1,
            kernel_init=nn.initializers.zeros_init(),
            **kw,
            name="final_proj",
        )
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.constant(2.0), (None,)),
            (1,),
            self.param_dtype,
        )
        levels = [
            ConvStack(tuple(specs), **kw, name=f"conv_layers_{i + 1}")
            for i, specs in enumerate(level_specs(cfg.block_out_channels))
        ]
        # The reference branch only moves BatchNorm statistics, so it runs in train mode only.
        ref = reference_pose.astype(self.dtype) if train and reference_pose is not None else None

        def project(y):
            return final_proj(stem(y, train)) * scale.astype(self.dtype)

        x = project(x)
        ref = project(ref) if ref is not None else None
        features = [x]
        for i, level in enumerate(levels):
            x = level(x, train)
            ref = level(ref, train) if ref is not None else None
            if cfg.attention:
                x = self._attention(i, x)
            features.append(x)
        return [f.reshape(lead + f.shape[1:]) for f in features]

    def _attention(self, i: int, x: jax.Array) -> jax.Array:
        cfg = self.config
        block = Transformer2DModel(
            cfg.heads,
            groups=cfg.norm_groups,
            inner_features=cfg.heads * cfg.head_dim,
            cross_attention=False,
            attention=cfg.attention_impl,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"cross_attn{i + 1}",
        )
        return block(x, None)[0]
