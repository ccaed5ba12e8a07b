"""MegActor v1 (megvii-research/megactor): raw-video-driven portrait animation, trained in two
stages (jaxtalk/tasks/megactor.py).

Variants:
  paper_stage1  train.py with configs/train/train_stage1.yaml: 12 frames at stride 2 of
                512x512 VFHQ clips, batch 1 with gradient accumulation 2, AdamW lr 1e-5
                (constant, torch's defaults: betas 0.9 / 0.999, eps 1e-8, weight decay 0.01),
                gradient clip 1.0, checkpoints every 1000 steps; trains the UNet (the
                motion modules included: its trainable_modules name "unet"), the
                ReferenceNet (appearance_encoder) and the DrivenEncoder; driving streams:
                use_swap_rate 0.1 split between the swapped and the stylised stream, no
                warp, grey driving frames.
  paper_stage2  train_stage2.yaml: the same, but only the motion modules train (the
                stage-1 networks frozen, from --config.base.workdir or --config.base.weights
                = `jaxtalk import --release=megactor`), use_swap_rate 0.5, warp_rate 0.25.
  tiny_stage1   pixel space at 32x32 (no VAE, no CLIP: a zero context), 4-frame clips, a
                two-level UNet with its transformers at the 16x16 level, a one-level
                DrivenEncoder, an EMA of the trained networks, the swapped / stylised
                streams half of the time.
  tiny_stage2   the motion modules on a tiny stage-1 run (--config.base.workdir).
The paper variants use the release's diffusion (jaxtalk/diffusion/recipes.py megactor:
epsilon, scaled linear betas with zero terminal SNR, offset noise 0.1, no condition dropout;
sampling 25 DDIM steps, guidance 4.5, 16-frame windows overlapping by 8); the tiny ones the
same but v-prediction (see `_tiny`).
"""

import dataclasses

import ml_collections

import jaxtalk.diffusion.recipes as recipes
import jaxtalk.models.megactor.denoiser as denoiser
import jaxtalk.models.megactor.driven_encoder as driven_encoder
from configs import common
from data_pipelines.loaders import default_data_config

VARIANTS = ("paper_stage1", "paper_stage2", "tiny_stage1", "tiny_stage2")
# The release's use_swap_rate, which face_dataset.py splits evenly between the face-swapped
# and the stylised stream, and its warp_rate, per stage.
SWAP_RATE = {"stage1": 0.1, "stage2": 0.5}
WARP_RATE = {"stage1": 0.0, "stage2": 0.25}
TINY_SIZE = 32


def tiny_megactor() -> denoiser.MegActorConfig:
    """TINY with a DrivenEncoder that keeps the resolution (pixel space) at TINY_SIZE, and the
    transformers (reference attention) at the 16x16 level only: at 32x32 its 1,024 x 2,048
    attention maps dominated a CPU step (4.4 s per grad at batch 16)."""
    driven = dataclasses.replace(driven_encoder.TINY, widths=(8,), reference_widths=(4, 8, 8, 8))
    t = denoiser.TINY
    unet, reference = (
        dataclasses.replace(u, cross_attention=(False, True)) for u in (t.unet, t.reference)
    )
    return dataclasses.replace(
        t, unet=unet, reference=reference, driven=driven, motion_heads=2, motion_max_len=16
    )


def _model(tiny: bool):
    net = tiny_megactor() if tiny else denoiser.MEGACTOR
    return ml_collections.ConfigDict(
        dict(
            latent="pixels" if tiny else "vae",  # what is diffused
            context="zeros" if tiny else "clip",  # the cross-attention context
            megactor=dataclasses.asdict(net),
            vae={},  # sd-vae-ft-mse
            image_encoder={},  # CLIP ViT-L/14 + projection, all 257 tokens
        )
    )


def get_config(arg: str = "tiny_stage1"):
    if arg not in VARIANTS:
        raise ValueError(f"unknown variant {arg!r} of megactor; choose one of {VARIANTS}")
    tiny, stage = arg.startswith("tiny"), arg.rsplit("_", 1)[1]
    c = common.base_config()
    c.task = "megactor"
    c.stage = stage
    c.model = _model(tiny)
    c.vae_weights = ""  # default: <weights dir>/sd_vae.safetensors
    c.image_encoder_weights = ""  # default: <weights dir>/clip_vision.safetensors
    c.base = ml_collections.ConfigDict(dict(workdir="", step=-1, weights=""))
    c.diffusion = ml_collections.ConfigDict(
        dict(
            recipe=recipes.to_dict(recipes.megactor()),
            sample_steps=25,
            # Sample over the training betas (a model trained for minutes does not survive
            # the release's linear-beta sampling schedule).
            sample_train_betas=tiny,
        )
    )
    c.data = default_data_config()
    c.data.kind = "driving_video"
    c.data.audio = "none"
    c.data.attributes = ()
    c.data.num_frames = 12  # video_length
    c.data.frame_stride = 2
    c.data.swap_rate = SWAP_RATE[stage] / 2
    c.data.style_rate = SWAP_RATE[stage] / 2
    c.data.warp_rate = WARP_RATE[stage]
    c.data.driving_grayscale = True
    group = "model" if stage == "stage1" else "motion"
    c.optimizers = ml_collections.ConfigDict(
        {group: common.optimizer_config("adamw", lr=1e-5, weight_decay=0.01, clip_norm=1.0)}
    )
    c.grad_accum_steps = 2
    c.batch_size = 2  # train_batch_size 1 per step, accumulated twice
    c.dtype = "bfloat16"  # mixed_precision_training
    c.data.mixture = "vfhq"
    c.data.data_dir = ""
    c.data.image_size = 512
    c.total_steps = 1_000_000
    c.eval.every_steps = 100  # validation_steps
    c.eval.num_batches = 1
    c.samples.every_steps = 100
    c.checkpoint.every_steps = 1000
    if tiny:
        _tiny(c, stage, group)
    return c


def _tiny(c, stage, group):
    common.tiny_diffusion(c, group, stage, TINY_SIZE)
    # v-prediction, not the release's epsilon. Under zero terminal SNR an epsilon model
    # learns nothing about x0 at high noise (its target there is x_t itself), and one trained
    # for minutes from scratch (the release starts from SD1.5) starts DDIM from garbage: at
    # step 300 its x0 estimate at t = 900 scored 7.5 dB PSNR on held-out clips, and its
    # samples 17.1 dB; with v (x0 is the target at t = T) the samples scored 22.3 dB at the
    # same step (copying the reference 24.4). Scratch runs, 2026-12-04.
    for part in ("train", "sample"):
        c.diffusion.recipe[part].prediction = "v"
    # The swapped and stylised streams half of the time (the release's stage-2 total, 0.5;
    # its stage 1 uses 0.1). At 0.1 the tiny model took much of the driver's appearance:
    # the identity embedding of its output on held-out clips driven by another identity was
    # 0.51 to the reference, 0.62 to the driver at step 900; at 0.5, 0.77 / 0.54 at step
    # 300, 0.84 / 0.40 at 600, 0.91 / 0.34 at 1500, for slower learning: it passes copying
    # the reference after step 900 (benchmarks/megactor_tiny_learning.py, README).
    c.data.swap_rate = c.data.style_rate = 0.25
    c.data.num_frames = 4
    c.data.frame_stride = 1
    c.grad_accum_steps = 1
    c.batch_size = 8
