"""The animator contract (jaxtalk/inference/animator.py), its registry, and today's two
animators through it: frames equal to the models' own methods' (to a rounding step where
the two sides are different XLA programs), and the video animator's exported function."""

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.synthetic import speech
from jaxtalk import inference
from jaxtalk.convert import weights
from jaxtalk.errors import InputError
from jaxtalk.export import jax_function
from jaxtalk.inference import animator as contract
from jaxtalk.inference.animator import AnimationError, Animator, Driver, to_pixels
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.pixels import to_model_range
from jaxtalk.train.grouped_init import grouped_initializers
from tests import cli_processes
from tests.tasks import helpers
from tests.train.helpers import REPO, cli_env

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


# ----------------------------------------------------------------------------- the contract
class Fake(Animator):
    """Keypoint-driven: each frame is the source shifted by the step's mean keypoint."""

    driver = Driver.KEYPOINTS
    size, chunk = 4, 3

    def __init__(self):
        self.calls = []

    def prepare(self, source):
        return to_model_range(source[None])

    def drive(self, state, steps):
        self.calls.append(steps.shape)
        return state + jnp.asarray(steps).mean(axis=(1, 2))[:, None, None, None]


def test_base_animate_pads_chunks_converts_pixels_and_reports_progress():
    fake, told = Fake(), []
    source = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    steps = np.linspace(-0.5, 0.5, 7 * 2 * 3, dtype=np.float32).reshape(7, 2, 3)
    frames = fake.animate(source, steps, progress=told.append)
    assert frames.dtype == np.uint8 and frames.shape == (7, 4, 4, 3)
    assert fake.calls == [(3, 2, 3)] * 3  # every call a full chunk: one compilation
    assert told == [3, 3, 1]
    want = to_pixels(to_model_range(source[None]) + steps.mean(axis=(1, 2))[:, None, None, None])
    np.testing.assert_array_equal(frames, want)


def test_base_rejects_options_a_wrong_source_and_export():
    fake = Fake()
    with pytest.raises(AnimationError, match="takes no options"):
        fake.animate(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 2, 3)), mode="relative")
    with pytest.raises(AnimationError, match=r"\(4, 4, 3\)"):
        fake.animate(np.zeros((5, 4, 3), np.uint8), np.zeros((2, 2, 3)))
    with pytest.raises(AnimationError, match="no frames"):
        fake.animate(np.zeros((4, 4, 3), np.uint8), np.zeros((0, 2, 3)))
    with pytest.raises(AnimationError, match="cannot be exported"):
        fake.export_function()
    assert issubclass(AnimationError, InputError) and not Fake.exports


# ----------------------------------------------------------------------------- registry
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("animators")
    x = jnp.zeros((1, 32, 32, 3))
    out = {}
    for kind, cls in (("lia", LIAGenerator), ("anitalker_stage1", AniTalkerMotion)):
        params = nn.meta.unbox(
            jax.jit(grouped_initializers(cls(**TINY).init))(jax.random.PRNGKey(3), x, x)["params"]
        )
        out[kind] = str(d / f"{kind}.safetensors")
        weights.save(
            {"params": params, "model_config": dict(TINY, kind=kind)}, out[kind], release=kind
        )
    out["s1"] = helpers.save_stage1(str(d / "s1.safetensors"))
    out["s2"] = helpers.save_stage2(str(d / "s2.safetensors"))
    out["dir"] = d
    return out


def test_registry_finds_animators_by_kind_and_checks_the_driver(files):
    from jaxtalk.inference.audio_driven import AudioAnimator
    from jaxtalk.inference.video_driven import MotionAnimator

    for kind in ("lia", "anitalker_stage1"):
        assert inference.animator_class(kind) is MotionAnimator
    for kind in ("anitalker_stage2",):
        assert inference.animator_class(kind) is AudioAnimator
    with pytest.raises(AnimationError, match="w.safetensors: cannot animate 'vgg16'"):
        inference.animator_class("vgg16", "w.safetensors")
    with pytest.raises(AnimationError, match="driven by audio, not video"):
        inference.open_animator(files["s2"], driver=Driver.VIDEO)
    with pytest.raises(AnimationError, match="no such weights file"):
        inference.open_animator(str(files["dir"] / "missing.safetensors"))
    animator = inference.open_animator(files["lia"], driver="video", chunk=3)
    assert isinstance(animator, MotionAnimator) and (animator.size, animator.chunk) == (32, 3)
    assert animator.fps is None and AudioAnimator.fps == 25


# ----------------------------------------------------------------------------- video
def _video_reference(kind, path, source, driving, mode, chunk):
    """The released algorithm from the generator's own methods: encode the source once,
    each driving frame's motion code, render (relative: + alpha_source - alpha_start)."""
    stored = weights.load(path)
    cls = {"lia": LIAGenerator, "anitalker_stage1": AniTalkerMotion}[kind]
    model, v = cls(**TINY), {"params": stored["params"]}
    if cls is LIAGenerator:
        src = jax.jit(lambda x: model.apply(v, x, method=cls.encode_source))
        code_key, motion = "wa", jax.jit(lambda x: model.apply(v, x, method=cls.encode_motion))
    else:
        src = jax.jit(lambda x: model.apply(v, x, method=cls.encode))
        code_key, motion = "h", jax.jit(lambda x: model.apply(v, x, method=cls.encode)["alpha"])
    s = src(to_model_range(source[None]))
    alpha_start = motion(to_model_range(driving[:1]))

    @jax.jit
    def render(frames):
        n = frames.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        extra = (tile(alpha_start), tile(s["alpha"])) if mode == "relative" else ()
        return model.apply(
            v,
            tile(s[code_key]),
            [tile(f) for f in s["feats"]],
            motion(frames),
            *extra,
            method=cls.render,
        )["image"]

    out = []
    for i in range(0, len(driving), chunk):
        part = driving[i : i + chunk]
        part = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), 0)])
        out.append(to_pixels(render(to_model_range(part))))
    return np.concatenate(out)[: len(driving)]


