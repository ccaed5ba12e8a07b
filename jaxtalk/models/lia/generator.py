"""LIA (Wang et al., "Latent Image Animator", wyhsirius/LIA) generator in Flax, NHWC.

Structure, parameter count (45.12 M at the released config) and state_dict mapping
(`jaxtalk/convert/lia.py`) follow the release:

- `EncoderApp` (`enc.net_app`): ConvLayer(3, C[S], 1) at S, ResBlocks halving the
  resolution to 4, EqualConv2d(C[4], style_dim, 4) -> the appearance code `wa`; `feats`
  are the stage outputs at 8, 16, ..., S (the release's `res[::-1][2:]`).
- `LIAEncoder` (`enc`): net_app + the motion MLP `fc_0..fc_4` (4 x EqualLinear(512, 512),
  EqualLinear(512, motion_dim), no activations).
- `Direction` (`dec.direction`): weight (style_dim, motion_dim); Q = QR(weight + 1e-8).Q is
  recomputed in every forward pass (differentiable), direction(a) = a @ Q^T.
- `Synthesis` (`dec`): ConstantInput, StyledConv, then per resolution 8..S: StyledConv(up),
  StyledConv, ToFlow (flow-warps the encoder feature of that resolution) and ToRGB (on the
  warped feature). `to_rgb1` is unused in the forward pass (as released) but kept as a
  parameter so that import/export are exact.

Motion modes (as released): absolute, latent = wa + D(alpha_driving); relative,
latent = wa + D(alpha_driving) - D(alpha_start) + D(alpha_source), where alpha_start is
the motion code of the first driving frame and alpha_source that of the source image.

Sizes: `size` (a power of two >= 8) and `width` (a multiplier on the channel map, for tiny
CPU configs) are free; the defaults are the release's (256, 512, 20, width 1). Create
all parameters with `model.init(rng, source, driving)` (the full forward pass), then
drive the pieces from a train step with `model.apply(variables, ..., method=...)`:
`encode_source`, `encode_motion`, `render`, `directions`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.equalized import ConvLayer, EqualConv2d, EqualLinear, ResBlock
from jaxtalk.models.layers.grid_sample import grid_sample_2d
from jaxtalk.models.layers.modulated import ConstantInput, ModulatedConv2d, StyledConv
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.upfirdn import upsample
from jaxtalk.models.layers.weight_cache import cached

# The release's channel map (channel_multiplier 1).
CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def channel_map(width: float = 1.0) -> dict[int, int]:
    """The channel map scaled by `width` (at least 1 channel per layer)."""
    return {r: max(1, int(round(c * width))) for r, c in CHANNELS.items()}


def _log2(size: int) -> int:
    log = int(math.log2(size))
    if 2**log != size or size < 8:
        raise ValueError(f"LIA image size must be a power of two >= 8, got {size}")
    return log


class EncoderApp(nn.Module):
    """Appearance encoder. Returns (wa (B, style_dim), feats [8..S], stages [all outputs])."""

    size: int = 256
    style_dim: int = 512
    width: float = 1.0
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        ch = channel_map(self.width)
        log = _log2(self.size)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if x.shape[1:3] != (self.size, self.size):
            raise ValueError(f"EncoderApp(size={self.size}) got images of shape {x.shape}")
        stages = []
        h = ConvLayer(ch[self.size], 1, blur_kernel=self.blur_kernel, name="convs_0", **kw)(x)
        stages.append(h)
        for n, i in enumerate(range(log, 2, -1), start=1):
            h = constrain(
                ResBlock(ch[2 ** (i - 1)], blur_kernel=self.blur_kernel, name=f"convs_{n}", **kw)(h)
            )
            stages.append(h)
        h = EqualConv2d(
            self.style_dim, 4, padding=0, use_bias=False, name=f"convs_{log - 1}", **kw
        )(h)
        stages.append(h)
        wa = h.reshape(h.shape[0], self.style_dim)
        feats = stages[::-1][2:]
        return wa, feats, stages


class Direction(nn.Module):
    """Linear motion decomposition: an orthonormal basis Q of `motion_dim` directions."""

    style_dim: int = 512
    motion_dim: int = 20
    dtype: Any = jnp.float32  # the basis is always computed in >= float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.weight = self.param(
            "weight",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, None)),
            (self.style_dim, self.motion_dim),
            self.param_dtype,
        )

    def basis(self):
        """Q (style_dim, motion_dim) of QR(weight + 1e-8), as the release computes it."""
        w = self.weight.astype(jnp.promote_types(self.weight.dtype, jnp.float32))
        return cached(self, "basis", lambda: jnp.linalg.qr(w + 1e-8, mode="reduced")[0])

    def __call__(self, alpha):
        """sum_i alpha_i Q[:, i] = alpha @ Q^T: (B, motion_dim) -> (B, style_dim)."""
        q = self.basis()
        return jnp.dot(alpha.astype(q.dtype), q.T)


def identity_grid(h: int, w: int) -> np.ndarray:
    """The release's base grid: meshgrid(linspace(-1, 1)) as (H, W, 2) (x, y), float32."""
    xs = np.linspace(-1, 1, w)
    ys = np.linspace(-1, 1, h)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], -1).astype(np.float32)


