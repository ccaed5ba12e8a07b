"""jaxtalk animate: animate a portrait, driven by a video or by speech.

  jaxtalk animate --mode=video --source=portrait.png --driving=talk.mp4 \
      --weights=weights/anitalker_stage1.safetensors --out=result.mp4

--weights is a file from `jaxtalk import --release=anitalker_stage1|lia` (or `jaxtalk
export`); --workdir=RUN uses the EMA generator of an anitalker_stage1 training run instead.
The source is cropped around its face (see below); the driving video is centre-cropped to
a square (pass --driving_crop=x,y,w,h to choose the face box). The output keeps the driving
frame rate and carries the driving video's audio. --motion picks the released motion modes:
relative (default) or absolute.

  jaxtalk animate --mode=audio --source=portrait.png --audio=speech.wav \
      --stage2=weights/anitalker_stage2.safetensors \
      --stage1=weights/anitalker_stage1.safetensors --out=result.mp4

--audio is any file ffmpeg reads (wav, mp3, m4a, a video's audio track) at any sample rate.
--stage2 is a file from `jaxtalk import --release=anitalker_stage2` (then --stage1, a
stage-1 weights file or anitalker_stage1 run, renders) or an anitalker_stage2 run
(which carries its stage-1 model). The output is 25 fps with the speech muxed in. As
released: --seed, --control with --pose_yaw/--pose_pitch/--pose_roll in [-1, 1] (or
--pose_file, a (T, 3) .npy/.txt sequence), --face_location, --face_scale, --ddim_steps.

In both modes the source is first cropped around its largest face (OpenCV's Haar detector,
bundled in the opencv wheel; see jaxtalk/media/face_detect.py), framed like the training
crops. --nocrop_face skips detection and only centre-crops, for images that already are
face crops (the synthetic set's frames) or faces the detector misses (profiles, drawings).

Batch animation: a CSV of jobs, or every source with every driving input.

  jaxtalk animate --batch=jobs.csv --out_dir=out --weights=weights/anitalker_stage1.safetensors
  jaxtalk animate --sources='faces/*.png' --drivings='talks/*.mp4' --out_dir=out --weights=...

jobs.csv rows are `source,driving[,out]` (paths relative to the CSV's folder; `driving` is
the speech with --mode=audio); rows without `out`, and globs, write
<out_dir>/<source>__<driving>.mp4. Outputs that exist are skipped, so rerunning after an
interruption finishes the rest. Each local device runs its own copy of the model on its
share of the jobs (--devices caps how many), each process of a multi-process run takes
every N-th job, and one progress bar counts the videos. A job whose input is unusable is
counted and reported at the end; the others still run.

LivePortrait weights (`jaxtalk import --release=liveportrait`) take the release's options,
each passed on only when given: --stitching/--nostitching (default: on when the file has
the stitching module), --driving_multiplier, --animation_region, --eye_ratio / --lip_ratio
(retarget the eyes / lips to this open ratio, or to the driving frames' ratios with
`driving`), --paste_back (the animated crop put back into the whole source image, whose
size the output takes). --landmark_model=landmark.onnx (the release's landmark network,
from its insightface folder) crops the source as the release does, rotated to its 203
landmarks, and gives the eye / lip ratios; without it --paste_back crops by the detector's
box, unrotated, and the ratios are unavailable.

  jaxtalk animate --weights=weights/liveportrait.safetensors --source=portrait.jpg \
      --driving=talk.mp4 --landmark_model=landmark.onnx --paste_back --out=result.mp4

A LivePortrait --source may be a video (any file ffmpeg reads with a video stream that is
not an image): source frame i is animated by driving frame i, min(source, driving) frames
at the source's frame rate, the motion smoothed over time as released (--smooth_variance);
the output carries the driving video's audio, or the source's when the driving video has
none or with --audio_priority=source. Its frames are cropped by one face box (the first
frame's), with --landmark_model each by its own tracked landmarks, and --paste_back puts
each animated frame back into its own source frame. --source_video_eye_retargeting (with
--landmark_model) holds the eyes as open as in the first source frame, as released.

  jaxtalk animate --weights=weights/liveportrait.safetensors --source=speaker.mp4 \
      --driving=talk.mp4 --landmark_model=landmark.onnx --paste_back --out=result.mp4

AniPortrait (`jaxtalk import --release=aniportrait`, with sd_vae and
sd_image_variations_image_encoder in the same weights directory, or --workdir=RUN of an
aniportrait run of either stage) renders face-mesh drawings (jaxtalk/inference/aniportrait.py).
The landmarks come from files in data_pipelines/landmarks.py's format (source pixels):
--source_landmarks (its first row: the source image's) and, with --mode=video,
--driving_landmarks (the driving video's rows, picked by time); or, with the mediapipe
extra installed (pip install 'jaxtalk[mediapipe]'), --landmarks_model=face_landmarker.task
extracts what no file gives. Files with face_mesh and head_pose transfer the motion in 3-D
as the release's vid2vid does; 2-D points only are aligned by a similarity fit of the first
frame. The output keeps the driving frame rate and audio. --mode=audio with --weights or
--workdir (instead of --stage2) drives it by speech: Audio2Mesh and Audio2Pose weights
(--audio2mesh / --audio2pose; default: aniportrait_audio2mesh / aniportrait_audio2pose
beside --weights) make the landmarks, which needs the source's face_mesh and head_pose;
the video is 30 fps with the speech muxed. Sampling as released (25 DDIM steps, guidance
3.5, 16-frame windows overlapping by 4; a run: its config's); --ddim_steps overrides the
steps when given, --seed picks the noise.

  jaxtalk animate --weights=weights/aniportrait.safetensors --source=portrait.png \
      --source_landmarks=portrait.npz --driving=talk.mp4 --driving_landmarks=talk.npz \
      --nocrop_face --out=result.mp4
  jaxtalk animate --mode=audio --weights=weights/aniportrait.safetensors \
      --source=portrait.png --source_landmarks=portrait.npz --audio=speech.wav --out=result.mp4

MegActor weights (`jaxtalk import --release=megactor`, with the sd_vae and clip_vision
releases in the weights folder) or a megactor training run (--workdir) animate a source with
the raw driving video, turned grey as the release does: 25 DDIM steps, guidance 4.5,
16-frame windows overlapping by 8, the driving video's audio muxed. --source_mask=PNG marks
the source's background (non-zero pixels), which the model keeps; it must align with the
source as given, so it wants --nocrop_face. Without it the whole frame counts as background
(the training data's fallback for clips without masks). --seed (when given) picks the noise.

  jaxtalk animate --weights=weights/megactor.safetensors --source=portrait.png --nocrop_face \
      --source_mask=portrait_background.png --driving=talk.mp4 --out=result.mp4
"""

