"""The latent diffusion family's reference-conditional toy (jaxtalk/tasks/latent_diffusion_toy.py).

Variant: `tiny` only: a ReferenceNet and a denoising UNet at toy widths on synthetic 16x16
4-channel "latents", trained with AniPortrait's diffusion recipe (recipes.aniportrait());
minutes on 2 CPU cores. A `paper` variant would mean AniPortrait itself (its own issue):
the paper's data, VAE and widths have no meaning for a synthetic toy.
"""

import ml_collections

import jaxtalk.diffusion.recipes as recipes
from configs import common


def get_config(arg: str = "tiny"):
    if arg != "tiny":
        raise ValueError(f"unknown variant {arg!r} of latent_diffusion_toy (tiny)")
    c = common.base_config()
    c.task = "latent_diffusion_toy"
    c.toy = ml_collections.ConfigDict(
        dict(
            resolution=16,
            channels=4,
            square=4,  # side of the reference's coloured square
            radius=4.5,  # of the target's disc
            clutter=0.3,  # std of the reference's background noise
            widths=(16, 32),  # UNet levels (UNetConfig.block_out_channels)
            cross_attention=(True, False),  # transformer blocks (and so reference attention)
            heads=2,
            context_dim=16,
            groups=4,
            train_examples=8192,
            eval_examples=64,
        )
    )
    c.diffusion = ml_collections.ConfigDict(
        dict(
            recipe=recipes.to_dict(recipes.aniportrait()),
            sample_steps=10,
            sample_train_betas=True,  # sample over the training betas (see the task)
        )
    )
    c.optimizers = ml_collections.ConfigDict(
        {"model": common.optimizer_config("adamw", lr=1e-3, warmup_steps=50, clip_norm=1.0)}
    )
    c.batch_size = 16
    c.total_steps = 600
    c.log.every_steps = 50
    c.log.progress_bar = False
    c.eval.every_steps = 300
    c.eval.num_batches = 2
    c.samples.every_steps = 0
    c.checkpoint.every_steps = 300
    common.flatten_optimizers(c)
    return c
