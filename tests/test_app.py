"""`jaxtalk app` without a browser: the option table over the animator contract, a form's
values to `start` options, and a submission through `Studio` to an mp4 (video- and
speech-driven, on tiny random weights). The page itself: tests/test_app_browser.py."""

import numpy as np
import pytest
from PIL import Image

from data_pipelines.synthetic import speech
from jaxtalk import inference
from jaxtalk.app import options as options_lib
from jaxtalk.app import session
from jaxtalk.errors import InputError
from jaxtalk.inference.animator import AnimationError, Animator, Driver
from jaxtalk.inference.audio_driven import AudioAnimator
from jaxtalk.inference.liveportrait import LivePortraitAnimator
from jaxtalk.inference.video_driven import MotionAnimator
from jaxtalk.media.audio import write_wav
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from tests import app_helpers
from tests.inference import test_liveportrait_animator as liveportrait
from tests.test_cli import jaxtalk
from tests.test_packaging import _setup_kwargs


def _names(rows):
    return [row.name for row in rows]


# ----------------------------------------------------------------------------- the table
def test_every_registered_animator_has_its_options_in_the_table():
    found = inference.animators()
    assert {MotionAnimator, AudioAnimator, LivePortraitAnimator} <= set(found.values())
    for kind, cls in found.items():
        assert options_lib.unlisted(cls) == [], f"{kind}: add these start keywords to OPTIONS"
    assert _names(options_lib.rows_for(MotionAnimator)) == ["mode"]
    assert _names(options_lib.rows_for(AudioAnimator)) == [
        "seed",
        "ddim_steps",
        "pose",
        "face_location",
        "face_scale",
    ]
    assert _names(options_lib.rows_for(LivePortraitAnimator)) == [
        "mode",
        "stitching",
        "driving_multiplier",
        "animation_region",
    ]


class _Later(Animator):
    """A family landing later, with LivePortrait's options: only its `start` is read."""

    driver, size = Driver.VIDEO, 4

    def prepare(self, source):
        return source

    def start(
        self,
        state,
        driving,
        mode="relative",
        stitching=None,
        eye_ratio=None,
        source_eye_ratio=None,
        driving_multiplier=1.0,
        animation_region="all",
        paste_back=None,
    ):
        return state, driving

    def drive(self, state, steps):
        return steps


def test_a_family_landing_later_gets_its_rows_from_the_table():
    assert _names(options_lib.rows_for(_Later)) == [
        "mode",
        "stitching",
        "driving_multiplier",
        "animation_region",
    ]
    assert options_lib.unlisted(_Later) == []

    class Unknown(_Later):
        def start(self, state, driving, sharpness=1.0, **rest):
            return state, driving

    assert options_lib.unlisted(Unknown) == ["sharpness"]
    assert options_lib.rows_for(Unknown) == []


def test_widget_values_become_start_options():
    rows = {row.name: row for row in options_lib.OPTIONS}
    pick = [rows[n] for n in ("mode", "seed", "pose", "face_scale", "stitching", "face_location")]
    values = ["absolute", 3.0, False, 0.5, 0.5, 0.5, None, "auto", None]
    assert options_lib.parse(pick, values) == {"mode": "absolute", "seed": 3}
    values = ["relative", 7, True, 0.25, -0.5, 1.0, 1.2, "off", 0.3]
    assert options_lib.parse(pick, values) == {
        "mode": "relative",
        "seed": 7,
        "pose": [0.25, -0.5, 1.0],
        "face_scale": 1.2,
        "stitching": False,
        "face_location": 0.3,
    }
    # Only the chosen model's rows are read: a bad value in another model's row is ignored.
    assert options_lib.parse(pick, ["sideways", 1, *[False] * 4, None, "on", None], {"seed"}) == {
        "seed": 1
    }
    for bad, message in (
        (["sideways", 0, False, 0, 0, 0, None, "auto", None], "Motion mode: 'sideways'"),
        (["relative", 2.5, False, 0, 0, 0, None, "auto", None], "Seed: 2.5 is not a whole"),
        (["relative", None, False, 0, 0, 0, None, "auto", None], "Seed: a value is required"),
        (["relative", 0, True, 1.5, 0, 0, None, "auto", None], r"yaw: 1.5 is outside \[-1, 1\]"),
        (["relative", 0, False, 0, 0, 0, "big", "auto", None], "Face scale: 'big' is not a number"),
        (["relative", 0, False, 0, 0, 0, None, "maybe", None], "Stitching: 'maybe'"),
        (["relative", 0, False, 0, 0, 0, None, "auto", 1.5], r"Face location: 1.5 is outside"),
        (["relative", 0], "expected 9 option values, got 2"),
    ):
        with pytest.raises(AnimationError, match=message):
            options_lib.parse(pick, bad)