import functools

import numpy as np
from absl import flags

from jaxtalk import fs
from jaxtalk.errors import InputError

_MODE = flags.DEFINE_enum("mode", "video", ["video", "audio"], "what drives the animation")
_SOURCE = flags.DEFINE_string(
    "source", None, "the portrait image to animate (LivePortrait: or a video)"
)
_CROP_FACE = flags.DEFINE_bool(
    "crop_face",
    True,
    "crop the source around its largest face "
    "(bundled OpenCV detector) before resizing; --nocrop_face uses "
    "the image as it is, centre-cropped (already-cropped portraits)",
)
_DRIVING = flags.DEFINE_string("driving", None, "--mode=video: the driving video")
_DRIVING_CROP = flags.DEFINE_list("driving_crop", None, "x,y,w,h face box in driving pixels")
_WEIGHTS = flags.DEFINE_string("weights", None, "imported or exported weights (.safetensors)")
_WORKDIR = flags.DEFINE_string("workdir", None, "or: a training run directory")
_STEP = flags.DEFINE_integer("step", None, "--workdir: checkpoint step (default latest)")
_MOTION = flags.DEFINE_enum("motion", "relative", ["relative", "absolute"], "motion mode")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", None, "animate only the first seconds")
_CHUNK = flags.DEFINE_integer("chunk", 8, "frames rendered per device call")
_OUT = flags.DEFINE_string("out", None, "output .mp4")
# --mode=audio
_AUDIO = flags.DEFINE_string("audio", None, "--mode=audio: the speech (wav, mp3, m4a, ...)")
_STAGE2 = flags.DEFINE_string("stage2", None, "anitalker_stage2 weights or an anitalker_stage2 run")
_STAGE1 = flags.DEFINE_string("stage1", None, "anitalker_stage1 weights or an anitalker_stage1 run")
_HUBERT = flags.DEFINE_string(
    "hubert", None, "HuBERT weights for hubert_* models (default: the imported `hubert` release)"
)
_SEED = flags.DEFINE_integer("seed", 0, "noise seed of the diffusion sampler")
_CONTROL = flags.DEFINE_bool(
    "control", False, "use the pose/location/scale controls below instead of the predicted ones"
)
_POSE_YAW = flags.DEFINE_float("pose_yaw", 0.0, "--control: head yaw in [-1, 1] (x 90 degrees)")
_POSE_PITCH = flags.DEFINE_float("pose_pitch", 0.0, "--control: head pitch in [-1, 1]")
_POSE_ROLL = flags.DEFINE_float("pose_roll", 0.0, "--control: head roll in [-1, 1]")
_POSE_FILE = flags.DEFINE_string("pose_file", None, "--control: a (T, 3) yaw/pitch/roll sequence")
_FACE_LOCATION = flags.DEFINE_float("face_location", None, "--control: face x location in [0, 1]")
_FACE_SCALE = flags.DEFINE_float("face_scale", None, "--control: face scale")
_DDIM_STEPS = flags.DEFINE_integer("ddim_steps", 50, "DDIM sampling steps")
# batch animation
_BATCH = flags.DEFINE_string(
    "batch", None, "a CSV job list: rows source,driving[,out] (driving: speech with --mode=audio)"
)
_SOURCES = flags.DEFINE_string("sources", None, "batch: source image globs (comma-separated)")
_DRIVINGS = flags.DEFINE_string(
    "drivings", None, "batch: driving video (or speech) globs; every source x every driving"
)
_OUT_DIR = flags.DEFINE_string(
    "out_dir", None, "batch: where <source>__<driving>.mp4 go (rows without an out column)"
)
_DEVICES = flags.DEFINE_integer("devices", None, "batch: use at most this many local devices")
# LivePortrait's options (passed on only when given)
_STITCHING = flags.DEFINE_bool(
    "stitching", True, "LivePortrait: stitching (default: on when the weights have it)"
)
_DRIVING_MULTIPLIER = flags.DEFINE_float(
    "driving_multiplier", None, "LivePortrait: scale the driven motion about the source's pose"
)
_ANIMATION_REGION = flags.DEFINE_enum(
    "animation_region", None, ["all", "exp", "pose", "lip", "eyes"], "LivePortrait: what moves"
)
_EYE_RATIO = flags.DEFINE_string(
    "eye_ratio", None, "LivePortrait: retarget the eyes to this open ratio, or 'driving'"
)
_LIP_RATIO = flags.DEFINE_string(
    "lip_ratio", None, "LivePortrait: retarget the lips to this open ratio, or 'driving'"
)
_LANDMARK_MODEL = flags.DEFINE_string(
    "landmark_model", None, "LivePortrait's landmark.onnx: the release's source crop and ratios"
)
_PASTE_BACK = flags.DEFINE_bool(
    "paste_back", False, "put the animated crop back into the whole source image"
)
_SMOOTH_VARIANCE = flags.DEFINE_float(
    "smooth_variance",
    None,
    "LivePortrait, a source video: the motion smoother's observation variance (3e-7; larger "
    "is smoother)",
)
_SOURCE_VIDEO_EYE = flags.DEFINE_bool(
    "source_video_eye_retargeting",
    False,
    "LivePortrait, a source video: hold every frame's eyes as open as the first frame's "
    "(needs --landmark_model)",
)
_AUDIO_PRIORITY = flags.DEFINE_enum(
    "audio_priority",
    "driving",
    ["driving", "source"],
    "a source video with audio: whose audio the output carries (the source's anyway when "
    "the driving video has none)",
)
# AniPortrait's landmarks and speech models (passed on only when given)
_SOURCE_LANDMARKS = flags.DEFINE_string(
    "source_landmarks", None, "AniPortrait: the source image's landmark file (.npz, first row)"
)
_DRIVING_LANDMARKS = flags.DEFINE_string(
    "driving_landmarks", None, "AniPortrait --mode=video: the driving video's landmark file"
)
_LANDMARKS_MODEL = flags.DEFINE_string(
    "landmarks_model", None, "AniPortrait: MediaPipe's face_landmarker.task (the mediapipe extra)"
)
_AUDIO2MESH = flags.DEFINE_string(
    "audio2mesh", None, "AniPortrait --mode=audio: Audio2Mesh weights"
)
_AUDIO2POSE = flags.DEFINE_string(
    "audio2pose", None, "AniPortrait --mode=audio: Audio2Pose weights"
)
# MegActor's options (passed on only when given)
_SOURCE_MASK = flags.DEFINE_string(
    "source_mask", None, "MegActor: the source's background mask image (non-zero = background)"
)


