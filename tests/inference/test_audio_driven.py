"""jaxtalk animate --mode=audio end to end on tiny random stage-1/stage-2 weights, and its
input errors."""

import sys

import numpy as np
import pytest

from data_pipelines.synthetic import speech
from jaxtalk.inference import audio_driven
from jaxtalk.inference.video_driven import AnimationError
from jaxtalk.media.audio import write_wav
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video
from tests import cli_processes
from tests.tasks import helpers
from tests.train.helpers import REPO, cli_env


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("animate_audio")
    wav, _, _ = speech.synthesize(2.0, 140.0, np.random.default_rng(0), rate=22050)
    write_wav(d / "speech.wav", wav, 22050)  # not 16 kHz: resampled on read
    write_wav(d / "silent.wav", np.zeros(22050, np.float32), 22050)
    (d / "broken.mp3").write_bytes(b"not audio at all")
    from PIL import Image

    Image.fromarray((np.random.RandomState(0).rand(80, 100, 3) * 255).astype(np.uint8)).save(
        d / "face.png"
    )
    return {
        "dir": d,
        "stage1": helpers.save_stage1(str(d / "s1.safetensors")),
        "stage2": helpers.save_stage2(str(d / "s2.safetensors")),
    }


def animate(files, *extra):
    cmd = [
        sys.executable,
        "-m",
        "jaxtalk.cli",
        "animate",
        "--mode=audio",
        f"--source={files['dir'] / 'face.png'}",
        f"--stage2={files['stage2']}",
        f"--stage1={files['stage1']}",
        "--ddim_steps=3",
        "--nocrop_face",
        *extra,
    ]
    return cli_processes.run(cmd, cwd=REPO, env=cli_env(), timeout=600)


def test_two_seconds_of_speech_to_mp4_with_audio(files):
    out = files["dir"] / "out.mp4"
    proc = animate(
        files,
        f"--audio={files['dir'] / 'speech.wav'}",
        f"--out={out}",
        "--control",
        "--pose_yaw=0.3",
        "--chunk=16",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = probe(out)
    assert info.has_audio and (info.width, info.height) == (helpers.SIZE, helpers.SIZE)
    frames, fps = read_video(str(out))
    assert fps == pytest.approx(25.0) and abs(len(frames) - 50) <= 1


@pytest.mark.parametrize(
    "name, message",
    [("silent.wav", "silent"), ("broken.mp3", "broken.mp3"), ("missing.wav", "no such file")],
)
def test_unusable_audio_is_a_clear_error(files, name, message):
    proc = animate(files, f"--audio={files['dir'] / name}", f"--out={files['dir'] / 'x.mp4'}")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_controls_the_model_does_not_take_are_rejected(files):
    animator = audio_driven.AudioAnimator.from_paths(files["stage2"], files["stage1"])
    assert animator.model.attributes == ("pose",)
    with pytest.raises(AnimationError, match="cannot control location"):
        audio_driven.parse_controls(animator.model, pose=[0, 0, 0], location=0.5)


def test_pose_sequence_controls_the_generated_codes(files, tmp_path):
    animator = audio_driven.AudioAnimator.from_paths(files["stage2"], files["stage1"])
    wav, _, _ = speech.synthesize(0.8, 140.0, np.random.default_rng(1))
    source = np.full((helpers.SIZE, helpers.SIZE, 3), 128, np.uint8)
    path = tmp_path / "pose.txt"
    np.savetxt(path, np.tile([0.5, -0.2, 0.1], (7, 1)))  # shorter than the audio: held
    seq = audio_driven.load_pose_file(str(path))
    runs = [
        animator.motion_codes(source, wav, seed=0, ddim_steps=2, controls=c)[0]
        for c in ({}, {"pose": seq}, {"pose": seq})
    ]
    assert runs[0].shape == (
        19,
        20,
    )  # 0.8 s -> 79 MFCC frames -> 19 whole video frames, as released
    assert not np.allclose(runs[0], runs[1])  # the control reaches the codes
    np.testing.assert_array_equal(np.asarray(runs[1]), np.asarray(runs[2]))  # seeded
    with pytest.raises(AnimationError, match=r"\(T, 3\)"):
        np.save(tmp_path / "bad.npy", np.zeros((4, 2)))
        audio_driven.load_pose_file(str(tmp_path / "bad.npy"))
