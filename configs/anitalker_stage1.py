"""AniTalker stage 1 (identity-decoupled motion encoder + warping renderer).

Variants:
  paper  the published LIA recipe the stage-1 model builds on: 256x256, global batch 64,
         on the mixture VoxCeleb2 + HDTF + VFHQ (`data.mixture`, weights ours, below),
         Adam lr 0.002*r with betas (0, 0.99**r), r = 4/5 (generator) and 16/17
         (discriminator), L1 + VGG19 pyramid perceptual + non-saturating GAN, plus
         AniTalker's metric-learning (AAM-Softmax) and CLUB mutual-information terms,
         EMA of the generator. The perceptual loss needs ImageNet VGG19 weights
         (`jaxtalk import --release=vgg19 --checkpoint=vgg19-dcbb9e9d.pth`).
  tiny   64x64, 1/16 width, on the embedded synthetic set; minutes on a CPU; no
         perceptual loss (no ImageNet weights needed).

The AniTalker paper does not publish its loss weights; ours are marked below.
"""

import ml_collections

from configs import common
from data_pipelines.loaders import default_data_config


def get_config(arg: str = "paper"):
    c = common.base_config()
    c.task = "anitalker_stage1"
    c.init_from = ""  # a weights file from `jaxtalk import --release=anitalker_stage1` to fine-tune

    c.model = ml_collections.ConfigDict(
        dict(
            size=256,
            style_dim=512,
            motion_dim=20,
            width=1.0,
            disc_width=1.0,
            stddev_group=4,
            flow_init_scale=1.0,  # the release's init; see models/lia.py WarpingGenerator
            hal_deepest_logit=0.0,
        )
    )  # equal HAL weights at init (the paper); see HAL
    c.loss = ml_collections.ConfigDict(
        dict(
            l1=1.0,
            perceptual=1.0,  # x10 per VGG layer inside the loss, as LIA
            adversarial=1.0,
            mutual_information=0.1,  # ours (unpublished)
            metric_learning=0.1,  # ours (unpublished)
            aam_margin=0.2,
            aam_scale=30.0,
            vgg19_weights="",  # default: <weights dir>/vgg19.safetensors
        )
    )
    c.data = default_data_config()
    # uint8 frames, normalised on the device: twice the loader rate of float32 on the host.
    c.data.update(dict(kind="pairs", num_negatives=1, image_dtype="uint8"))
    # VoxCeleb + HDTF + VFHQ at 256, as `jaxtalk prepare DATASET --root=data/paper_256
    # --size=256` writes them (README, "Preparing data"). The paper publishes no mixture
    # weights; ours: none given, i.e. each dataset weighted by its clips (uniform over the
    # union, as training on their concatenation). Set weights with e.g.
    # --config.data.mixture="voxceleb2:0.6,hdtf:0.3,vfhq:0.1" (data_pipelines/mixture.py).
    c.data.update(dict(data_dir="", data_root="data/paper_256", mixture="voxceleb2,hdtf,vfhq"))

    g_ratio, d_ratio = 4 / 5, 16 / 17
    c.optimizers = ml_collections.ConfigDict(
        {
            "generator": common.optimizer_config(
                "adam", lr=0.002 * g_ratio, b1=0.0, b2=0.99**g_ratio
            ),
            "discriminator": common.optimizer_config(
                "adam", lr=0.002 * d_ratio, b1=0.0, b2=0.99**d_ratio
            ),
            "club": common.optimizer_config("adam", lr=1e-4),
        }
    )
    c.ema = ml_collections.ConfigDict({"generator": 0.999})
    c.batch_size = 64
    c.total_steps = 800_000
    c.mesh.data, c.mesh.fsdp = -1, 1
    c.log.every_steps = 100
    c.eval.every_steps = 5000
    c.eval.num_batches = 16
    c.samples.every_steps = 5000
    c.checkpoint.every_steps = 5000
    c.checkpoint.best_metric = "eval/psnr"

    if arg == "tiny":
        # 1/16 width and no negatives in the batch (AAM-Softmax scores each code against
        # every identity's class weights; negatives only add examples; evaluation still
        # loads one per example for cross-reenactment). Measured on one synthetic set, held-out
        # PSNR at step 800 (copy baseline 21.42 dB): 1/8 width with a negative 23.42 dB,
        # 24 GFLOP/step; 1/8 without 23.35; 1/16 with 23.61; 1/16 without 23.56 dB at
        # 5.0 GFLOP/step, 5.2-7.2 steps/s against 1.9-2.0 (`make demo` on 2 idle cores:
        # 8 min 26 s -> 3 min 9-20 s, 23.45 dB there: the initial state now compiles without LLVM optimisation,
        # which rounds its initialisers differently, up to 5e-7, and the run drifts +-0.1 dB).
        # A cosine decay of the lr lost 0.6 dB at step 800 (22.86; lr 1e-2: 22.99).
        c.model.update(dict(size=64, width=0.0625, disc_width=0.0625))
        c.data.num_negatives = 0
        # Pixel + metric-learning losses only: on a CPU budget of a few hundred steps the
        # GAN and MI terms slow the reconstruction down (measured: held-out PSNR peaks at
        # 21.0 dB at step 300 and then falls with them, rises past 22 dB without them).
        # The tests switch them on to exercise the three-optimizer path.
        c.loss.perceptual = 0.0
        c.loss.adversarial = 0.0
        c.loss.mutual_information = 0.0
        c.data.update(dict(data_dir="demo_out/data", mixture=""))  # one dataset
        c.data.samples_per_clip = 8  # the tiny test split has 4 clips
        # Held-out PSNR at step 400 (one synthetic set, copy baseline 22.00 dB): the
        # release's flow-head init with Adam 2e-3, b1 0.5: 21.75; + flow_init_scale 0.01:
        # 22.20; + lr 6e-3: 22.54; + b1 0.9: 22.63. EMA 0.998 instead of 0.99 lags (-1 dB
        # at step 800); lr 1e-2 with a cosine decay or batch 16 gained nothing per second.
        c.model.flow_init_scale = 0.01
        # The motion path. The motion MLP (identity_excluded_net, plain nn.Linear layers
        # whose weights are ~1/sqrt(512)) takes Adam steps sized for the equalized-lr layers
        # around it, ~20x too large relative to its weights: 95% of its ReLUs were dead at
        # step 800 (all by step 50 without the metric-learning term), the motion code barely
        # varied and the renderer mostly learnt to blur the source (held-out PSNR stuck near
        # 22.9 dB from step 800 to 1600; the `motion_units_alive` train metric shows it).
        # Its lr x0.01 keeps them alive (94% at step 800), and HAL starting on the deepest
        # stage (the spatially aware code; the pooled shallow stages are alike for every
        # untrained image) gives the renderer the motion early: 23.37 dB at step 800 vs
        # 22.55 (copy 21.42); driving motion vs the source's own: +1.35 dB (was +0.85).
        c.model.hal_deepest_logit = 6.0
        c.lr_multipliers = ("generator/model/enc/net_decouping/.*=0.01",)
        c.optimizers.generator.lr = 6e-3
        c.optimizers.generator.b1 = 0.9
        c.ema.generator = 0.99
        c.batch_size = 8
        c.total_steps = 800
        c.log.every_steps = 50
        c.eval.every_steps = 200
        c.eval.num_batches = 4
        c.samples.every_steps = 200
        c.samples.num = 4
        c.checkpoint.every_steps = 200
        # Per-array optimizers (not `common.flatten_optimizers`, which the other tiny recipes
        # use): with one vector per group its steps ran 4-10 % slower (two rounds; the
        # concatenations cost more than the kernels they save at this size), and a `make demo`
        # with it ended at 23.40 dB at step 800 instead of 23.54 (rounding moves the run).
    elif arg != "paper":
        raise ValueError(f"unknown variant {arg!r} of anitalker_stage1 (paper, tiny)")
    return c