@functools.lru_cache(maxsize=1)
def _landmark_model(path: str):
    """--landmark_model, imported once (batch jobs share it)."""
    from jaxtalk.convert import onnx_graph
    from jaxtalk.media import portrait_crop

    with fs.local_file(path) as local:
        return portrait_crop.LandmarkModel(onnx_graph.load(local))


def _resized(crop, size: int) -> np.ndarray:
    """A float crop as uint8 pixels, area-resized to `size`."""
    from PIL import Image

    pixels = np.clip(np.asarray(crop.image).round(), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BOX))


def _portrait_source(path: str, size: int, what: str) -> dict | None:
    """With --landmark_model or --paste_back: the source cropped as LivePortrait's release
    crops it (jaxtalk/media/portrait_crop.py; 512 pixels, area-resized to `size`) with
    what the options need: the image, the crop's map, the landmarks (None without a model).
    A source video: every frame so (the frames, maps and landmarks stacked)."""
    from jaxtalk.inference import animator, files
    from jaxtalk.media import portrait_crop, video

    if not (_LANDMARK_MODEL.value or _PASTE_BACK.value):
        return None
    if not _CROP_FACE.value:
        raise InputError("--landmark_model and --paste_back crop the source: drop --nocrop_face")
    landmarks = None
    if _LANDMARK_MODEL.value:
        landmarks = _landmark_model(_LANDMARK_MODEL.value)
    found = dict(landmarks=landmarks, crop_size=portrait_crop.SOURCE.dsize)
    if files.source_video_info(path, what) is not None:
        frames, _ = video.read_video(path, duration=_MAX_SECONDS.value)
        crops, points = portrait_crop.source_video_crops(frames, landmarks, what=what)
        sources, c2o = [], []
        for crop in crops:  # one at a time: only the resized crops are kept
            sources.append(_resized(crop, size))
            c2o.append(crop.c2o)
        return dict(found, source=np.stack(sources), image=frames, c2o=np.stack(c2o), points=points)
    image = animator.read_image(path)
    crop, points = portrait_crop.source_crop(image, landmarks, what=what)
    return dict(found, source=_resized(crop, size), image=image, c2o=crop.c2o, points=points)