class ToRGB(nn.Module):
    """ConvLayer(in, 3, 1) (`conv`: EqualConv2d + FusedLeakyReLU) + bias + upsampled skip."""

    upsample: bool = True
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, skip=None):
        out = ConvLayer(
            3,
            1,
            blur_kernel=self.blur_kernel,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            (3,),
            self.param_dtype,
        )
        out = out + bias.astype(out.dtype)
        if skip is not None:
            out = out + upsample(skip.astype(out.dtype), self.blur_kernel)
        return out


class ToFlow(nn.Module):
    """ModulatedConv2d(in, 3, 1, no demod) + bias + upsampled previous flow; warps `feat`.

    Returns (warped, warped + x * (1 - mask), raw 3-channel output) like the release; the
    grid is tanh(raw[..., :2]) + the identity grid, mask = sigmoid(raw[..., 2]), and the
    warp is grid_sample(bilinear, zeros, align_corners=False).
    """

    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    impl: str = "scaled_input"
    init_scale: float = 1.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, style, feat, skip=None):
        out = ModulatedConv2d(
            3,
            1,
            demodulate=False,
            blur_kernel=self.blur_kernel,
            impl=self.impl,
            init_scale=self.init_scale,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x, style)
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            (3,),
            self.param_dtype,
        )
        out = out + bias.astype(out.dtype)
        if skip is not None:
            out = out + upsample(skip.astype(out.dtype), self.blur_kernel)
        hi = jnp.promote_types(self.dtype, jnp.float32)  # sampling positions in >= fp32
        sampler = jnp.tanh(out[..., :2].astype(hi))
        mask = jax.nn.sigmoid(out[..., 2:3])
        grid = sampler + identity_grid(x.shape[1], x.shape[2])[None].astype(hi)
        warped = grid_sample_2d(feat.astype(self.dtype), grid) * mask
        return warped, warped + x * (1.0 - mask), out


class Synthesis(nn.Module):
    """The LIA decoder (`dec`): direction, constant input, styled convs, ToFlow/ToRGB."""

    size: int = 256
    style_dim: int = 512
    motion_dim: int = 20
    width: float = 1.0
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    impl: str = "scaled_input"
    flow_init_scale: float = 1.0  # see WarpingGenerator
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        ch = channel_map(self.width)
        log = _log2(self.size)
        kw = dict(blur_kernel=self.blur_kernel, dtype=self.dtype, param_dtype=self.param_dtype)
        self.direction = Direction(self.style_dim, self.motion_dim, param_dtype=self.param_dtype)
        self.input = ConstantInput(ch[4], dtype=self.dtype, param_dtype=self.param_dtype)
        self.conv1 = StyledConv(ch[4], 3, impl=self.impl, **kw)
        self.to_rgb1 = ToRGB(upsample=False, **kw)
        convs, to_rgbs, to_flows = [], [], []
        for i in range(3, log + 1):
            out_ch = ch[2**i]
            convs.append(StyledConv(out_ch, 3, upsample=True, impl=self.impl, **kw))
            convs.append(StyledConv(out_ch, 3, impl=self.impl, **kw))
            to_rgbs.append(ToRGB(**kw))
            to_flows.append(ToFlow(impl=self.impl, init_scale=self.flow_init_scale, **kw))
        self.convs, self.to_rgbs, self.to_flows = convs, to_rgbs, to_flows

    def latent(self, wa, alpha=None, alpha_start=None, alpha_source=None):
        """wa [+ D(alpha)] (absolute) or wa + D(alpha) - D(alpha_start) + D(alpha_source)."""
        latent = wa.astype(jnp.promote_types(wa.dtype, jnp.float32))
        if alpha is None:
            return latent
        latent = latent + self.direction(alpha)
        if alpha_start is not None or alpha_source is not None:
            if alpha_start is None or alpha_source is None:
                raise ValueError("relative motion needs both alpha_start and alpha_source")
            latent = latent - self.direction(alpha_start) + self.direction(alpha_source)
        return latent

    def __call__(self, wa, alpha, feats, alpha_start=None, alpha_source=None, noise=None):
        """Renders; returns {'image', 'flow', 'grid', 'mask', 'latent'} (full resolution)."""
        latent = self.latent(wa, alpha, alpha_start, alpha_source).astype(self.dtype)
        if len(feats) != len(self.to_flows):
            raise ValueError(f"expected {len(self.to_flows)} encoder features, got {len(feats)}")
        noise = noise or {}
        out = self.input(latent.shape[0])
        out = self.conv1(out, latent, noise.get("conv1"))
        if self.is_initializing():  # unused, as in the release; only creates its params
            self.to_rgb1(out)
        skip = skip_flow = None
        for i, feat in enumerate(feats):
            out = self.convs[2 * i](out, latent, noise.get(f"convs_{2 * i}"))
            out = self.convs[2 * i + 1](out, latent, noise.get(f"convs_{2 * i + 1}"))
            warped, out, skip_flow = self.to_flows[i](out, latent, feat, skip_flow)
            skip = self.to_rgbs[i](warped, skip)
            out, skip, skip_flow = constrain(out), constrain(skip), constrain(skip_flow)
        hi = jnp.promote_types(self.dtype, jnp.float32)
        flow = jnp.tanh(skip_flow[..., :2].astype(hi))
        grid = flow + identity_grid(flow.shape[1], flow.shape[2])[None].astype(hi)
        return {
            "image": skip,
            "flow": flow,
            "grid": grid,
            "mask": jax.nn.sigmoid(skip_flow[..., 2:3].astype(hi)),
            "latent": latent,
        }


