"""The denoising stack as AniPortrait releases it: the SD1.5 UNet inflated over frames with
AnimateDiff v2 motion modules (this family's MotionModule in every slot), counted at full
size through jax.eval_shape, and mapped key by key by the UNet converter with the motion
module's rules plugged in."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxtalk.convert import motion_module as mm_convert
from jaxtalk.convert import sd_unet
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.latent_diffusion.motion_module import MotionModule


def test_aniportrait_denoising_unet_with_motion_modules_full_size():
    model = ld.UNet3DConditionModel(ld.SD15, motion_module=MotionModule, motion_mid=True)
    shapes = jax.eval_shape(
        model.init,
        jax.random.PRNGKey(0),
        jnp.zeros((1, 2, 64, 64, 4)),
        jnp.zeros((1,)),
        jnp.zeros((1, 77, 768)),
    )
    flat = {
        "/".join(k): v.shape
        for k, v in traverse_util.flatten_dict(nn.unbox(shapes)["params"]).items()
    }
    # REFERENCE.md: denoising UNet 859,520,964 + v2 motion modules 453,209,280
    assert sum(int(np.prod(s)) for s in flat.values()) == 1_312_730_244
    rules = sd_unet.unet_rules(ld.SD15, mm_convert.module_rules, motion_mid=True)
    # every parameter mapped once: 686 UNet keys + 546 motion-module keys (588 less the
    # 42 position tables, which are buffers)
    assert len(rules) == len({r.torch_key for r in rules}) == 686 + 546
    paths = [r.param_path.removeprefix("params/") for r in rules]
    assert sorted(paths) == sorted(flat)
    mid = [r.torch_key for r in rules if r.torch_key.startswith("mid_block.motion_modules.0.")]
    assert "mid_block.motion_modules.0.temporal_transformer.proj_out.weight" in mid