def _ratio_flag(flag, name: str, portrait: dict | None, driving, what: str, ratio, tracked: list):
    """--eye_ratio / --lip_ratio as the animator's options: the source's ratios from its
    landmarks and the target (a number, or the driving frames' own, tracked once)."""
    if flag.value is None:
        return {}
    try:
        target = None if flag.value == "driving" else float(flag.value)
    except ValueError:
        raise InputError(f"--{name}_ratio={flag.value}: give a number or 'driving'") from None
    if not portrait or portrait["points"] is None:
        raise InputError(f"--{name}_ratio needs --landmark_model (the source's landmarks)")
    if target is None:
        if not tracked:
            tracked.append(np.stack(portrait["landmarks"].track(driving, what=what)))
        target = np.asarray(ratio(tracked[0]))[:, 0]  # the release takes the left eye's
    source = np.asarray(ratio(portrait["points"]))
    return {f"{name}_ratio": target, f"source_{name}_ratio": source}


def _portrait_options(portrait: dict | None, driving, what: str) -> dict:
    """LivePortrait's flags as animator options, each only when given (`driving`: the
    frames of the video `what`)."""
    from jaxtalk.media import portrait_crop

    options = {}
    if flags.FLAGS["stitching"].present:
        options["stitching"] = _STITCHING.value
    if _DRIVING_MULTIPLIER.value is not None:
        options["driving_multiplier"] = _DRIVING_MULTIPLIER.value
    if _ANIMATION_REGION.value:
        options["animation_region"] = _ANIMATION_REGION.value
    if _SMOOTH_VARIANCE.value is not None:
        options["smooth_variance"] = _SMOOTH_VARIANCE.value
    tracked = []
    for flag, name, ratio in (
        (_EYE_RATIO, "eye", portrait_crop.eye_open_ratio),
        (_LIP_RATIO, "lip", portrait_crop.lip_open_ratio),
    ):
        options.update(_ratio_flag(flag, name, portrait, driving, what, ratio, tracked))
    if _SOURCE_VIDEO_EYE.value:
        if not portrait or portrait["points"] is None:
            raise InputError("--source_video_eye_retargeting needs --landmark_model")
        eyes = np.asarray(portrait_crop.eye_open_ratio(portrait["points"]))
        options.update(source_video_eye_retargeting=True, source_eye_ratio=eyes)
    if _PASTE_BACK.value:
        options["paste_back"] = dict(
            image=portrait["image"],
            crop_to_image=portrait["c2o"],
            crop_size=portrait["crop_size"],
        )
    return options


