"""AniPortrait animation with tiny random weights in the release's layout, driven by synthetic
heads' exact landmark files (data_pipelines/synthetic/mesh.py): video-driven from them and
speech-driven from tiny Audio2Mesh / Audio2Pose files through `jaxtalk animate`, the
motion-transfer geometry, clear errors, and sampling memory that does not grow with the
video's length."""

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import aniportrait_audio, weights
from jaxtalk.diffusion.context import ContextWindows
from jaxtalk.diffusion.samplers import DDIMConfig
from jaxtalk.inference import aniportrait, open_animator
from jaxtalk.inference.animator import AnimationError, Driver
from jaxtalk.media import face_mesh
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from jaxtalk.models.aniportrait.lmk2video import Lmk2Video, join_motion
from jaxtalk.models.aniportrait.pose_guider import PoseGuiderConfig
from jaxtalk.models.latent_diffusion.clip_vision import TINY_CLIP
from jaxtalk.models.latent_diffusion.unet import TINY
from jaxtalk.models.latent_diffusion.vae import TINY_VAE
from tests import cli_processes
from tests.convert.test_aniportrait_audio import release_file
from tests.random_weights import random_variables
from tests.train.helpers import REPO, cli_env

SIZE = 32  # the tiny recipe's frames


UNET = dataclasses.replace(TINY, cross_attention_dim=TINY_CLIP.projection_dim)
GUIDER = PoseGuiderConfig(
    block_out_channels=(32, 64), stem=(8, 16), heads=2, head_dim=8, norm_groups=8
)
MOTION = {"heads": 2, "max_len": 16, "mid_block": True, "block_channels": [32, 64]}


