"""MegActor animation on tiny pixel-space weights: the release's sampler settings, grey
driving frames, the source mask, weights files and runs, and the command."""

import dataclasses
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import megactor as cfg_lib
from jaxtalk import inference
from jaxtalk.convert import megactor as convert
from jaxtalk.convert import weights
from jaxtalk.inference import megactor as lib
from jaxtalk.inference.animator import AnimationError, Driver
from jaxtalk.models.pixels import to_model_range
from tests import cli_processes
from tests.random_weights import random_variables
from tests.train.helpers import REPO, cli_env

S = cfg_lib.TINY_SIZE


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    config = cfg_lib.tiny_megactor()
    pipe = lib.MegActorPipeline(config, latent="pixels", context="zeros")
    z = np.zeros((1, S, S, 3), np.float32)
    # every kernel random, the FiLM output layer and motion-module outputs too (zero in the
    # model's own init): a wrong input path cannot hide behind a zero layer
    z5 = np.zeros((1, 2, S, S, 3))
    params = random_variables(pipe.init, jax.random.PRNGKey(0), z, z, z5)["megactor"]
    model_config = {**convert.config_to_dict(config), "latent": "pixels", "context": "zeros"}
    path = tmp_path_factory.mktemp("megactor") / "tiny.safetensors"
    model_config["size"] = S
    weights.save({"params": params, "model_config": model_config}, path, release="megactor")
    return str(path)


@pytest.fixture(scope="module")
def animator(tiny_file):
    return inference.open_animator(tiny_file, driver=Driver.VIDEO)


def clip(frames, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (S, S, 3))
    return np.stack([np.roll(base, i, axis=1) for i in range(frames)]).astype(np.uint8)


def test_the_release_sampler_settings_and_grey_driving(animator):
    assert isinstance(animator, lib.MegActorAnimator) and animator.size == S
    assert (animator.ddim.num_steps, animator.guidance) == (25, 4.5)
    assert (animator.windows.size, animator.windows.overlap) == (16, 8)
    source = clip(1, seed=5)[0]
    driving = clip(18)  # longer than one window: two overlapping windows
    # the sampler's settings are the release's; 1 step (2 below) suffices here
    video = animator.animate(source, driving, ddim_steps=1)
    assert video.shape == (18, S, S, 3) and video.dtype == np.uint8
    fast = dict(ddim_steps=2)
    # On 4 frames (one window; the program the tests below sample with too): the animator
    # turns the driving frames grey, so the grey clip drives the same frames, and the
    # driving frames matter.
    driving = clip(4)
    grey = lib.grey(driving)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    video = animator.animate(source, driving, **fast)
    np.testing.assert_array_equal(animator.animate(source, grey, **fast), video)
    other = animator.animate(source, clip(4, seed=9), **fast)
    assert np.abs(other.astype(float) - video).mean() > 0.5


def test_the_source_mask_reaches_the_model(animator, tmp_path):
    source, driving = clip(1, seed=5)[0], clip(4)
    mask = np.zeros((S, S), np.uint8)
    mask[:, : S // 2] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    read = lib.read_mask(str(tmp_path / "mask.png"), S)
    assert read.shape == (S, S, 1) and read[:, : S // 2].all() and not read[:, S // 2 :].any()
    fast = dict(ddim_steps=2)
    whole = animator.animate(source, driving, **fast)
    masked = animator.animate(source, driving, source_mask=str(tmp_path / "mask.png"), **fast)
    assert np.abs(masked.astype(float) - whole).mean() > 0.1
    seeded = animator.animate(source, driving, seed=1, **fast)
    assert np.abs(seeded.astype(float) - whole).mean() > 0.1
    with pytest.raises(AnimationError, match="no such mask"):
        animator.animate(source, driving, source_mask=str(tmp_path / "none.png"))
    with pytest.raises(AnimationError, match="ddim_steps must be at least 1"):
        animator.animate(source, driving, ddim_steps=0)


def test_start_samples_with_the_pipeline(animator):
    """`start` is the pipeline's sample on the grey frames (the same seed)."""
    source, driving = clip(1, seed=5)[0], clip(4)
    _, steps = animator.start(animator.prepare(source), driving, ddim_steps=2)
    ddim = dataclasses.replace(animator.ddim, num_steps=2)
    src = to_model_range(source[None])
    mask = np.ones((1, S, S, 1), np.float32)
    want = animator.pipe.sample(
        animator.variables, src, src, mask, to_model_range(lib.grey(driving)[None]),
        jax.random.PRNGKey(0), ddim, animator.guidance, animator.windows,
    )  # fmt: skip
    # two programs, fused differently: rounding apart (2.6e-5 seen), not wiring apart
    np.testing.assert_allclose(steps, np.asarray(want[0]) * 2 - 1, atol=1e-4)


def test_missing_vae_weights_are_a_clear_error(tiny_file, tmp_path):
    stored = weights.load(tiny_file)
    stored["model_config"] = {**stored["model_config"], "latent": "vae", "context": "zeros"}
    with pytest.raises(AnimationError, match="sd_vae"):
        lib.MegActorAnimator.from_stored(stored, "x", vae=str(tmp_path / "none.safetensors"))


def test_animate_command(tiny_file, tmp_path):
    from data_pipelines.synthetic import speech
    from jaxtalk.media.probe import probe
    from jaxtalk.media.video import read_video, write_video

    rng = np.random.default_rng(3)
    wav, _, _ = speech.synthesize(0.2, 140.0, rng)
    write_video(tmp_path / "driving.mp4", clip(5), 25.0, audio=wav, audio_sample_rate=16000)
    Image.fromarray(clip(1, seed=5)[0]).save(tmp_path / "source.png")
    Image.fromarray(np.full((S, S), 255, np.uint8)).save(tmp_path / "mask.png")
    args = [f"--weights={tiny_file}", f"--source={tmp_path / 'source.png'}"]
    args += [f"--driving={tmp_path / 'driving.mp4'}", f"--out={tmp_path / 'out.mp4'}"]
    run = lambda *extra: cli_processes.run(  # noqa: E731
        [sys.executable, "-m", "jaxtalk.cli", "animate", *args, *extra],
        cwd=REPO, env=cli_env(1), timeout=600,
    )  # fmt: skip
    bad = run(f"--source_mask={tmp_path / 'mask.png'}")
    assert bad.returncode == 2 and "add --nocrop_face" in bad.stderr, bad.stderr[-2000:]
    out = run("--nocrop_face", f"--source_mask={tmp_path / 'mask.png'}", "--ddim_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert probe(tmp_path / "out.mp4").has_audio  # the driving audio muxed
    frames, _ = read_video(tmp_path / "out.mp4")
    assert frames.shape == (5, S, S, 3)
