"""jaxtalk prepare DATASET: official downloads (or the built-in synthetic set) -> training records.

Reads the dataset's official metadata from --manual_dir, cuts each clip with ffmpeg (25 fps,
one fixed square face crop resized to --size, mono 16 kHz audio), filters it, and writes
sharded ArrayRecord files plus dataset_info.json to --out_dir, or to <--root>/DATASET so
that several datasets share one root and a mixture names them by name
(`config.data.data_root=ROOT`, `config.data.mixture="voxceleb2,hdtf"`). Rerunning continues
an interrupted run: finished shards are kept, unfinished ones redone.

DATASET is one of: synthetic, voxceleb1, voxceleb2, hdtf, vfhq, celebvhq, talkinghead1kh,
`videos`: any folder of one's own videos (nested), where faces are detected and tracked,
scene cuts split clips and each file goes to train or test by a stable hash of its relative path
(data_pipelines/parsers/videos.py), for fine-tuning with `--config.init_from`; or `images`: a
folder of portrait images, each a one-frame silent clip (faces found as for videos, or the
centred square with --nodetect_faces; data_pipelines/parsers/images.py), for LivePortrait's
mixed image / video training (`config.data.mixture="vfhq,images"`).

  jaxtalk prepare synthetic --out_dir=data/synthetic --size=64
  jaxtalk prepare voxceleb2 --manual_dir=/data/vox2 --out_dir=data/vox2_256 --size=256
  jaxtalk prepare hdtf --manual_dir=/data/HDTF --out_dir=data/hdtf_512 --size=512 --test_list=dinet_test.txt
  jaxtalk prepare hdtf --manual_dir=/data/HDTF --root=data/paper_256 --size=256   # data/paper_256/hdtf
  jaxtalk prepare videos --manual_dir=~/my_videos --out_dir=data/mine_256 --identity=folder
  jaxtalk prepare images --manual_dir=~/portraits --root=data/paper_512 --size=512
      --landmarks_dir=~/portraits_landmarks [--landmarks_model=face_landmarker.task]
  jaxtalk prepare vfhq --manual_dir=/data/VFHQ --out_dir=data/vfhq_512 --size=512
      --landmarks_dir=/data/VFHQ/landmarks [--landmarks_model=face_landmarker.task]

--landmarks_dir adds AniPortrait's per-frame face landmarks (MediaPipe's 478 points, head pose)
to each clip from one file per source video (per image for `images`), and drops video clips
under 30 frames as the release;
--landmarks_model first writes the missing files with MediaPipe (an optional extra).

--companions_dir adds MegActor's driving streams to each clip: the outputs of a face swapper,
an image-to-image stylisation and a human parser, one file set per source video
(`<video name>.swapped.mp4`, `.styled.mp4`, `.masks.npz`; data_pipelines/companions.py). The
synthetic set renders its own (--nosynthetic_companions skips them).

  jaxtalk prepare vfhq --manual_dir=/data/VFHQ --out_dir=data/vfhq_512 --size=512
      --companions_dir=/data/VFHQ/companions
"""

from __future__ import annotations

from absl import flags

from jaxtalk import fs
from jaxtalk.errors import InputError

FLAGS = flags.FLAGS