def _driving_crop() -> list[int] | None:
    """--driving_crop as four integers (the bounds are checked against the video on read)."""
    if not _DRIVING_CROP.value:
        return None
    try:
        box = [int(v) for v in _DRIVING_CROP.value]
    except ValueError:
        box = []
    if len(box) != 4:
        raise InputError(f"--driving_crop={','.join(_DRIVING_CROP.value)}: give x,y,w,h integers")
    return box


def _open_model():
    """The animator the flags name (--weights/--workdir, or --stage2 for --mode=audio)."""
    from jaxtalk import inference

    if _MODE.value == "audio" and not _STAGE2.value:  # a model that takes speech itself
        speech = {"audio2mesh": _AUDIO2MESH.value, "audio2pose": _AUDIO2POSE.value}
        return inference.open_animator(
            _WEIGHTS.value or _WORKDIR.value,
            run=bool(_WORKDIR.value),
            step=_STEP.value,
            driver=inference.Driver.AUDIO,
            chunk=_CHUNK.value,
            **{k: v for k, v in speech.items() if v},
        )
    if _MODE.value == "audio":
        return inference.open_animator(
            _STAGE2.value,
            driver=inference.Driver.AUDIO,
            stage1=_STAGE1.value,
            hubert=_HUBERT.value,
            chunk=_CHUNK.value,
        )
    return inference.open_animator(
        _WEIGHTS.value or _WORKDIR.value,
        run=bool(_WORKDIR.value),
        step=_STEP.value,
        driver=inference.Driver.VIDEO,
        chunk=_CHUNK.value,
    )