# ----------------------------------------------------------------------------- submissions
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny random LIA and AniTalker stage-1/2 weights, a noise portrait (no face in it), an
    11-frame driving video with sound and a second of speech."""
    d = tmp_path_factory.mktemp("app")
    for kind in ("lia", "anitalker_stage1", "anitalker_stage2"):
        app_helpers.save_tiny(kind, str(d / f"{kind}.safetensors"))
    liveportrait.save(d / "liveportrait.safetensors", liveportrait.tiny_variables())
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(d / "face.png")
    audio = rng.uniform(-0.3, 0.3, 11 * 640).astype(np.float32)
    write_video(d / "talk.mp4", rng.integers(0, 255, (11, 36, 44, 3), np.uint8), 25.0, audio=audio)
    wav, _, _ = speech.synthesize(1.2, 140.0, rng, rate=22050)
    write_wav(d / "speech.wav", wav, 22050)
    return d


@pytest.fixture(scope="module")
def studio(files, tmp_path_factory):
    models = session.open_models(
        [str(files / "lia.safetensors"), str(files / "liveportrait.safetensors")],
        stage2=str(files / "anitalker_stage2.safetensors"),
        stage1=str(files / "anitalker_stage1.safetensors"),
        chunk=4,
    )
    return session.Studio(models, str(tmp_path_factory.mktemp("out")))


def _values(studio, **given):
    """The form's values: each row's initial ones, with `given` rows' replaced."""
    out = []
    for row in studio.rows:
        out += given.get(row.name, row.initial())
    return out


def _submit(studio, label, source, driving, values):
    """One submission without the face crop: (mp4, what was written, progress calls)."""
    told = []
    out, written = studio.animate(
        label,
        str(source),
        str(driving),
        values,
        crop_face=False,
        progress=lambda done, total: told.append((done, total)),
    )
    return out, written, told


def test_the_page_offers_every_model_with_its_own_rows(studio):
    video, portrait, audio = studio.models
    assert (video, portrait, audio) == (
        "lia.safetensors (video-driven)",
        "liveportrait.safetensors (video-driven)",
        "anitalker_stage2.safetensors (audio-driven)",
    )
    assert _names(studio.rows) == [
        "mode",
        "seed",
        "ddim_steps",
        "pose",
        "face_location",
        "face_scale",
        "stitching",
        "driving_multiplier",
        "animation_region",
    ]
    assert studio.visible(video) == [True] + [False] * 8
    assert studio.visible(portrait) == [True] + [False] * 5 + [True] * 3
    assert studio.visible(audio) == [False] + [True] * 5 + [False] * 3
    with pytest.raises(InputError, match="unknown model 'x'"):
        studio.model("x")


def _spied(studio, label, files, values):
    """`_submit` of face.png and talk.mp4 to `label`, and the options its animator got."""
    model = studio.model(label).animator
    seen = []
    animate = model.animate
    model.animate = lambda *a, **kw: seen.append(kw) or animate(*a, **kw)
    try:
        out, written, told = _submit(studio, label, files / "face.png", files / "talk.mp4", values)
    finally:
        del model.animate
    options = [{k: v for k, v in kw.items() if k != "progress"} for kw in seen]
    return options, out, written, told