def render_frames(model, wa, feats, alphas):
    """Renders T motion codes on one encoded source (wa (1, D), feats at batch 1)."""
    n = alphas.shape[0]
    tile = lambda a: jnp.broadcast_to(a, (n,) + a.shape[1:])
    return model.render(tile(wa), [tile(f) for f in feats], alphas)["image"]


class LIAEncoder(nn.Module):
    """`enc`: appearance encoder `net_app` and motion MLP `fc_0..fc_4`."""

    size: int = 256
    style_dim: int = 512
    motion_dim: int = 20
    width: float = 1.0
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.net_app = EncoderApp(self.size, self.style_dim, self.width, self.blur_kernel, **kw)
        self.fc = [EqualLinear(self.style_dim, **kw) for _ in range(4)] + [
            EqualLinear(self.motion_dim, **kw)
        ]

    def motion(self, h):
        for layer in self.fc:
            h = layer(h)
        return h

    def __call__(self, x):
        wa, feats, _ = self.net_app(x)
        return wa, feats


class WarpingGenerator(nn.Module):
    """What LIA and AniTalker stage 1 share: the constructor settings, the `dec` renderer
    and its methods; subclasses name their encoder (`enc`) in `encoder_cls`."""

    encoder_cls: ClassVar[type]
    size: int = 256
    style_dim: int = 512
    motion_dim: int = 20
    width: float = 1.0
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    impl: str = "scaled_input"
    # Std of the flow heads' raw kernels at init. The release's 1 starts from large random
    # warps (tanh of O(1) outputs: shifts of a third of the image) that the renderer learns
    # to ignore before it learns to warp; a small value starts from the identity warp, so the
    # output begins near the source and training goes straight to motion. Init only: the
    # parameters and the trained model are the same.
    flow_init_scale: float = 1.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kw = dict(blur_kernel=self.blur_kernel, dtype=self.dtype, param_dtype=self.param_dtype)
        self.enc = self.encoder_cls(
            self.size, self.style_dim, self.motion_dim, self.width, **kw, **self.encoder_options()
        )
        self.dec = Synthesis(
            self.size,
            self.style_dim,
            self.motion_dim,
            self.width,
            impl=self.impl,
            flow_init_scale=self.flow_init_scale,
            **kw,
        )

    def encoder_options(self) -> dict:
        """Extra constructor arguments of the subclass's encoder."""
        return {}

    def render(self, wa, feats, alpha=None, alpha_start=None, alpha_source=None, noise=None):
        """-> {'image' (B,S,S,3) in ~[-1,1], 'flow' (B,S,S,2), 'grid', 'mask' (B,S,S,1),
        'latent'} (see Synthesis)."""
        return self.dec(wa, alpha, feats, alpha_start, alpha_source, noise)

    def directions(self):
        """The orthonormal motion basis Q (style_dim, motion_dim)."""
        return self.dec.direction.basis()


class LIAGenerator(WarpingGenerator):
    """The released `Generator` (enc + dec) with train-step friendly methods."""

    encoder_cls = LIAEncoder

    def encode_source(self, source):
        """-> {'wa': (B, style_dim), 'feats': [8..S] NHWC, 'alpha': motion code of source}."""
        wa, feats = self.enc(source)
        return {"wa": wa, "feats": feats, "alpha": self.enc.motion(wa)}

    def encode_motion(self, image):
        """Motion code alpha (B, motion_dim) of a (driving) image: fc(net_app(image))."""
        wa, _ = self.enc(image)
        return self.enc.motion(wa)

    def animate(self, source, alphas):
        """One source image (1, S, S, 3) + motion codes (T, motion_dim) -> frames (T, S, S, 3).

        The source is encoded once. D is linear, so relative motion is this call with
        alphas - alpha_start + alpha_source."""
        src = self.encode_source(source)
        return render_frames(self, src["wa"], src["feats"], alphas)

    def __call__(self, source, driving=None, alpha_start=None):
        """The release's forward: absolute motion, or relative when `alpha_start` (the
        motion code of the first driving frame, `enc_motion(driving[0])`) is given."""
        src = self.encode_source(source)
        if driving is None:
            return self.render(src["wa"], src["feats"])
        alpha = self.encode_motion(driving)
        if alpha_start is None:
            return self.render(src["wa"], src["feats"], alpha)
        return self.render(src["wa"], src["feats"], alpha, alpha_start, src["alpha"])
