"""AniPortrait's audio models (jaxtalk/tasks/aniportrait_audio.py): speech -> face-mesh
offsets (Audio2Mesh) or -> head pose (Audio2Pose), L1 losses.

Variants (`get_config("<kind>_<size>")`):
  mesh_paper, pose_paper   the released architectures (wav2vec2-base-960h encoder, latent
                           512; Audio2Pose: 8 decoder layers, 8 heads, FFN 1024, 100 identity
                           embeddings, 600-frame position table, dropout 0.1), the encoder's
                           conv feature extractor frozen (as released), wav2vec2-base
                           weights from `jaxtalk import --release=wav2vec2_base`, on VFHQ +
                           CelebV-HQ windows with MediaPipe meshes and poses. The authors did
                           not release their training: optimizer, learning rate, batch,
                           window length and steps are ours (Adam 1e-4, clip 1, batch 16,
                           5-second windows as the release's inference chunks, 100k steps).
  mesh_tiny, pose_tiny     small widths on the synthetic set; a couple of minutes on a CPU.
"""

import ml_collections

from configs import common
from data_pipelines.loaders import default_data_config

KINDS = ("mesh", "pose")
SIZES = ("paper", "tiny")


def get_config(arg: str = "mesh_paper"):
    kind, _, size = arg.partition("_")
    if kind not in KINDS or size not in SIZES:
        raise ValueError(
            f"unknown variant {arg!r} of aniportrait_audio "
            f"({', '.join(f'{k}_{s}' for k in KINDS for s in SIZES)})"
        )
    c = common.base_config()
    c.task = "aniportrait_audio"
    c.init_from = ""  # an aniportrait_audio2mesh / _audio2pose weights file to fine-tune
    c.model = ml_collections.ConfigDict(
        dict(
            kind=kind,
            latent_dim=512,
            only_last_features=True,  # the release's `only_last_fetures`
            # Audio2Pose only
            num_layers=8,
            num_heads=8,
            ffn_dim=1024,
            num_ids=100,
            max_len=600,
            dropout=0.1,
            # Poses in units of their per-dimension mean / std, measured on this many
            # training windows at the start (False: the release's raw units).
            normalize_pose=False,
            stats_windows=64,
        )
    )
    # The wav2vec2 encoder: wav2vec2-base's layout at these sizes.
    c.audio = ml_collections.ConfigDict(
        dict(
            pretrained=True,  # start from wav2vec2-base weights ...
            weights="",  # ... in this file (default: <weights dir>/wav2vec2_base.safetensors)
            hidden_size=768,
            num_layers=12,
            num_heads=12,
            intermediate_size=3072,
            conv_dim=512,
            pos_conv_kernel=128,
            pos_conv_groups=16,
        )
    )
    # Audio2Mesh's targets: offsets from the window's most closed-mouth frame | "first"
    c.loss = ml_collections.ConfigDict(dict(reference="closed"))
    c.frozen = (r"model/audio_encoder/feature_extractor/.*",)  # as the release freezes it

    c.data = default_data_config()
    c.data.update(
        dict(
            data_dir="",
            data_root="data/paper_512",
            mixture="vfhq,celebvhq",
            kind="windows",
            num_frames=125,  # 5 s at 25 fps (the release's inference chunks are 5 s)
            image_size=8,  # frames are dropped: decode them small
            image_dtype="uint8",
            audio="raw",
            audio_pad_frames=0,
            attributes=("face_mesh", "mouth") if kind == "mesh" else ("head_pose", "face_mesh"),
        )
    )
    c.optimizers = ml_collections.ConfigDict(
        {"model": common.optimizer_config("adam", lr=1e-4, clip_norm=1.0)}
    )
    c.batch_size = 16
    c.total_steps = 100_000
    c.log.every_steps = 100
    c.eval.every_steps = 2000
    c.eval.num_batches = 8
    c.checkpoint.every_steps = 2000

    if size == "tiny":
        c.model.update(dict(latent_dim=32, num_layers=2, num_heads=4, ffn_dim=64, num_ids=8))
        c.audio.update(
            dict(
                pretrained=False,
                hidden_size=32,
                num_layers=1,
                num_heads=2,
                intermediate_size=64,
                conv_dim=32,
                pos_conv_kernel=16,
                pos_conv_groups=4,
            )
        )
        c.frozen = ()  # a random tiny encoder learns its conv features too
        c.model.normalize_pose = True  # synthetic angles vary by degrees, positions by 1%
        c.data.update(dict(data_dir="demo_out/data", mixture="", num_frames=16, samples_per_clip=8))
        c.optimizers.model.lr = 2e-3
        c.batch_size = 8
        c.total_steps = 600
        c.log.every_steps = 50
        c.eval.every_steps = 300
        c.eval.num_batches = 2
        c.checkpoint.every_steps = 300
        common.flatten_optimizers(c)
    return c
