"""AniTalker stage 1 (X-LANCE/AniTalker): LIA + HAL + identity/motion decoupling, Flax.

On top of LIA (`jaxtalk/models/lia/generator.py`):
- HAL (`enc.hal`; release `enc.net_app.{fc1,fc2,fc3,ws}`): every encoder stage output is
  global-average-pooled; stages whose width differs from style_dim (64, 128, 256 at the
  release config) go through EqualLinear to style_dim (fc1, fc2, fc3 in order), and a
  WeightedSumLayer mixes all of them (8 at 256) with softmax weights -> h (style_dim),
  which replaces LIA's `wa` as the appearance/start code.
- Decoupling (`enc.net_decouping`, spelled as released): three Linear-ReLU-Linear MLPs:
  identity_net (identity latent, for metric learning), identity_net_density (applied to
  the identity latent; the CLUB side in training) and identity_excluded_net (the motion
  encoder). Motion code alpha = fc(identity_excluded_net(h)).
- Renderer: LIA's Synthesis, latent = h_source + D(alpha) (absolute) or
  h_source + D(alpha) - D(alpha_start) + D(alpha_source) (relative, LIA's rule).

46.92 M parameters at the release config; state_dict mapping in `jaxtalk/convert/lia.py`.
Init with `model.init(rng, source, driving)`; train-step methods: `encode`,
`render`, `directions`, and `__call__` (source, driving -> everything a loss needs).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.equalized import EqualLinear
from jaxtalk.models.layers.sharding import join_batches, split_batches
from jaxtalk.models.layers.torch_nn import TorchLinear
from jaxtalk.models.lia.generator import LIAEncoder, WarpingGenerator, channel_map, render_frames


class MLP(nn.Module):
    """Linear(d, hidden) -> ReLU -> Linear(hidden, out) (`fc_in`, `fc_out`)."""

    hidden: int = 512
    features: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = jax.nn.relu(TorchLinear(self.hidden, ("embed", "mlp"), name="fc_in", **kw)(x))
        return TorchLinear(self.features, ("mlp", "embed"), name="fc_out", **kw)(h)


class DecouplingNet(nn.Module):
    """Returns (identity, motion (identity-excluded), identity_density) latents."""

    dim: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        kw = dict(
            hidden=self.dim, features=self.dim, dtype=self.dtype, param_dtype=self.param_dtype
        )
        self.identity_net = MLP(**kw)
        self.identity_net_density = MLP(**kw)
        self.identity_excluded_net = MLP(**kw)

    def __call__(self, h):
        identity = self.identity_net(h)
        motion = self.identity_excluded_net(h)
        density = self.identity_net_density(identity)  # on the identity latent, as released
        return identity, motion, density


class HAL(nn.Module):
    """Hierarchical aggregation: pooled stage outputs -> projections -> softmax-weighted sum.

    `ws` starts at zeros (equal weights, as the paper describes); the released code
    initialised it randomly, which only matters for training from scratch.
    `deepest_logit` (init only) starts the deepest stage's logit there instead: the pooled
    shallow stages of an untrained encoder are nearly the same for every image, so equal
    weights dilute the one spatially aware code (LIA's `wa`) that pose and mouth reach the
    renderer through; 6 gives it 97% of the weight at 64x64, and training re-mixes them.
    """

    style_dim: int = 512
    deepest_logit: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, stages):
        pooled, n_fc = [], 0
        hi = jnp.promote_types(self.dtype, jnp.float32)  # pooling and mixing in >= fp32
        for h in stages:
            p = jnp.mean(h.astype(hi), axis=(1, 2)).astype(self.dtype)
            if p.shape[-1] != self.style_dim:
                n_fc += 1
                p = EqualLinear(
                    self.style_dim, dtype=self.dtype, param_dtype=self.param_dtype, name=f"fc{n_fc}"
                )(p)
            pooled.append(p)

        def init(key, shape, dtype=jnp.float32):
            return jnp.zeros(shape, dtype).at[-1].set(self.deepest_logit)

        logits = self.param(
            "ws", nn.with_logical_partitioning(init, (None,)), (len(stages),), self.param_dtype
        )
        weights = jax.nn.softmax(logits.astype(hi))
        out = jnp.zeros_like(pooled[0])
        for p, w in zip(pooled, weights):
            out = out + p * w.astype(p.dtype)
        return out


class AniTalkerEncoder(LIAEncoder):
    """`enc`: LIA's net_app and fc_0..fc_4, plus hal and net_decouping."""

    hal_deepest_logit: float = 0.0  # init only, see HAL

    def setup(self):
        super().setup()
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.hal = HAL(self.style_dim, self.hal_deepest_logit, **kw)
        self.net_decouping = DecouplingNet(self.style_dim, **kw)

    def __call__(self, x):
        _, feats, stages = self.net_app(x)
        h = self.hal(stages)
        identity, motion, density = self.net_decouping(h)
        return {
            "h": h,
            "feats": feats,
            "id_emb": identity,
            "idrm_emb": motion,
            "id_density_emb": density,
            "alpha": self.motion(motion),
        }


class AniTalkerMotion(WarpingGenerator):
    """AniTalker stage 1 generator (the release's `LIA_Model(fusion_type='weighted_sum')`)."""

    encoder_cls = AniTalkerEncoder
    hal_deepest_logit: float = 0.0  # init only, see HAL

    def encoder_options(self):
        return {"hal_deepest_logit": self.hal_deepest_logit}

    def encode(self, image):
        """One image -> {'h' (HAL code, the source/start code), 'feats' [8..S],
        'id_emb', 'idrm_emb', 'id_density_emb' (B, style_dim), 'alpha' (B, motion_dim)}.
        Encode source, driving and extra faces in one call by concatenating them."""
        return self.enc(image)

    def animate(self, source, alphas):
        """One source image (1, S, S, 3) + motion codes (T, motion_dim) -> frames (T, S, S, 3)
        (absolute; relative = alphas - alpha_start + alpha_source, D being linear)."""
        src = self.enc(source)
        return render_frames(self, src["h"], src["feats"], alphas)

    def __call__(self, source, driving, alpha_start=None):
        """Encodes source and driving (one batched encoder pass) and renders the driving
        motion on the source. Relative mode when `alpha_start` (motion code of the first
        driving frame) is given. Returns the render dict plus 'source' / 'driving'
        encodings (without feats for the driving image)."""
        src, drv = split_batches(self.enc(join_batches(source, driving)), 2)
        drv = {k: v for k, v in drv.items() if k != "feats"}
        if alpha_start is None:
            out = self.render(src["h"], src["feats"], drv["alpha"])
        else:
            out = self.render(src["h"], src["feats"], drv["alpha"], alpha_start, src["alpha"])
        src = {k: v for k, v in src.items() if k != "feats"}
        return dict(out, source=src, driving=drv)


__all__ = ["AniTalkerMotion", "AniTalkerEncoder", "HAL", "DecouplingNet", "channel_map"]