def test_a_video_submission_writes_the_mp4_with_progress_and_the_options(studio, files):
    values = _values(studio, mode=["absolute"], seed=["not read: another model's row"])
    options, out, written, told = _spied(studio, "lia.safetensors (video-driven)", files, values)
    assert options == [{"mode": "absolute"}]
    assert told == [(4, 11), (8, 11), (11, 11)]  # chunk=4
    frames, fps = read_video(out)
    info = probe(out)
    assert (written.frames, written.fps) == (11, 25.0) and frames.shape == (11, 32, 32, 3)
    assert fps == 25.0 and info.has_audio and out.startswith(studio.out_dir)
    assert out.endswith("face__talk.mp4")


def test_a_liveportrait_submission_takes_its_own_rows(studio, files):
    values = _values(studio, stitching=["off"], driving_multiplier=[1.5], animation_region=["exp"])
    label = "liveportrait.safetensors (video-driven)"
    options, out, written, _ = _spied(studio, label, files, values)
    assert options == [
        {
            "mode": "relative",
            "stitching": False,
            "driving_multiplier": 1.5,
            "animation_region": "exp",
        }
    ]
    frames, _ = read_video(out)
    assert written.frames == 11 and frames.shape == (11, liveportrait.OUT, liveportrait.OUT, 3)


def test_a_speech_submission_is_25_fps_with_the_speech(studio, files):
    label = "anitalker_stage2.safetensors (audio-driven)"
    values = _values(studio, ddim_steps=[2], seed=[5], pose=[True, 0.5, 0.0, -0.25])
    out, written, told = _submit(studio, label, files / "face.png", files / "speech.wav", values)
    frames, _ = read_video(out)
    assert written.fps == 25 and len(frames) == written.frames and 28 <= written.frames <= 30
    assert told[-1] == (written.frames, written.frames) and probe(out).has_audio


def test_bad_submissions_are_one_line_errors_naming_the_upload(studio, files):
    label = "lia.safetensors (video-driven)"
    face, talk = str(files / "face.png"), str(files / "talk.mp4")
    values = _values(studio)
    for args, kw, message in (
        ((None, talk), {}, "upload a portrait image first"),
        ((face, None), {}, "needs a driving video: upload one"),
        ((face, talk), {"max_seconds": -1.0}, "max seconds must be positive"),
    ):
        with pytest.raises(InputError, match=message):
            studio.animate(label, *args, values, **kw)
    with pytest.raises(InputError) as caught:  # noise has no face: the crop fails
        studio.animate(label, face, talk, values, crop_face=True)
    message = str(caught.value)
    assert message.startswith("face.png: no face found") and str(files) not in message
    assert "untick 'Crop the face'" in message and "--nocrop_face" not in message
    with pytest.raises(InputError, match="speech.wav: has no video stream"):
        studio.animate(label, face, str(files / "speech.wav"), values, crop_face=False)


def test_the_command_needs_a_model_and_gradio_is_an_extra(monkeypatch):
    out = jaxtalk("app")
    assert out.returncode == 2 and "give a model: --weights, --workdir or --stage2" in out.stderr
    assert "Traceback" not in out.stderr
    out = jaxtalk("app", "--help")
    assert out.returncode == 0 and "--weights" in out.stdout and "--stage2" in out.stdout
    kw = _setup_kwargs(monkeypatch)
    assert not any(r.startswith("gradio") for r in kw["install_requires"])
    for extra in ("app", "dev"):
        assert any(r.startswith("gradio") for r in kw["extras_require"][extra])
    assert any(r.startswith("selenium") for r in kw["extras_require"]["dev"])