flags.DEFINE_string("out_dir", None, "Where the shards and dataset_info.json go.")
flags.DEFINE_string(
    "root", None, "Instead of --out_dir: write to <root>/DATASET (several datasets, one root)."
)
flags.DEFINE_string(
    "manual_dir",
    None,
    "The official download (metadata + videos); synthetic: "
    "where the raw set is generated (default <out_dir>/raw).",
)
flags.DEFINE_integer(
    "size", 256, "Output frame side in pixels (256 or 512 for real data; 64 for tiny CPU runs)."
)
flags.DEFINE_integer(
    "clips_per_shard", 64, "Clips per ArrayRecord shard (the unit of resumable work)."
)
flags.DEFINE_integer(
    "num_workers", 0, "Processes working on shards in parallel (0 = in this process)."
)
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of the stored frames.")
flags.DEFINE_integer("min_frames", None, "Reject clips shorter than this (default: dataset's).")
flags.DEFINE_integer("min_face_size", None, "Reject crops smaller than this many source pixels.")
flags.DEFINE_float("blur_threshold", None, "Reject clips whose Laplacian variance is below this.")
flags.DEFINE_float(
    "max_abs_yaw", None, "Reject clips turning further (degrees), where pose is known."
)
flags.DEFINE_string(
    "test_list",
    None,
    "hdtf/celebvhq: file of video names (or ytb ids) for the test split; "
    "videos, images: of paths relative to --manual_dir.",
)
flags.DEFINE_float(
    "test_fraction",
    None,
    "hdtf/celebvhq: hold out this fraction of identities as test; videos, images: of files "
    "(default 0.1).",
)
flags.DEFINE_enum(
    "identity", None, ["file", "folder"], "videos, images: one identity per file, or per folder."
)
flags.DEFINE_boolean(
    "detect_faces",
    None,
    "images: crop around the face OpenCV's detector finds (default; images without one are "
    "skipped); --nodetect_faces: the images are portrait crops, take their centred square.",
)
flags.DEFINE_float(
    "scene_threshold",
    None,
    "videos: mean colour change (0..1) between frames that counts as a scene cut (default 0.06).",
)
flags.DEFINE_string(
    "info_file", None, "celebvhq: the info json (default celebvhq_info.json in manual_dir)."
)
flags.DEFINE_string(
    "landmarks_dir",
    None,
    "Per-video (images: per-image) face landmark files <file name>.npz (AniPortrait, "
    "LivePortrait; format in data_pipelines/landmarks.py) stored with each clip; clips "
    "without one are skipped.",
)
flags.DEFINE_string(
    "landmarks_model",
    None,
    "MediaPipe's face_landmarker.task: first write the missing --landmarks_dir files "
    "(needs pip install 'jaxtalk[mediapipe]').",
)
flags.DEFINE_string(
    "companions_dir",
    None,
    "MegActor's per-video companion files <video name>.swapped.mp4 / .styled.mp4 / "
    ".masks.npz (format in data_pipelines/companions.py) stored with each clip; bad files "
    "are skipped and counted, clips without any train on their own frames.",
)
flags.DEFINE_boolean(
    "synthetic_companions", True, "synthetic: also render MegActor's companion streams."
)
flags.DEFINE_integer("num_identities", 8, "synthetic: identities.")
flags.DEFINE_integer("videos_per_identity", 2, "synthetic: videos per identity.")
flags.DEFINE_integer("utterances_per_video", 2, "synthetic: utterances (clips) per video.")
flags.DEFINE_float("utterance_seconds", 3.0, "synthetic: clip length in seconds.")
flags.DEFINE_integer("raw_resolution", 256, "synthetic: side of the generated raw videos.")
flags.DEFINE_integer("test_identities", 1, "synthetic: identities in the test split.")
flags.DEFINE_integer("seed", 0, "synthetic: generator seed.")


def output_dir(name: str, out_dir: str | None, root: str | None) -> str:
    """--out_dir, or <--root>/DATASET; exactly one of them."""
    if bool(out_dir) == bool(root):
        raise InputError("give one of --out_dir=DIR or --root=ROOT (writes ROOT/DATASET)")
    return out_dir or fs.join(root, name)


def main(argv: list[str]) -> None:
    # Imported here so `jaxtalk prepare --help` stays fast.
    from data_pipelines import datasets  # pylint: disable=import-outside-toplevel
    from data_pipelines.synthetic import generate  # pylint: disable=import-outside-toplevel

    if len(argv) != 2:
        raise InputError(
            f"usage: jaxtalk prepare DATASET [flags]; DATASET in {sorted(datasets.DATASETS)}"
        )
    name = argv[1]
    if name not in datasets.DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose from {sorted(datasets.DATASETS)}")
    out_dir = output_dir(name, FLAGS.out_dir, FLAGS.root)
    synthetic = generate.SyntheticConfig(
        num_identities=FLAGS.num_identities,
        videos_per_identity=FLAGS.videos_per_identity,
        utterances_per_video=FLAGS.utterances_per_video,
        utterance_seconds=FLAGS.utterance_seconds,
        resolution=FLAGS.raw_resolution,
        test_identities=FLAGS.test_identities,
        seed=FLAGS.seed,
        companions=FLAGS.synthetic_companions,
    )
    datasets.prepare_dataset(
        name,
        FLAGS.manual_dir,
        out_dir,
        size=FLAGS.size,
        clips_per_shard=FLAGS.clips_per_shard,
        num_workers=FLAGS.num_workers,
        jpeg_quality=FLAGS.jpeg_quality,
        synthetic=synthetic,
        landmarks_dir=FLAGS.landmarks_dir,
        landmarks_model=FLAGS.landmarks_model,
        companions_dir=FLAGS.companions_dir,
        filter_overrides={
            "min_frames": FLAGS.min_frames,
            "min_face_size": FLAGS.min_face_size,
            "blur_threshold": FLAGS.blur_threshold,
            "max_abs_yaw": FLAGS.max_abs_yaw,
        },
        parser_options={
            "test_list": FLAGS.test_list,
            "test_fraction": FLAGS.test_fraction,
            "info_file": FLAGS.info_file,
            "identity": FLAGS.identity,
            "scene_threshold": FLAGS.scene_threshold,
            "detect_faces": FLAGS.detect_faces,
        },
        log=print,  # the opening line and the final report; per-shard lines: --verbosity=0
    )
