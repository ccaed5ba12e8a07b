"""Dataset names -> parser and default filters; `prepare_dataset` runs the whole path."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

from absl import logging

from data_pipelines import companions, filters, landmarks, pipeline
from data_pipelines.parsers import celebvhq, hdtf, images, talkinghead1kh, vfhq, videos, voxceleb
from data_pipelines.process import ProcessConfig, process_image
from data_pipelines.synthetic import generate
from jaxtalk import fs
from jaxtalk.errors import InputError


@dataclasses.dataclass(frozen=True)
class DatasetDef:
    parse: Callable[..., Any]  # (manual_dir, **options) -> (specs, SkipReport)
    filters: filters.FilterConfig = filters.FilterConfig()
    options: tuple[str, ...] = ()  # parser keyword options the command may pass
    parallel_parse: bool = False  # the parser takes num_workers (it decodes the videos)
    audio: bool = True  # its videos carry speech (False: video-only clips are kept silent)
    process: Callable[..., Any] | None = None  # one spec -> one ClipRecord (None: a video's)
    extract_landmarks: Callable[..., Any] = landmarks.extract_video  # for --landmarks_model
    # A clip's minimum length with --landmarks_dir (AniPortrait's rule for video clips).
    landmark_min_frames: int = landmarks.MIN_FRAMES


# Synthetic clips are short and flat-shaded: the real-data thresholds would reject them.
SYNTHETIC_FILTERS = filters.FilterConfig(min_frames=25, min_face_size=32, blur_threshold=2.0)
# A still image is a one-frame clip; the face-size and blur thresholds are the videos'.
IMAGE_FILTERS = filters.FilterConfig(min_frames=1)

DATASETS = {
    "voxceleb1": DatasetDef(functools.partial(voxceleb.parse, version=1)),
    "voxceleb2": DatasetDef(functools.partial(voxceleb.parse, version=2)),
    "hdtf": DatasetDef(hdtf.parse, options=("test_list", "test_fraction")),
    "vfhq": DatasetDef(vfhq.parse),
    "celebvhq": DatasetDef(celebvhq.parse, options=("test_list", "test_fraction", "info_file")),
    # Any folder of videos: faces found and tracked here (data_pipelines/parsers/videos.py).
    "videos": DatasetDef(
        videos.parse,
        options=("test_list", "test_fraction", "identity", "scene_threshold"),
        parallel_parse=True,
    ),
    "talkinghead1kh": DatasetDef(talkinghead1kh.parse, audio=False),  # video-only downloads
    # A folder of portrait images: one-frame silent clips (data_pipelines/parsers/images.py).
    "images": DatasetDef(
        images.parse,
        IMAGE_FILTERS,
        options=("test_list", "test_fraction", "identity", "detect_faces"),
        parallel_parse=True,
        audio=False,
        process=process_image,
        extract_landmarks=landmarks.extract_image,
        landmark_min_frames=1,
    ),
    "synthetic": DatasetDef(
        functools.partial(voxceleb.parse, version=2, dataset="synthetic"), SYNTHETIC_FILTERS
    ),
}


def prepare_dataset(
    name: str,
    manual_dir: str,
    out_dir: str,
    *,
    size: int = 256,
    filter_overrides: dict[str, Any] | None = None,
    parser_options: dict[str, Any] | None = None,
    clips_per_shard: int = 64,
    num_workers: int = 0,
    jpeg_quality: int = 95,
    synthetic: generate.SyntheticConfig | None = None,
    landmarks_dir: str | None = None,
    landmarks_model: str | None = None,
    companions_dir: str | None = None,
    log=logging.info,
) -> dict[str, Any]:
    """Parses `manual_dir`, processes every clip into `out_dir` shards, writes dataset_info.json.

    For "synthetic", the raw set is generated into `manual_dir` first (default `<out_dir>/raw`).
    A remote `out_dir` (gs://...) is built in a local staging directory and uploaded at the end.
    `landmarks_dir`: per-video face landmark files (data_pipelines/landmarks.py) become the
    clips' attributes; `landmarks_model` first writes the missing ones with MediaPipe.
    `companions_dir`: MegActor's per-video companion files (data_pipelines/companions.py)
    stored with the clips; the synthetic set generates its own (`<manual_dir>/companions`).
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    if landmarks_model and not landmarks_dir:
        raise InputError("--landmarks_model needs --landmarks_dir (where the files go)")
    if landmarks_dir and name == "synthetic":
        raise InputError("the synthetic set carries its own exact landmarks: drop --landmarks_dir")
    if fs.is_remote(out_dir):
        staging = fs.staging_dir(out_dir)
        log(f"building {out_dir} in {staging}")
        result = prepare_dataset(
            name, manual_dir, staging, size=size, filter_overrides=filter_overrides,
            parser_options=parser_options, clips_per_shard=clips_per_shard,
            num_workers=num_workers, jpeg_quality=jpeg_quality, synthetic=synthetic,
            landmarks_dir=landmarks_dir, landmarks_model=landmarks_model,
            companions_dir=companions_dir, log=log,
        )  # fmt: skip
        log(f"uploaded {fs.copy_tree(staging, out_dir)} files to {out_dir}")
        return result
    ds = DATASETS[name]
    if name == "synthetic":
        manual_dir = manual_dir or os.path.join(out_dir, "raw")
        log(f"generating synthetic talking heads in {manual_dir}")
        # One line per identity: detail for the absl log, not for `log`'s summary.
        synthetic = synthetic or generate.SyntheticConfig()
        generate.generate(manual_dir, synthetic, log=logging.info)
        if synthetic.companions and not companions_dir:
            companions_dir = os.path.join(manual_dir, "companions")
    if not manual_dir:
        raise InputError(f"--manual_dir is required: the directory holding the {name} download")
    if not os.path.isdir(manual_dir):
        raise InputError(
            f"--manual_dir {manual_dir!r} is not a directory (put the {name} download there)"
        )
    options = {k: v for k, v in (parser_options or {}).items() if v is not None}
    unknown = set(options) - set(ds.options)
    if unknown:
        raise InputError(
            f"{name} does not take {sorted(unknown)} (takes {list(ds.options) or 'no options'})"
        )
    if ds.parallel_parse:
        options["num_workers"] = num_workers
    detect = landmarks.mediapipe_detector(landmarks_model) if landmarks_model else None
    specs, report = ds.parse(manual_dir, **options)
    base_filters = ds.filters
    if landmarks_dir:
        if detect is not None:
            landmarks.extract_missing(
                specs, landmarks_dir, detect, log=log, extract=ds.extract_landmarks
            )
        specs = landmarks.attach(specs, landmarks_dir, report)
        base_filters = dataclasses.replace(base_filters, min_frames=ds.landmark_min_frames)
    if companions_dir:
        if ds.process is process_image:
            raise InputError("images have no companion streams: drop --companions_dir")
        specs = companions.attach(specs, companions_dir, report)
    flt = dataclasses.replace(
        base_filters, **{k: v for k, v in (filter_overrides or {}).items() if v is not None}
    )
    cfg = ProcessConfig(size=size, jpeg_quality=jpeg_quality, filters=flt, require_audio=ds.audio)
    return pipeline.prepare(
        specs,
        report,
        out_dir,
        name=name,
        cfg=cfg,
        clips_per_shard=clips_per_shard,
        num_workers=num_workers,
        process_fn=ds.process,
        log=log,
    )