@pytest.mark.parametrize("kind", ["lia", "anitalker_stage1"])
def test_video_animator_frames_match_the_model(files, kind):
    rng = np.random.RandomState(0)
    source = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
    driving = (rng.rand(5, 32, 32, 3) * 255).astype(np.uint8)
    animator = inference.open_animator(files[kind], driver=Driver.VIDEO, chunk=3)
    for mode in ("relative", "absolute"):
        frames = animator.animate(source, driving, mode=mode)
        want = _video_reference(kind, files[kind], source, driving, mode, chunk=3)
        assert frames.shape == (5, 32, 32, 3)
        # the animator renders with its weight cache (tests/models/test_weight_cache.py),
        # rounded a little apart from the in-graph weights: a level at a few pixels
        diff = np.abs(frames.astype(int) - want.astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (diff.max(), np.mean(diff > 0))
    assert not np.array_equal(
        animator.animate(source, driving, mode="absolute"),
        animator.animate(source, driving, mode="relative"),
    )
    with pytest.raises(AnimationError, match="unknown motion mode"):
        animator.animate(source, driving, mode="sideways")


def test_exported_video_function_reproduces_animate(files, tmp_path):
    rng = np.random.RandomState(1)
    source = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
    driving = (rng.rand(4, 32, 32, 3) * 255).astype(np.uint8)
    animator = inference.open_animator(files["lia"], driver=Driver.VIDEO, chunk=4)
    spec = animator.export_function()
    path = tmp_path / "lia.jaxfn"
    jax_function.export_function(
        spec.fn,
        spec.params,
        spec.input_specs,
        path,
        input_names=spec.input_names,
        output_names=spec.output_names,
        metadata=spec.metadata,
    )
    fn, manifest = jax_function.load_function(path)
    assert manifest["inputs"][1]["shape"] == ["T", 5] and manifest["metadata"]["model"] == "lia"
    alphas = np.asarray(animator._motion(to_model_range(driving)))
    (frames,) = fn(np.asarray(to_model_range(source[None])), alphas)
    got, want = to_pixels(frames), animator.animate(source, driving, mode="absolute")
    # One whole-sequence call against chunked jit calls: XLA may round a few pixels apart.
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_export_command_uses_the_animator(files, tmp_path):
    ok = cli_processes.run(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "export",
            f"--weights={files['lia']}",
            f"--out={tmp_path / 'lia.jaxfn'}",
        ],
        cwd=REPO,
        env=cli_env(),
        timeout=600,
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    _, manifest = jax_function.load_function(tmp_path / "lia.jaxfn")
    assert [i["name"] for i in manifest["inputs"]] == ["source", "alphas"]
    bad = cli_processes.run(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "export",
            f"--weights={files['s2']}",
            f"--out={tmp_path / 's2.jaxfn'}",
        ],
        cwd=REPO,
        env=cli_env(),
        timeout=600,
    )
    assert bad.returncode == 2 and "cannot be exported as a .jaxfn" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------- audio
def test_audio_animator_frames_match_the_model(files):
    animator = inference.open_animator(
        files["s2"], driver=Driver.AUDIO, stage1=files["s1"], chunk=4
    )
    wav, _, _ = speech.synthesize(0.8, 140.0, np.random.default_rng(1))
    source = (np.random.RandomState(2).rand(64, 64, 3) * 255).astype(np.uint8)
    frames = animator.animate(source, wav, seed=3, ddim_steps=2, pose=[0.3, 0.0, -0.1])
    codes, src = animator.motion_codes(
        source, wav, seed=3, ddim_steps=2, controls={"pose": np.array([0.3, 0.0, -0.1], np.float32)}
    )
    codes = np.asarray(codes)
    stage1, v = AniTalkerMotion(**helpers.STAGE1), {"params": weights.load(files["s1"])["params"]}
    render = jax.jit(
        lambda v, h, feats, c: stage1.apply(
            v,
            jnp.broadcast_to(h, (4,) + h.shape[1:]),
            [jnp.broadcast_to(f, (4,) + f.shape[1:]) for f in feats],
            c,
            method=stage1.render,
        )["image"]
    )
    want = []
    for i in range(0, len(codes), 4):
        part = codes[i : i + 4]
        part = np.concatenate([part, np.repeat(part[-1:], 4 - len(part), 0)])
        want.append(to_pixels(render(v, src["h"], src["feats"], jnp.asarray(part))))
    want = np.concatenate(want)[: len(codes)]
    assert frames.shape == (19, 64, 64, 3)
    # Two programs: XLA may fuse them apart and round a pixel across a uint8 step (seen with
    # the tests' older kernel emitter on an AVX-512 machine: 1 of 233,472 values, by 1).
    off = np.abs(frames.astype(np.int16) - want)
    assert off.max() <= 1 and np.mean(off > 0) < 1e-4, (off.max(), np.mean(off > 0))
    assert not np.array_equal(
        frames, animator.animate(source, wav, seed=4, ddim_steps=2, pose=[0.3, 0.0, -0.1])
    )
    with pytest.raises(AnimationError, match="cannot control location"):
        animator.animate(source, wav, face_location=0.5)
    with pytest.raises(AnimationError, match="silent"):
        animator.animate(source, np.zeros(16000, np.float32))
    assert contract.SAMPLE_RATE == 16000
