"""jaxtalk animate: animate a portrait, driven by a video.

  jaxtalk animate --mode=video --source=portrait.png --driving=talk.mp4 \
      --weights=weights/anitalker_stage1.safetensors --out=result.mp4

--weights is a file from `jaxtalk import --release=anitalker_stage1|lia` (or `jaxtalk
export`); --workdir=RUN uses the EMA generator of an anitalker_motion training run instead.
The source is centre-cropped to a square; so is the driving video (pass --driving_crop=
x,y,w,h to choose the face box). The output keeps the driving frame rate and carries the
driving video's audio. --motion picks the released motion modes: relative (default) or
absolute.
"""

import sys

from absl import flags

_MODE = flags.DEFINE_enum("mode", "video", ["video"], "what drives the animation")
_SOURCE = flags.DEFINE_string("source", None, "the portrait image to animate")
_DRIVING = flags.DEFINE_string("driving", None, "--mode=video: the driving video")
_DRIVING_CROP = flags.DEFINE_list("driving_crop", None, "x,y,w,h face box in driving pixels")
_WEIGHTS = flags.DEFINE_string("weights", None, "imported or exported weights (.safetensors)")
_WORKDIR = flags.DEFINE_string("workdir", None, "or: a training run directory")
_STEP = flags.DEFINE_integer("step", None, "--workdir: checkpoint step (default latest)")
_MOTION = flags.DEFINE_enum("motion", "relative", ["relative", "absolute"], "motion mode")
_MAX_SECONDS = flags.DEFINE_float("max_seconds", None, "animate only the first seconds")
_CHUNK = flags.DEFINE_integer("chunk", 8, "frames rendered per device call")
_OUT = flags.DEFINE_string("out", None, "output .mp4")


def _fail(message: str) -> None:
    print(f"jaxtalk animate: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv):
    from jaxtalk.inference import video_driven, video_io

    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}")
    missing = [f"--{n}" for n, v in (("source", _SOURCE.value), ("driving", _DRIVING.value),
                                     ("out", _OUT.value)) if not v]
    if missing:
        _fail(f"{', '.join(missing)} required")
    if bool(_WEIGHTS.value) == bool(_WORKDIR.value):
        _fail("give exactly one of --weights or --workdir")
    try:
        animator = (video_driven.MotionAnimator.from_weights(_WEIGHTS.value, chunk=_CHUNK.value)
                    if _WEIGHTS.value else
                    video_driven.MotionAnimator.from_run(_WORKDIR.value, _STEP.value, chunk=_CHUNK.value))
        source = video_driven.load_image(_SOURCE.value, animator.size)
        info = video_io.probe(_DRIVING.value)
        crop = ([int(v) for v in _DRIVING_CROP.value] if _DRIVING_CROP.value else
                video_driven.centre_square(info.width, info.height))
        driving, fps = video_io.read_video(_DRIVING.value, crop=crop, size=animator.size,
                                           duration=_MAX_SECONDS.value)
        if len(driving) == 0:
            _fail(f"{_DRIVING.value}: no frames")
        frames = animator.animate(source, driving, _MOTION.value)
        video_io.write_video(_OUT.value, frames, fps,
                             audio=_DRIVING.value if info.audio_sample_rate else None)
    except (OSError, ValueError) as e:  # AnimationError, MediaError, weights errors
        _fail(str(e))
    print(f"wrote {len(frames)} frames ({len(frames) / fps:.1f} s) to {_OUT.value}")
