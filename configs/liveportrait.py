"""LivePortrait (KwaiVGI): stage 1, the implicit-keypoint base model; stage 2, stitching and
eye / lip retargeting with the base frozen. The authors released inference code only.

Variants:
  paper      stage 1 as the paper describes it: networks as released (input 256, G renders
             512), self-reenactment pairs at 512 (input frames resized to 256), the cascaded
             perceptual and GAN losses on the whole image and on the face and lip regions,
             equivariance, keypoint prior, head pose, deformation prior, landmark-guided
             Wing loss and ArcFace identity loss. Every number the paper does not give is
             taken from the face-vid2vid recipe it builds on (REFERENCE.md: Adam 2e-4, betas
             0.5 / 0.999, batch 32, perceptual 10 x 5 VGG19 layers over 4 scales, hinge GAN
             1, feature matching 10, equivariance 10 with random affine 0.05 + TPS 0.005,
             keypoint prior 10 with Dt 0.1 / zt 0.33, head pose 20, expression L1 5), each
             marked "face-vid2vid" below; "ours" marks a number neither publishes.
             Needs ImageNet VGG19 (`jaxtalk import --release=vgg19`) and ArcFace
             (`--release=arcface_r100`) weights.
  stitching  stage 2: stitching, lip and eye MLPs (and the ratio regressor they are
             trained against) on a frozen base from --config.base.workdir (a stage-1 run)
             or --config.base.weights (imported weights).
  tiny       64x64 input and output, narrow networks, a two-level hourglass: trains on the
             embedded synthetic set (demo_out/data) on a CPU in minutes; no VGG / ArcFace
             (no downloaded weights), an L1 term instead.
  tiny_stitching   stage 2 on a tiny stage-1 run.
"""

import ml_collections

from configs import common
from data_pipelines.loaders import default_data_config

# MediaPipe face-mesh points that move with expression: the inner and outer lip midpoints
# (upper, lower: 13, 14, 0, 17), the mouth corners (61, 291), and each eye's upper and lower
# lid midpoints (right eye 159 / 145, left 386 / 374).
LIP_POINTS = (13, 14, 0, 17, 61, 291)
EYELID_POINTS = (159, 145, 386, 374)


def _model():
    """The released networks (REFERENCE.md, LivePortrait); empty dicts = module defaults."""
    return ml_collections.ConfigDict(
        dict(
            input_size=256,
            appearance={},
            motion={},
            warping={},
            spade={},
            # face-vid2vid's discriminator (FOMM's): 4 blocks from 64 channels, one scale
            discriminator=dict(scales=(1.0,), block_expansion=64, num_blocks=4, max_features=512),
        )
    )


def _loss():
    return ml_collections.ConfigDict(
        dict(
            l1=0.0,
            perceptual=1.0,  # x10 per VGG layer inside the loss: face-vid2vid's 10
            adversarial=1.0,  # face-vid2vid
            feature_matching=10.0,  # face-vid2vid
            equivariance=10.0,  # face-vid2vid
            keypoint_prior=10.0,  # face-vid2vid
            head_pose=20.0,  # face-vid2vid
            deformation_prior=5.0,  # face-vid2vid
            landmark=1.0,  # ours (the paper gives no weight)
            # The guidance's landmarks (the paper: ones that capture micro-expressions, on
            # eyes and lips; its selection is not published): MediaPipe mesh points, Wing
            # loss to the first len(points) keypoints. `landmarks_xy` with points () guides
            # with all 5 points of a dataset that has no mesh.
            landmark_attribute="face_mesh_xy",
            landmark_points=LIP_POINTS + EYELID_POINTS,  # ours: 10
            identity=1.0,  # ours (the paper gives no weight)
            sigma_affine=0.05,  # face-vid2vid
            sigma_tps=0.005,  # face-vid2vid
            prior_dt=0.1,  # face-vid2vid
            prior_zt=0.33,  # face-vid2vid
            wing_width=10.0,  # Wing loss paper's defaults, in keypoint units ([-1, 1] image)
            wing_curvature=2.0,
            regions=("full", "face", "lip"),  # the cascade (paper); boxes from 5 landmarks
            region_scales=dict(face=2.2, lip=1.6),  # ours: box side / landmark extent
            region_sizes=dict(face=256, lip=128),  # ours: crop resolution of the region losses
            stitching_delta=0.01,  # ours: the paper's "small" keypoint-delta penalty
            retarget_delta=0.01,  # ours
            vgg19_weights="",  # default: <weights dir>/vgg19.safetensors
            arcface_weights="",  # default: <weights dir>/arcface_r100.safetensors
        )
    )