def _check_model_flags(single: bool) -> None:
    """The flags each mode needs; `single`: one --source/--driving|--audio/--out job."""
    if _MODE.value == "audio":
        named = [] if _WEIGHTS.value or _WORKDIR.value else [("stage2", _STAGE2.value)]
        if bool(_WEIGHTS.value) and bool(_WORKDIR.value) or (_STAGE2.value and named == []):
            raise InputError("--mode=audio: give one of --stage2, --weights or --workdir")
        if single:
            named += [("source", _SOURCE.value), ("audio", _AUDIO.value), ("out", _OUT.value)]
        missing = [f"--{n}" for n, v in named if not v]
        if missing:
            raise InputError(f"{', '.join(missing)} required with --mode=audio")
        return
    if single:
        named = (("source", _SOURCE.value), ("driving", _DRIVING.value), ("out", _OUT.value))
        missing = [f"--{n}" for n, v in named if not v]
        if missing:
            raise InputError(f"{', '.join(missing)} required")
    if bool(_WEIGHTS.value) == bool(_WORKDIR.value):
        raise InputError("give exactly one of --weights or --workdir")


def _options(driving: str) -> dict:
    """The animator options the flags give (its `start` keywords) for the driver `driving`,
    but for those read from the inputs (`_portrait_options`)."""
    if _MODE.value == "audio":  # `what` names the speech file in its errors
        options = dict(seed=_SEED.value, what=driving)
        if _STAGE2.value or flags.FLAGS["ddim_steps"].present:  # AniTalker's default is 50
            options["ddim_steps"] = _DDIM_STEPS.value
        if _CONTROL.value:  # the release's control values; the animator takes what its model does
            options.update(
                pose=[_POSE_YAW.value, _POSE_PITCH.value, _POSE_ROLL.value],
                pose_file=_POSE_FILE.value,
                face_location=_FACE_LOCATION.value,
                face_scale=_FACE_SCALE.value,
            )
        return options
    # --motion goes only where given: families without motion modes take no option.
    options = {"mode": _MOTION.value} if flags.FLAGS["motion"].present else {}
    for name in ("seed", "ddim_steps"):
        if flags.FLAGS[name].present:
            options[name] = flags.FLAGS[name].value
    if _SOURCE_MASK.value:  # MegActor's background mask must align with the source as given
        if _CROP_FACE.value:
            raise InputError("--source_mask must align with the source: add --nocrop_face")
        options["source_mask"] = _SOURCE_MASK.value
    return options


def _landmark_source(source_path: str, size: int, source: str, driving: str):
    """With AniPortrait's landmark flags: the source (face- or centre-cropped) and a function
    of the driver giving the landmark options, each file mapped into its crop."""
    from jaxtalk.inference import animator, aniportrait, files
    from jaxtalk.media import video

    if not (_SOURCE_LANDMARKS.value or _DRIVING_LANDMARKS.value or _LANDMARKS_MODEL.value):
        return None
    image, box = files.load_source(source_path, size, _CROP_FACE.value, what=source)
    options = {}
    if _LANDMARKS_MODEL.value:
        options["landmarks_model"] = _LANDMARKS_MODEL.value
    if _SOURCE_LANDMARKS.value:
        if box is None:
            box = animator.centre_square(*animator.read_image(source_path).shape[1::-1])
        options["source_landmarks"] = aniportrait.read_landmarks(_SOURCE_LANDMARKS.value, box)

    def read(drive) -> dict:
        if not _DRIVING_LANDMARKS.value or _MODE.value != "video":
            return options
        crop = _driving_crop()
        if crop is None:
            with fs.local_file(driving) as local:
                info = video.probe_video(local)
            crop = animator.centre_square(info.width, info.height)
        rows = aniportrait.read_landmarks(
            _DRIVING_LANDMARKS.value, crop, need=len(drive.steps), frame_fps=drive.fps
        )
        return {**options, "driving_landmarks": rows}

    return image, read


