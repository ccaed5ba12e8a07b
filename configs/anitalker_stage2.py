"""AniTalker stage 2 (speech -> stage-1 motion codes, Conformer diffusion + variance adapter).

Variants:
  paper                hubert_full_control as released: windows of 125 frames (5 s at 25 fps)
                       plus a hint frame at start-1, HuBERT-large features at 50 Hz computed
                       on the fly by a frozen `hubert` group (weights from `jaxtalk import
                       --release=hubert`), loss = eps-MSE + lambda * attribute MSE, Adam
                       1e-4, grad clip 1, EMA 0.9999, global batch 64, 256x256 frames, on
                       the mixture VoxCeleb2 + HDTF (`data.mixture`, weights ours).
  <infer_type>         the same recipe for one released variant: mfcc_pose_only,
                       mfcc_full_control, hubert_audio_only, hubert_pose_only,
                       hubert_full_control (= paper).
  tiny                 mfcc_full_control with small dims, 12-frame windows, the 64x64
                       synthetic set; minutes on a CPU. Needs a stage-1 run or weights:
                       --config.stage1.workdir=RUN (or --config.stage1.weights=FILE).

Motion-code targets come from the frozen stage-1 encoder (group `stage1`, no optimizer)
applied to the window frames on the fly; see jaxtalk/tasks/anitalker_stage2.py.
"""

import ml_collections

from configs import common
from data_pipelines.loaders import default_data_config
from jaxtalk.models.anitalker.stage2 import INFER_TYPES


def get_config(arg: str = "paper"):
    c = common.base_config()
    c.task = "anitalker_stage2"
    c.init_from = ""  # an `anitalker_stage2` weights file (jaxtalk import) to fine-tune

    infer_type = "hubert_full_control" if arg in ("paper", "tiny") else arg
    if infer_type not in INFER_TYPES:
        raise ValueError(
            f"unknown variant {arg!r} of anitalker_stage2 (paper, tiny, {', '.join(INFER_TYPES)})"
        )
    # DiffusionPredictor options (released sizes by default).
    c.model = ml_collections.ConfigDict(
        dict(
            infer_type=infer_type,
            speech_dim=512,
            fusion_dim=128,
            speech_layers=4,
            decoder_layers=2,
            mfcc_hidden=256,
            num_heads=2,
            kernel_size=13,
            dropout_rate=0.2,
            lstm_hidden=128,
            lstm_layers=2,
            t_scale=1.0,
        )
    )
    # The frozen stage-1 model that turns frames into motion codes (and renders samples).
    # Its architecture is given here and must match the weights (checked at load).
    c.stage1 = ml_collections.ConfigDict(
        dict(
            workdir="",  # an anitalker_stage1 run (its EMA generator) ...
            step=-1,  # ... at this step (-1: the latest)
            weights="",  # ... or an `anitalker_stage1` weights file
            size=256,
            width=1.0,
            style_dim=512,
            motion_dim=20,
        )
    )
    c.hubert = ml_collections.ConfigDict(
        dict(
            weights="",  # default: <weights dir>/hubert.safetensors
            size="large",
        )
    )  # large | base
    c.diffusion = ml_collections.ConfigDict(
        dict(
            num_timesteps=1000,
            beta_schedule="linear",
            sample_steps=50,
            clip_x0=1.0,  # DDIM eta 0 for samples / eval, as released
            motion_scale=1.0,  # codes are divided by this before diffusion (x0 is clamped to +-1)
            normalize_motion=False,  # first standardise each code dimension (the release: no)
            normalize_windows=64,
        )
    )  # training windows the per-dimension mean/std are measured on
    c.loss = ml_collections.ConfigDict(dict(attribute=1.0))  # lambda; the release sums them 1:1
    c.lipsync = ml_collections.ConfigDict(
        dict(train_windows=64, test_windows=32, ridge=1e-2)
    )  # jaxtalk/evaluate/lipsync_probe.py

    c.data = default_data_config()
    # num_frames = hint frame + window; audio_pad_frames gives the MFCC deltas context.
    c.data.update(
        dict(
            # VoxCeleb2 + HDTF at 256 under one root (README, "Preparing data"); weights
            # ours: none given = by clips (the paper publishes none); see anitalker_stage1.
            data_dir="",
            data_root="data/paper_256",
            mixture="voxceleb2,hdtf",
            kind="windows",
            num_frames=126,
            image_dtype="uint8",
            audio="raw",
            audio_pad_frames=1,
            attributes=("pose", "mouth", "landmarks_xy"),
        )
    )

    c.optimizers = ml_collections.ConfigDict(
        {"model": common.optimizer_config("adam", lr=1e-4, clip_norm=1.0)}
    )
    c.ema = ml_collections.ConfigDict({"model": 0.9999})
    c.batch_size = 64
    c.total_steps = 500_000  # unpublished; the release's stubs train until stopped
    c.mesh.data, c.mesh.fsdp = -1, 1
    c.log.every_steps = 100
    c.eval.every_steps = 5000
    c.eval.num_batches = 8
    c.checkpoint.every_steps = 5000

    if arg == "tiny":
        c.model.update(
            dict(
                infer_type="mfcc_full_control",
                speech_dim=64,
                fusion_dim=32,
                mfcc_hidden=64,
                decoder_layers=2,
                dropout_rate=0.1,
                lstm_hidden=32,
                lstm_layers=1,
                t_scale=1e-3,
            )
        )
        c.stage1.update(dict(size=64, width=0.0625))  # = anitalker_stage1:tiny
        # A fresh tiny stage 1's codes sit at offsets of up to +-4 with stds of 0.15-1.2 per
        # dimension: standardise them (see the task's docstring).
        c.diffusion.update(dict(normalize_motion=True, motion_scale=1.0, clip_x0=2.0))
        c.data.update(dict(data_dir="demo_out/data", mixture="", num_frames=13, samples_per_clip=8))
        c.optimizers.model.lr = 1e-3
        c.ema.model = 0.99
        common.flatten_optimizers(c)
        c.batch_size = 8
        # Lip-sync probe on held-out clips (real / shuffled audio): 0.36 / -0.01 at step 500,
        # 0.40 / 0.02 at 1000, 0.53 / 0.02 at 1500 (0.26 / 0.05 at 1000 without the
        # normalisation, codes / 0.5 clamped at 4).
        c.total_steps = 1500
        c.log.every_steps = 50
        c.eval.every_steps = 500
        c.eval.num_batches = 2
        c.checkpoint.every_steps = 500
        c.lipsync.update(dict(train_windows=112, test_windows=48))
    return c
