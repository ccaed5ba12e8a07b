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
"""

import numpy as np
from absl import flags

from jaxtalk import fs
from jaxtalk.errors import InputError

_MODE = flags.DEFINE_enum("mode", "video", ["video", "audio"], "what drives the animation")
_SOURCE = flags.DEFINE_string("source", None, "the portrait image to animate")
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


def _load_source(path: str, size: int):
    """--source (read from `path`, a local copy) as (size, size, 3) uint8: the face crop, or
    with --nocrop_face the centre square."""
    from jaxtalk.inference import animator
    from jaxtalk.media import face_detect

    if not _CROP_FACE.value:
        return animator.load_image(path, size)
    (x, y, side, _), source = face_detect.crop_face(
        animator.read_image(path), size, what=_SOURCE.value
    )
    print(f"{_SOURCE.value}: face crop x={x} y={y} side={side}")
    return source


def _portrait_source(path: str, size: int) -> dict | None:
    """With --landmark_model or --paste_back: the source cropped as LivePortrait's release
    crops it (jaxtalk/media/portrait_crop.py; 512 pixels, area-resized to `size`) with
    what the options need: the image, the crop, the landmarks (None without a model)."""
    from PIL import Image

    from jaxtalk.inference import animator
    from jaxtalk.media import portrait_crop

    if not (_LANDMARK_MODEL.value or _PASTE_BACK.value):
        return None
    if not _CROP_FACE.value:
        raise InputError("--landmark_model and --paste_back crop the source: drop --nocrop_face")
    landmarks = None
    if _LANDMARK_MODEL.value:
        from jaxtalk.convert import onnx_graph

        with fs.local_file(_LANDMARK_MODEL.value) as local:
            landmarks = portrait_crop.LandmarkModel(onnx_graph.load(local))
    image = animator.read_image(path)
    crop, points = portrait_crop.source_crop(image, landmarks, what=_SOURCE.value)
    pixels = np.clip(np.asarray(crop.image).round(), 0, 255).astype(np.uint8)
    source = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BOX))
    return dict(source=source, image=image, crop=crop, points=points, landmarks=landmarks)


def _ratio_flag(flag, name: str, portrait: dict | None, driving, ratio, tracked: list) -> dict:
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
            tracked.append(np.stack(portrait["landmarks"].track(driving, what=_DRIVING.value)))
        target = np.asarray(ratio(tracked[0]))[:, 0]  # the release takes the left eye's
    source = np.asarray(ratio(portrait["points"]))
    return {f"{name}_ratio": target, f"source_{name}_ratio": source}


def _portrait_options(portrait: dict | None, driving) -> dict:
    """LivePortrait's flags as animator options, each only when given."""
    from jaxtalk.media import portrait_crop

    options = {}
    if flags.FLAGS["stitching"].present:
        options["stitching"] = _STITCHING.value
    if _DRIVING_MULTIPLIER.value is not None:
        options["driving_multiplier"] = _DRIVING_MULTIPLIER.value
    if _ANIMATION_REGION.value:
        options["animation_region"] = _ANIMATION_REGION.value
    tracked = []
    options.update(
        _ratio_flag(_EYE_RATIO, "eye", portrait, driving, portrait_crop.eye_open_ratio, tracked)
    )
    options.update(
        _ratio_flag(_LIP_RATIO, "lip", portrait, driving, portrait_crop.lip_open_ratio, tracked)
    )
    if _PASTE_BACK.value:
        crop = portrait["crop"]
        options["paste_back"] = dict(
            image=portrait["image"], crop_to_image=crop.c2o, crop_size=crop.image.shape[0]
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


def main(argv):
    from jaxtalk import inference
    from jaxtalk.inference import animator
    from jaxtalk.media import video

    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    if _MODE.value == "audio":
        return _animate_audio()
    missing = [
        f"--{n}"
        for n, v in (("source", _SOURCE.value), ("driving", _DRIVING.value), ("out", _OUT.value))
        if not v
    ]
    if missing:
        raise InputError(f"{', '.join(missing)} required")
    if bool(_WEIGHTS.value) == bool(_WORKDIR.value):
        raise InputError("give exactly one of --weights or --workdir")
    model = inference.open_animator(
        _WEIGHTS.value or _WORKDIR.value,
        run=bool(_WORKDIR.value),
        step=_STEP.value,
        driver=inference.Driver.VIDEO,
        chunk=_CHUNK.value,
    )
    # Media files may be gs:// URLs: ffmpeg reads and writes local copies.
    with (
        fs.local_file(_SOURCE.value) as source_path,
        fs.local_file(_DRIVING.value) as driving_path,
        fs.local_output(_OUT.value) as out_path,
    ):
        portrait = _portrait_source(source_path, model.size)
        source = portrait["source"] if portrait else _load_source(source_path, model.size)
        info = video.probe_video(driving_path)
        crop = _driving_crop() or animator.centre_square(info.width, info.height)
        driving, fps = video.read_video(
            driving_path, crop=crop, size=model.size, duration=_MAX_SECONDS.value
        )
        # --motion goes only where given: families without motion modes take no option.
        options = {"mode": _MOTION.value} if flags.FLAGS["motion"].present else {}
        options.update(_portrait_options(portrait, driving))
        frames = model.animate(source, driving, **options)
        fps = model.fps or fps
        video.write_video(
            out_path, frames, fps, audio=driving_path if info.audio_sample_rate else None
        )
    print(f"wrote {len(frames)} frames ({len(frames) / fps:.1f} s) to {_OUT.value}")


def _animate_audio():
    from jaxtalk import inference
    from jaxtalk.inference.animator import SAMPLE_RATE
    from jaxtalk.media import audio, video

    missing = [
        f"--{n}"
        for n, v in (
            ("source", _SOURCE.value),
            ("audio", _AUDIO.value),
            ("stage2", _STAGE2.value),
            ("out", _OUT.value),
        )
        if not v
    ]
    if missing:
        raise InputError(f"{', '.join(missing)} required with --mode=audio")
    model = inference.open_animator(
        _STAGE2.value,
        driver=inference.Driver.AUDIO,
        stage1=_STAGE1.value,
        hubert=_HUBERT.value,
        chunk=_CHUNK.value,
    )
    with fs.local_file(_SOURCE.value) as source_path, fs.local_file(_AUDIO.value) as audio_path:
        source = _load_source(source_path, model.size)
        wav = audio.read_audio(audio_path, SAMPLE_RATE, duration=_MAX_SECONDS.value)
    options = dict(seed=_SEED.value, ddim_steps=_DDIM_STEPS.value, what=_AUDIO.value)
    if _CONTROL.value:  # the release's control values; the animator takes what its model does
        options.update(
            pose=[_POSE_YAW.value, _POSE_PITCH.value, _POSE_ROLL.value],
            pose_file=_POSE_FILE.value,
            face_location=_FACE_LOCATION.value,
            face_scale=_FACE_SCALE.value,
        )
    frames = model.animate(source, wav, **options)
    with fs.local_output(_OUT.value) as out_path:
        video.write_video(out_path, frames, model.fps, audio=wav, audio_sample_rate=SAMPLE_RATE)
    print(f"wrote {len(frames)} frames ({len(frames) / model.fps:.1f} s) to {_OUT.value}")