def _render(model, source: str, driving: str, out: str) -> tuple[int, float]:
    """One job: files (local or gs://) in, the mp4 out (jaxtalk/inference/files.py);
    (frames, fps)."""
    from jaxtalk.inference import files

    def portrait(source_path: str) -> tuple:
        """LivePortrait's source crop (--landmark_model, --paste_back) and its options, or
        AniPortrait's landmark files."""
        landmarks = _landmark_source(source_path, model.size, source, driving)
        if landmarks is not None:
            return landmarks
        found = _portrait_source(source_path, model.size, source)
        image = found["source"] if found else None
        return image, lambda drive: _portrait_options(found, drive.steps, driving)

    video_mode = _MODE.value == "video"
    written = files.animate_files(
        model,
        source,
        driving,
        out,
        crop_face=_CROP_FACE.value,
        driving_crop=_driving_crop() if video_mode else None,
        max_seconds=_MAX_SECONDS.value,
        options=_options(driving),
        extra=portrait,
        audio_priority=_AUDIO_PRIORITY.value,
    )
    if written.face_box:
        x, y, side, _ = written.face_box
        print(f"{source}: face crop x={x} y={y} side={side}")
    return written.frames, written.fps


def main(argv):
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    if _BATCH.value or _SOURCES.value or _DRIVINGS.value:
        return _batch()
    _check_model_flags(single=True)
    driving = _AUDIO.value if _MODE.value == "audio" else _DRIVING.value
    n, fps = _render(_open_model(), _SOURCE.value, driving, _OUT.value)
    print(f"wrote {n} frames ({n / fps:.1f} s) to {_OUT.value}")


def _batch():
    """--batch / --sources x --drivings: every job whose output is missing, on every local
    device (one animator each) and this process's share of them (jaxtalk/inference/batch.py)."""
    import jax
    from tqdm import tqdm

    from jaxtalk.inference import batch

    if _SOURCE.value or _DRIVING.value or _AUDIO.value or _OUT.value:
        raise InputError("--batch/--sources/--drivings replace --source, --driving, --audio, --out")
    if _BATCH.value and (_SOURCES.value or _DRIVINGS.value):
        raise InputError("give --batch=FILE.csv or --sources/--drivings globs, not both")
    if not _BATCH.value and not (_SOURCES.value and _DRIVINGS.value):
        raise InputError("--sources and --drivings go together (every source x every driver)")
    _check_model_flags(single=False)
    if _BATCH.value:
        jobs = batch.jobs_from_csv(_BATCH.value, _OUT_DIR.value)
    else:
        jobs = batch.jobs_from_globs(_SOURCES.value, _DRIVINGS.value, _OUT_DIR.value)
    todo = batch.pending(jobs, jax.process_index(), jax.process_count())
    devices = jax.local_devices()[: _DEVICES.value or None]
    print(
        f"{len(jobs)} jobs: {len(jobs) - len(batch.pending(jobs))} already written, "
        f"{len(todo)} to do in this process on {len(devices) if todo else 0} device(s)"
    )
    if not todo:
        return

    def make_worker(_device):
        model = _open_model()
        return lambda job: _render(model, job.source, job.driving, job.out)[0]

    with tqdm(total=len(todo), unit="video", dynamic_ncols=True) as bar:

        def progress(job, frames):
            bar.set_postfix_str(f"{fs.basename(job.out)} ({frames} frames)", refresh=False)
            bar.update(1)

        summary = batch.run(todo, make_worker, devices, progress)
    failed = summary["failed"]
    print(
        f"wrote {summary['written']} videos ({summary['frames']} frames); "
        f"failed {sum(failed.values())}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in failed.items())})" if failed else "")
        + f"; per device {summary['per_device']}"
    )
    for line in summary["examples"][:5]:
        print(f"  {line}")