def get_config(arg: str = "paper"):
    c = common.base_config()
    c.task = "liveportrait"
    c.stage = "base"
    c.model = _model()
    c.loss = _loss()
    c.base = ml_collections.ConfigDict(dict(workdir="", step=-1, weights=""))

    c.data = default_data_config()
    c.data.update(
        dict(
            kind="pairs",
            num_negatives=0,
            image_dtype="uint8",
            image_size=512,  # the target G renders; the networks see it resized to 256
            pair_attributes=("pose", "landmarks_xy", "face_mesh_xy", "mouth", "blink"),
            # Mixed image / video training: an image dataset prepared as one-frame clips
            # (`jaxtalk prepare images`; source = driving) can join the mixture.
            data_dir="",
            data_root="data/paper_512",
            mixture="voxceleb2,vfhq,celebvhq",  # the paper's public video sets; weights by clips
        )
    )
    adam = dict(lr=2e-4, b1=0.5, b2=0.999)  # face-vid2vid
    c.optimizers = ml_collections.ConfigDict(
        {
            "generator": common.optimizer_config("adam", **adam),
            "discriminator": common.optimizer_config("adam", **adam),
        }
    )
    c.batch_size = 32  # face-vid2vid
    c.total_steps = 800_000  # ours (the paper trains stage 1 for ~10 days on 8 A100s)
    c.mesh.data, c.mesh.fsdp = -1, 1
    c.log.every_steps = 100
    c.eval.every_steps = 5000
    c.eval.num_batches = 16
    c.samples.every_steps = 5000
    c.checkpoint.every_steps = 5000
    c.checkpoint.best_metric = "eval/psnr"

    if arg in ("tiny", "tiny_stitching"):
        c.model.input_size = 64
        # 64 in -> 16x16 features; the hourglass stops at 4x4 (two levels).
        c.model.appearance = dict(block_expansion=16, max_features=64, reshape_channel=8,
                                  reshape_depth=8, num_resblocks=1)  # fmt: skip
        c.model.motion = dict(num_kp=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
        c.model.warping = dict(num_kp=10, block_expansion=16, max_features=64, reshape_channel=8,
                               reshape_depth=8, dense_block_expansion=8, dense_max_features=64,
                               dense_num_blocks=2, compress=4)  # fmt: skip
        # G is what limits the tiny model (measured: with one middle block and 16 channels
        # the source rendered with its own keypoints stayed 22.8 dB from itself, level with
        # copying the source); three blocks and 32 channels lift it to 24 dB.
        c.model.spade = dict(upscale=1, block_expansion=16, max_features=64, out_channels=32,
                             num_middle_blocks=3, spade_hidden=32)  # fmt: skip
        c.model.discriminator = dict(scales=(1.0,), block_expansion=16, num_blocks=3,
                                     max_features=64)  # fmt: skip
        c.loss.update(dict(perceptual=0.0, identity=0.0, adversarial=0.0,
                           feature_matching=0.0, region_sizes=dict(face=32, lip=32)))  # fmt: skip
        # Loss balance without the perceptual loss (measured, README "LivePortrait"): an L1
        # in [0, 1] units is ~100x smaller than face-vid2vid's perceptual sum, so at the
        # paper's regularizer weights M only hears them: the expression prior (5) pins every
        # frame's keypoints to the same values, and the reconstruction cannot move them.
        c.loss.l1 = 20.0  # on the whole frame and on the face and lip crops (the cascade)
        c.loss.deformation_prior = 0.5
        c.loss.head_pose = 0.1  # degrees: 20 would swamp the L1
        c.loss.landmark = 1.0
        # 8 of the 10 keypoints on the inner lips, mouth corners and eyelids (2 left free):
        # with the 5 points (eyes, nose, mouth corners), none of which move with the mouth,
        # M learned pose but no expression (README "LivePortrait").
        c.loss.landmark_points = LIP_POINTS[:2] + LIP_POINTS[4:] + EYELID_POINTS
        # M's pose heads are 66-bin soft-argmaxes: at 1e-3 their softmax saturates on the
        # mean pose within ~100 steps and stops learning (3e-4 learns it, measured).
        c.lr_multipliers = ("generator/motion/.*=0.3",)
        c.data.update(dict(data_dir="demo_out/data", mixture="", image_size=0))
        c.data.samples_per_clip = 8
        c.optimizers.generator.lr = 1e-3
        c.optimizers.generator.b1 = 0.9
        c.batch_size = 8
        c.total_steps = 600
        c.log.every_steps = 50
        c.eval.every_steps = 200
        c.eval.num_batches = 4
        c.samples.every_steps = 200
        c.samples.num = 4
        c.checkpoint.every_steps = 200
    elif arg not in ("paper", "stitching"):
        raise ValueError(
            f"unknown variant {arg!r} of liveportrait (paper, stitching, tiny, tiny_stitching)"
        )
    if arg in ("stitching", "tiny_stitching"):
        c.stage = "stitching"
        lr = 1e-3 if arg == "tiny_stitching" else 2e-4  # ours: the paper gives none
        c.optimizers = ml_collections.ConfigDict(
            {
                g: common.optimizer_config("adam", lr=lr)
                for g in ("stitching", "lip", "eye", "ratio")
            }
        )
        c.checkpoint.best_metric = ""
    if arg.startswith("tiny"):
        common.flatten_optimizers(c)
    return c