def save_tiny_release(folder) -> str:
    """Random tiny weights in the `aniportrait` release layout (all output layers random),
    with sd_vae and image-encoder files beside them, as `jaxtalk import` leaves them."""
    pipe = Lmk2Video(
        UNET, GUIDER, motion_module={"heads": 2, "max_len": 16}, vae_config=TINY_VAE,
        clip_config=TINY_CLIP,
    )  # fmt: skip
    image = jnp.zeros((1, SIZE, SIZE, 3))
    v = random_variables(
        pipe.init, jax.random.PRNGKey(0), image, image, jnp.zeros((1, 2, SIZE, SIZE, 3))
    )
    params = {
        "reference": v["reference"]["params"],
        "denoiser": join_motion(v["denoiser"]["params"], v["motion"]),
        "pose_guider": v["pose_guider"]["params"],
    }
    config = {
        "kind": "aniportrait",
        "reference": dataclasses.asdict(dataclasses.replace(UNET, conv_out=False)),
        "denoiser": dataclasses.asdict(UNET),
        "pose_guider": dataclasses.asdict(GUIDER),
        "motion_module": MOTION,
        "image_size": SIZE,
    }
    stats = {"pose_guider": v["pose_guider"]["batch_stats"]}
    path = weights.save(
        {"params": params, "batch_stats": stats, "model_config": config},
        folder / "aniportrait.safetensors",
        "aniportrait",
    )
    for group, release, cfg in (
        ("vae", "sd_vae", TINY_VAE),
        ("image_encoder", "sd_image_variations_image_encoder", TINY_CLIP),
    ):
        stored = {"params": v[group], "model_config": dataclasses.asdict(cfg)}
        weights.save(stored, folder / f"{release}.safetensors", release)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny release-layout weights, a synthetic clip with its landmark file, a source image
    (another identity's frame) with its own, and tiny Audio2Mesh / Audio2Pose files."""
    from PIL import Image

    from data_pipelines.synthetic import face, mesh

    d = tmp_path_factory.mktemp("aniportrait_animate")
    release = save_tiny_release(d)
    data = {}
    for name, seed, frames in (("source", 1, 1), ("driving", 2, 20)):
        ident = face.random_identity(np.random.default_rng(seed), 96, 96)
        t = np.arange(frames) / 25.0
        pose = dict(yaw=8 * np.sin(3 * t), pitch=3 * np.cos(2 * t), roll=np.zeros(frames))
        attrs = mesh.video_attributes(
            ident, **pose, cx=np.full(frames, 48.0), cy=np.full(frames, 50.0),
            head_height=np.full(frames, 40.0), mouth=0.5 + 0.5 * np.sin(9 * t), blink=0 * t,
        )  # fmt: skip
        np.savez(d / f"{name}.npz", fps=np.float32(25), **attrs)
        data[name] = attrs
    Image.fromarray(np.full((96, 96, 3), 128, np.uint8)).save(d / "source.png")
    clip = (np.random.default_rng(0).uniform(0, 255, (20, 96, 96, 3))).astype(np.uint8)
    wav = np.sin(np.arange(12800) / 16000 * 2 * np.pi * 220).astype(np.float32) * 0.3
    write_video(str(d / "driving.mp4"), clip, 25.0, audio=wav, audio_sample_rate=16000)
    speech = {}
    for kind in ("mesh", "pose"):
        release_file(d / f"audio2{kind}.pt", kind, seed=3)
        stored = aniportrait_audio.import_checkpoint(d / f"audio2{kind}.pt")
        if kind == "mesh":  # its zero-initialised output would hide the offsets
            out = stored["params"]["out_fn"]
            out["kernel"] = np.random.default_rng(1).normal(0, 0.05, out["kernel"].shape)
        speech[kind] = weights.save(
            stored, d / f"audio2{kind}.safetensors", f"aniportrait_audio2{kind}"
        )
    return {"dir": d, "weights": release, "video": str(d / "driving.mp4"),
            "landmarks": str(d / "driving.npz"), **speech}  # fmt: skip


def animate(runs, *extra):
    cmd = [sys.executable, "-m", "jaxtalk.cli", "animate", f"--weights={runs['weights']}"]
    cmd += [f"--source={runs['dir'] / 'source.png'}", "--nocrop_face", "--ddim_steps=2"]
    return cli_processes.run(cmd + list(extra), cwd=REPO, env=cli_env(), timeout=600)


def test_video_driven_from_landmark_files_keeps_rate_and_audio(runs):
    out = runs["dir"] / "video.mp4"
    proc = animate(
        runs,
        f"--driving={runs['video']}",
        f"--driving_landmarks={runs['landmarks']}",
        f"--source_landmarks={runs['dir'] / 'source.npz'}",
        "--max_seconds=0.8",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = probe(str(out))
    assert info.has_audio and abs(info.fps - 25) < 0.01
    frames, _ = read_video(str(out))
    assert frames.shape == (20, SIZE, SIZE, 3)
    assert frames.std() > 1  # not a constant image


def test_speech_driven_is_30_fps_with_the_speech_muxed(runs):
    from data_pipelines.synthetic import speech
    from jaxtalk.media.audio import write_wav

    wav, _, _ = speech.synthesize(1.0, 140.0, np.random.default_rng(0), rate=16000)
    write_wav(runs["dir"] / "speech.wav", wav, 16000)
    out = runs["dir"] / "speech.mp4"
    proc = animate(
        runs,
        "--mode=audio",
        f"--audio={runs['dir'] / 'speech.wav'}",
        f"--audio2mesh={runs['mesh']}",
        f"--audio2pose={runs['pose']}",
        f"--source_landmarks={runs['dir'] / 'source.npz'}",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = probe(str(out))
    assert info.has_audio and abs(info.fps - 30) < 0.01
    frames, _ = read_video(str(out))
    assert len(frames) == int(np.ceil(len(wav) / 16000 * 30))


def test_animator_api_from_weights_window_by_window(runs):
    """More frames than one 16-frame window: windows overlap, frames come back in order."""
    model = open_animator(runs["weights"], driver=Driver.VIDEO, chunk=8)
    assert model.pipe.has_motion and model.size == SIZE and model.sampling.pose_batch_stats
    marks = aniportrait.read_landmarks(runs["landmarks"], (0, 0, 96), rows=np.arange(20))
    source = aniportrait.read_landmarks(str(runs["dir"] / "source.npz"), (0, 0, 96))
    out = model.animate(
        np.zeros((SIZE, SIZE, 3), np.uint8),
        np.zeros((20, SIZE, SIZE, 3), np.uint8),
        source_landmarks=source,
        driving_landmarks=marks,
        ddim_steps=1,
    )
    assert out.shape == (20, SIZE, SIZE, 3) and out.dtype == np.uint8


def _one_line(proc, *words):
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in last, last


def test_missing_and_malformed_inputs_are_one_line_errors(runs, tmp_path):
    common = [f"--driving={runs['video']}", f"--out={tmp_path / 'x.mp4'}", "--max_seconds=0.2"]
    missing = tmp_path / "none.npz"
    proc = animate(runs, *common, f"--source_landmarks={missing}")
    _one_line(proc, str(missing), "no such landmark file")
    narrow = tmp_path / "narrow.npz"
    np.savez(narrow, fps=np.float32(25), face_mesh_xy=np.zeros((3, 68 * 2), np.float32))
    proc = animate(runs, *common, f"--source_landmarks={narrow}")
    _one_line(proc, str(narrow), "face_mesh_xy", "956")
    proc = animate(
        runs,
        "--mode=audio",
        f"--audio={runs['video']}",
        f"--audio2mesh={tmp_path / 'absent.safetensors'}",
        f"--audio2pose={runs['pose']}",
        f"--out={tmp_path / 'y.mp4'}",
    )
    _one_line(proc, "absent.safetensors", "no such")
    with pytest.raises(AnimationError, match="needs the source's landmarks"):
        model = open_animator(runs["weights"], driver=Driver.VIDEO)
        model.animate(np.zeros((SIZE, SIZE, 3), np.uint8), np.zeros((2, SIZE, SIZE, 3), np.uint8))


# ---------------------------------------------------------------------------- geometry
def test_similarity_fallback_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.2, 0.8, (3, face_mesh.NUM_POINTS, 2))
    angle, scale, shift = 0.3, 0.7, np.array([0.1, -0.05])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    source = {"face_mesh_xy": (points[:1] @ rot.T + shift).reshape(1, -1)}
    driving = {"face_mesh_xy": points.reshape(3, -1)}
    got = aniportrait.transfer_motion(source, driving)
    np.testing.assert_allclose(got, points @ rot.T + shift, atol=1e-9)


def test_3d_transfer_moves_the_source_mesh_by_the_driving_offsets():
    rng = np.random.default_rng(1)
    n = face_mesh.NUM_VERTICES
    drv = rng.normal(0, 1, (4, n, 3))
    drv[:, 14] = drv[:, 13] + np.array([0.0, 1.0, 0.0]) * [[0.0], [0.5], [0.2], [0.4]]
    for upper, lower in ((159, 145), (386, 374)):  # open eyes everywhere
        drv[:, lower] = drv[:, upper] + [0.0, 1.0, 0.0]
    drv[3, 145] = drv[3, 159]  # a blink with the mouth more closed than frame 0's
    drv[3, 374] = drv[3, 386]
    drv[3, 14] = drv[3, 13]
    drv[0, 14] = drv[0, 13] + [0.0, 0.01, 0.0]  # frame 0: the most closed open-eyed mouth
    src = rng.normal(0, 1, (1, n, 3))
    pose = np.tile([10.0, -5.0, 3.0, 0.5, 0.5, 0.02], (4, 1))
    src_pose = np.array([[0.0, 0.0, 0.0, 0.4, 0.6, 0.03]])
    got = aniportrait.transfer_motion(
        {
            "face_mesh": src.reshape(1, -1),
            "head_pose": src_pose,
            "face_mesh_xy": np.zeros((1, 956)),
        },
        {"face_mesh": drv.reshape(4, -1), "head_pose": pose, "face_mesh_xy": np.zeros((4, 956))},
    )
    want_pose = np.tile([10.0, -5.0, 3.0, 0.4, 0.6, 0.03], (4, 1))  # relative centre, scale
    want = face_mesh.project(drv - drv[0] + src, want_pose)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_release_speech_pose_zero_is_the_source_pose():
    ref = np.array([5.0, -10.0, 2.0, 0.5, 0.45, 0.03])
    out = aniportrait.speech_poses(np.zeros((3, 6)), ref)
    np.testing.assert_allclose(out, np.tile(ref, (3, 1)), atol=1e-9)
    assert aniportrait.pose_chunks(320) == [(0, 150), (150, 170)]
    assert aniportrait.pose_chunks(100) == [(0, 100)]


# ---------------------------------------------------------------------------- memory
def test_sampling_memory_does_not_grow_with_the_video_length():
    """Compiled temp memory of the whole sampler at 8 and 32 frames (4-frame windows): the
    growth per frame stays below one frame's PoseGuider features, which computing them for
    the whole video up front would hold."""
    from configs import aniportrait as cfg_lib

    pipe = Lmk2Video.from_config(cfg_lib.get_config("tiny_stage2").model, motion=True)
    ref = jnp.zeros((1, SIZE, SIZE, 3))
    init_drawings = jnp.zeros((1, 4, SIZE, SIZE, 3))
    variables = jax.eval_shape(
        lambda r: pipe.init(r, ref, ref, init_drawings), jax.random.PRNGKey(0)
    )
    ddim = DDIMConfig(num_steps=2)
    windows = ContextWindows(size=4, overlap=1)

    def temp_bytes(frames):
        drawings = jax.ShapeDtypeStruct((1, frames, SIZE, SIZE, 3), jnp.uint8)

        def fn(v, d):
            return pipe.sample_latents(v, ref, ref, d, jax.random.PRNGKey(0), ddim, 3.5, windows)

        compiled = jax.jit(fn).lower(variables, drawings).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    feats = jax.eval_shape(lambda v: pipe.pose_features(v, init_drawings[:, :1], ref)[0], variables)
    per_frame_features = sum(int(np.prod(f.shape)) * 4 for f in feats)
    small, large = temp_bytes(8), temp_bytes(32)
    growth = (large - small) / 24
    print(f"temp bytes: 8 frames {small}, 32 frames {large}; {growth:.0f}/frame; "
          f"features {per_frame_features}/frame")  # fmt: skip
    assert growth < per_frame_features / 2
