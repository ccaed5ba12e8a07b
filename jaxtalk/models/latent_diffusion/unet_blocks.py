"""The SD UNet's down, mid and up blocks on (N, H, W, C), frames folded into N.

Each block is resnet (+ spatial transformer where the level has cross-attention) per layer,
then an optional motion module over frames (the UNet inflated over frames), then the
resampler. Blocks return the spatial transformers' recorded norm1 outputs by block name
("down_blocks.0.attentions.1.transformer_blocks.0", ...) and read a reference bank by the
same names (`transformer.py`). Submodule names follow the diffusers state_dict
(`resnets_0`, `attentions_0`, `motion_modules_0`, `downsamplers_0`, `upsamplers_0`).

`motion_module(channels) -> nn.Module`, called as `module(x, frames)`, builds the temporal
module of one slot (AnimateDiff's sits after each resnet / attention pair); None: no slots.
`remat` rematerialises every resnet and spatial transformer in the backward pass.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.latent_diffusion.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from jaxtalk.models.latent_diffusion.transformer import Transformer2DModel
from jaxtalk.models.layers.sharding import constrain

MotionFactory = Callable[[int], nn.Module]


class _Block(nn.Module):
    """What every block shares: its widths, norms, attention and the motion-module slots."""

    features: int
    num_layers: int
    prefix: str  # the block's state_dict name, e.g. "down_blocks.1"
    cross_attention: bool = True
    heads: int = 8
    transformer_layers: int = 1
    groups: int = 32
    resnet_eps: float = 1e-5
    transformer_eps: float = 1e-6
    layer_norm_eps: float = 1e-5
    motion_module: MotionFactory | None = None
    video_norm: bool = False  # resnet GroupNorms over all frames of a video (MegActor)
    remat: bool = False
    attention: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        if self.motion_module is not None:
            self.motion_modules = [self.motion_module(self.features) for _ in range(self.slots)]

    @property
    def slots(self) -> int:
        return self.num_layers

    def resnet(self, j: int):
        """The resnet `resnets_{j}`, called as (x, temb, frames)."""
        cls = nn.remat(ResnetBlock2D, static_argnums=(3,)) if self.remat else ResnetBlock2D
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, video_norm=self.video_norm)
        return cls(self.features, self.groups, self.resnet_eps, **kw, name=f"resnets_{j}")

    def attend(self, j, x, context, bank, reference_mask, cut_last=False):
        """The spatial transformer `attentions_{j}`: (output, {name: norm1})."""
        cls = nn.remat(Transformer2DModel) if self.remat else Transformer2DModel
        name = f"{self.prefix}.attentions.{j}"
        names = [f"{name}.transformer_blocks.{i}" for i in range(self.transformer_layers)]
        references = tuple(bank.get(n) for n in names) if bank else None
        y, recorded = cls(
            self.heads,
            self.transformer_layers,
            self.groups,
            self.transformer_eps,
            self.layer_norm_eps,
            cut_last=cut_last,
            attention=self.attention,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"attentions_{j}",
        )(x, context, references, reference_mask)
        return y, dict(zip(names, recorded))

    def temporal(self, j, x, frames):
        if self.motion_module is None:
            return x
        return constrain(self.motion_modules[j](x, frames))


class DownBlock(_Block):
    """(CrossAttn)DownBlock2D/3D: returns (output, skip outputs, recorded)."""

    add_downsample: bool = True

    @nn.compact
    def __call__(
        self, x, temb, context, bank: Mapping | None = None, reference_mask=None, frames=1
    ):
        skips, recorded = [], {}
        for j in range(self.num_layers):
            x = constrain(self.resnet(j)(x, temb, frames))
            if self.cross_attention:
                x, rec = self.attend(j, x, context, bank, reference_mask)
                x = constrain(x)
                recorded.update(rec)
            x = self.temporal(j, x, frames)
            skips.append(x)
        if self.add_downsample:
            kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
            x = constrain(Downsample2D(self.features, **kw, name="downsamplers_0")(x))
            skips.append(x)
        return x, skips, recorded


class MidBlock(_Block):
    """UNetMidBlock2DCrossAttn (3D): resnet, then (attention, motion, resnet) per layer."""

    @nn.compact
    def __call__(
        self, x, temb, context, bank: Mapping | None = None, reference_mask=None, frames=1
    ):
        recorded = {}
        x = constrain(self.resnet(0)(x, temb, frames))
        for j in range(self.num_layers):
            x, rec = self.attend(j, x, context, bank, reference_mask)
            recorded.update(rec)
            x = self.temporal(j, constrain(x), frames)
            x = constrain(self.resnet(j + 1)(x, temb, frames))
        return x, recorded


class UpBlock(_Block):
    """(CrossAttn)UpBlock2D/3D: each layer concatenates the next skip (channels last) before
    its resnet. `cut_last`: the last layer's transformer is cut to its last norm1 and the
    block returns None (MegActor's ReferenceNet)."""

    add_upsample: bool = True
    cut_last: bool = False

    @nn.compact
    def __call__(
        self,
        x,
        skips,
        temb,
        context,
        bank: Mapping | None = None,
        reference_mask=None,
        frames=1,
        size=None,
    ):
        recorded = {}
        for j in range(self.num_layers):
            x = jnp.concatenate([x, skips[j].astype(x.dtype)], axis=-1)
            x = constrain(self.resnet(j)(x, temb, frames))
            if self.cross_attention:
                cut = self.cut_last and j == self.num_layers - 1
                x, rec = self.attend(j, x, context, bank, reference_mask, cut_last=cut)
                recorded.update(rec)
                if x is None:
                    return None, recorded
                x = constrain(x)
            x = self.temporal(j, x, frames)
        if self.add_upsample:
            kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
            x = constrain(Upsample2D(self.features, **kw, name="upsamplers_0")(x, size))
        return x, recorded
