"""LivePortrait animation (jaxtalk/inference/liveportrait.py) on a tiny random-weights file:
the release's motion options on the keypoints, stitching and retargeting, the paste-back,
the exported per-frame function, and `jaxtalk animate` end to end."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk import inference
from jaxtalk.convert import mapping, weights
from jaxtalk.export import jax_function
from jaxtalk.inference.animator import AnimationError, Driver, to_pixels
from jaxtalk.inference.liveportrait import NETWORKS, LivePortraitAnimator
from jaxtalk.media import portrait_crop
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video
from jaxtalk.models.liveportrait import keypoints as kp_lib
from jaxtalk.models.liveportrait.keypoints import expression_mask
from jaxtalk.models.liveportrait.retargeting import RetargetingMLP
from tests import cli_processes
from tests.train.helpers import REPO, cli_env

SIZE, NUM_KP = 64, 21
TINY = dict(
    input_size=SIZE,
    appearance=dict(block_expansion=8, max_features=32, reshape_channel=4, reshape_depth=8,
                    num_resblocks=1),
    motion=dict(num_kp=NUM_KP, depths=[1, 1, 1, 1], dims=[8, 16, 16, 24]),
    warping=dict(num_kp=NUM_KP, block_expansion=8, max_features=32, reshape_channel=4,
                 reshape_depth=8, dense_block_expansion=4, dense_max_features=16,
                 dense_num_blocks=2, compress=2),
    spade=dict(block_expansion=8, max_features=32, out_channels=8, num_middle_blocks=1,
               spade_hidden=8),
)  # fmt: skip
OUT = 128  # 16x16 features, G's two upsamplings and pixel shuffle
GAIN = 30.0
MLPS = {"stitching": (126, 65), "lip": (65, 63), "eye": (66, 63)}


def _fill(shapes, rng):
    """Random variables shaped like `shapes`: kernels ~ N(0, 1/fan_in), small biases,
    positive BN variances, unit spectral-norm vectors."""

    def fill(path, leaf):
        name = path[-1].key
        a = rng.standard_normal(leaf.shape)
        if name in ("u", "v"):
            a = a / np.linalg.norm(a)
        elif name == "var":
            a = 1.0 + 0.1 * np.abs(a)
        elif name == "kernel":
            a = a / np.sqrt(np.prod(leaf.shape[:-1]))
        else:
            a = 0.1 * a
        return np.asarray(a, np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def tiny_variables(seed=0, mlps=tuple(MLPS)):
    rng = np.random.default_rng(seed)
    image = jax.ShapeDtypeStruct((1, SIZE, SIZE, 3), jnp.float32)
    volume = jax.ShapeDtypeStruct((1, 8, 16, 16, 4), jnp.float32)
    points = jax.ShapeDtypeStruct((1, NUM_KP, 3), jnp.float32)
    inputs = {
        "appearance": (image,),
        "motion": (image,),
        "warping": (volume, points, points),
        "spade": (jax.ShapeDtypeStruct((1, 16, 16, 32), jnp.float32),),
    }
    params, stats = {}, {}
    for group, cls in NETWORKS.items():
        net = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY[group].items()})
        v = _fill(mapping.variable_shapes(net, *inputs[group]), rng)
        params[group] = v["params"]
        if v.get("batch_stats"):
            stats[group] = v["batch_stats"]
    params["motion"]["fc_scale"]["bias"][:] = 1.0  # a face-sized keypoint cloud
    # A random trunk's features barely differ between images: amplify M's heads about
    # their value for a grey image, so that driving frames move the face visibly.
    net = NETWORKS["motion"](
        **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY["motion"].items()}
    )
    grey = net.apply({"params": params["motion"]}, jnp.full((1, SIZE, SIZE, 3), 0.5))
    # Read before the kernels change in place: on a CPU jax may use a numpy argument's memory
    # as it is, and a head not yet computed would see its amplified kernel (6 of 222 runs
    # under load did: keypoints hundreds of times too large).
    grey = {head: np.asarray(value) for head, value in grey.items()}
    for head, value in grey.items():
        fc = params["motion"][f"fc_{head}"]
        fc["kernel"] *= GAIN
        fc["bias"][:] = GAIN * fc["bias"] - (GAIN - 1) * value[0]
    for name in mlps:
        size, out = MLPS[name]
        net = RetargetingMLP(hidden_sizes=(16,), output_size=out)
        x = jax.ShapeDtypeStruct((1, size), jnp.float32)
        params[name] = _fill(mapping.variable_shapes(net, x), rng)["params"]
    return {"params": params, "batch_stats": stats}


def save(path, variables):
    weights.save(dict(variables, model_config=dict(TINY, kind="liveportrait")), path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lp")
    return {
        "full": save(d / "lp.safetensors", tiny_variables()),
        "base": save(d / "base.safetensors", tiny_variables(mlps=())),
        "dir": d,
    }


@pytest.fixture(scope="module")
def animator(files):
    return inference.open_animator(files["full"], driver=Driver.VIDEO, chunk=4)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    noise = rng.integers(-40, 40, (3, SIZE, SIZE, 3))
    return base, np.clip(base[None].astype(int) + noise, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- keypoints
def random_info(rng, batch):
    return dict(
        kp=rng.standard_normal((batch, 3 * NUM_KP)) * 0.3,
        exp=rng.standard_normal((batch, 3 * NUM_KP)) * 0.05,
        pitch=rng.standard_normal((batch, 66)) * 3,
        yaw=rng.standard_normal((batch, 66)) * 3,
        roll=rng.standard_normal((batch, 66)) * 3,
        t=rng.standard_normal((batch, 3)) * 0.1,
        scale=1 + 0.1 * rng.standard_normal((batch, 1)),
    )


def test_motion_keypoints_by_region():
    """Relative 'pose' moves rotation and translation only, 'lip' / 'eyes' only their
    expression rows; absolute 'exp' keeps the source's pose and scale."""
    rng = np.random.default_rng(0)
    src, drv, first = random_info(rng, 1), random_info(rng, 4), random_info(rng, 1)
    pts = lambda a: np.reshape(a, (len(a), -1, 3))  # noqa: E731
    rot = lambda i: np.asarray(kp_lib.info_rotation(i))  # noqa: E731
    rot_rel = rot(drv) @ np.swapaxes(rot(first), 1, 2) @ rot(src)
    t_rel = src["t"] + drv["t"] - first["t"]
    exp_rel = pts(src["exp"]) + pts(drv["exp"]) - pts(first["exp"])
    kp_s = np.repeat(pts(src["kp"]), 4, 0)
    got = kp_lib.motion_keypoints(src, drv, first, True, "pose")
    want = kp_lib.compose(
        kp_s, rot_rel, np.repeat(pts(src["exp"]), 4, 0), src["scale"][[0] * 4], t_rel
    )
    np.testing.assert_allclose(got, want, atol=1e-6)
    for region, rows in (("lip", [6, 12, 14, 17, 19, 20]), ("eyes", [11, 13, 15, 16, 18])):
        exp = np.repeat(pts(src["exp"]), 4, 0)
        exp[:, rows] = exp_rel[:, rows]
        got = kp_lib.motion_keypoints(src, drv, first, True, region)
        want = kp_lib.compose(
            kp_s, np.repeat(rot(src), 4, 0), exp, src["scale"][[0] * 4], src["t"][[0] * 4]
        )
        np.testing.assert_allclose(got, want, atol=1e-6)
    got = kp_lib.motion_keypoints(src, drv, first, False, "exp")
    exp = np.where(expression_mask("exp", NUM_KP, False), pts(drv["exp"]), pts(src["exp"]))
    want = kp_lib.compose(
        kp_s, np.repeat(rot(src), 4, 0), exp, src["scale"][[0] * 4], src["t"][[0] * 4]
    )
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="unknown animation region 'ears'"):
        kp_lib.motion_keypoints(src, drv, first, True, "ears")


def test_relative_motion_of_the_source_itself_gives_its_keypoints(animator, frames):
    source, _ = frames
    state = animator.prepare(source)
    repeated = np.repeat(source[None], 5, 0)
    _, steps = animator.start(state, repeated, stitching=False)
    assert steps.shape == (5, NUM_KP, 3)
    np.testing.assert_allclose(steps, np.repeat(np.asarray(state["kp"]), 5, 0), atol=2e-6)
    # The same through the keypoint functions the release's relative motion is built from.
    info = animator.driving_motion(repeated)
    want = kp_lib.relative_motion(state["info"], info, jax.tree.map(lambda a: a[:1], info))
    np.testing.assert_allclose(steps, want, atol=2e-6)


def test_absolute_and_relative_motion_follow_the_release(animator, frames):
    source, driving = frames
    state = animator.prepare(source)
    info = animator.driving_motion(driving)
    first = jax.tree.map(lambda a: a[:1], info)
    _, rel = animator.start(state, driving, stitching=False)
    np.testing.assert_allclose(rel, kp_lib.relative_motion(state["info"], info, first), atol=2e-6)
    _, absolute = animator.start(state, driving, mode="absolute", stitching=False)
    src = state["info"]
    mask = expression_mask("all", NUM_KP, relative=False)
    exp = np.where(mask, info["exp"].reshape(-1, NUM_KP, 3), np.reshape(src["exp"], (1, -1, 3)))
    want = kp_lib.compose(
        np.repeat(np.reshape(src["kp"], (1, -1, 3)), 3, 0),
        kp_lib.info_rotation(info),
        exp,
        np.repeat(np.asarray(src["scale"]), 3, 0),  # absolute keeps the source's scale
        info["t"],
    )
    np.testing.assert_allclose(absolute, want, atol=2e-6)
    assert mask.sum() == 13 * 3 + 6 and not np.allclose(absolute, rel)
    # 'pose' keeps the source's expression; 'exp' keeps its pose.
    _, pose = animator.start(state, driving, stitching=False, animation_region="pose")
    _, expr = animator.start(state, driving, stitching=False, animation_region="exp")
    assert not np.allclose(pose, rel) and not np.allclose(expr, rel)
    with pytest.raises(AnimationError, match="unknown animation region"):
        animator.start(state, driving, animation_region="ears")


def test_stitching_changes_the_keypoints_and_off_leaves_them(animator, files, frames):
    source, driving = frames
    state = animator.prepare(source)
    _, plain = animator.start(state, driving, stitching=False)
    _, stitched = animator.start(state, driving)  # default: on, the file has S
    want = kp_lib.stitch(
        animator.mlps["stitching"], np.repeat(np.asarray(state["kp"]), 3, 0), plain
    )
    np.testing.assert_allclose(stitched, want, atol=2e-6)
    assert np.abs(stitched - plain).max() > 1e-3
    base = LivePortraitAnimator.from_weights(files["base"], chunk=4)
    _, unstitched = base.start(base.prepare(source), driving)  # default off: no S in the file
    np.testing.assert_allclose(unstitched, plain, atol=2e-6)
    with pytest.raises(AnimationError, match=r"base.safetensors: has no stitching module"):
        base.start(base.prepare(source), driving, stitching=True)
    with pytest.raises(AnimationError, match=r"base.safetensors: has no lip module"):
        base.start(base.prepare(source), driving, lip_ratio=0.3, source_lip_ratio=0.1)


def test_lip_and_eye_retargeting(animator, frames):
    source, driving = frames
    state = animator.prepare(source)
    x_s = np.repeat(np.asarray(state["kp"]), 3, 0)
    ratios = np.array([0.1, 0.4, 0.7], np.float32)
    _, lip = animator.start(state, driving, stitching=False, lip_ratio=ratios, source_lip_ratio=0.2)
    want = x_s + kp_lib.retarget_lip(
        animator.mlps["lip"], x_s, np.stack([np.full(3, 0.2), ratios], 1)
    )
    np.testing.assert_allclose(lip, want, atol=2e-6)  # relative: x_s + the lip offset
    _, eye = animator.start(
        state, driving, stitching=False, eye_ratio=0.35, source_eye_ratio=[0.3, 0.32]
    )
    combined = np.tile(np.array([[0.3, 0.32, 0.35]], np.float32), (3, 1))
    want = x_s + kp_lib.retarget_eye(animator.mlps["eye"], x_s, combined)
    np.testing.assert_allclose(eye, want, atol=2e-6)
    # A zero-initialised lip MLP adds nothing: the relative keypoints stay the source's.
    variables = tiny_variables()
    variables["params"]["lip"] = jax.tree.map(np.zeros_like, variables["params"]["lip"])
    zeroed = LivePortraitAnimator(variables, TINY, chunk=4)
    _, still = zeroed.start(state, driving, stitching=False, lip_ratio=ratios, source_lip_ratio=0.2)
    np.testing.assert_allclose(still, x_s, atol=1e-7)
    with pytest.raises(AnimationError, match="needs the source's lip ratio"):
        animator.start(state, driving, lip_ratio=0.3)
    with pytest.raises(AnimationError, match="one per driving frame"):
        animator.start(state, driving, lip_ratio=[0.1, 0.2], source_lip_ratio=0.2)


def test_driving_multiplier_scales_the_motion_about_the_source(animator, frames):
    source, driving = frames
    state = animator.prepare(source)
    x_s = np.asarray(state["kp"])
    _, one = animator.start(state, driving)
    _, half = animator.start(state, driving, driving_multiplier=0.5)
    np.testing.assert_allclose(half, x_s + (one - x_s) * 0.5, atol=2e-6)


# ----------------------------------------------------------------------------- frames
def test_drive_renders_w_and_g_and_export_matches(animator, files, frames, tmp_path):
    source, driving = frames
    out = animator.animate(source, driving)
    assert out.shape == (3, OUT, OUT, 3) and out.dtype == np.uint8 and out.std() > 0
    state, steps = animator.start(animator.prepare(source), driving)
    padded = np.concatenate([steps, steps[-1:]])
    drawn = np.asarray(animator.drive(state, padded))[:3]
    np.testing.assert_array_equal(to_pixels(drawn), out)
    # The exported function is the whole per-frame pipeline: images in, frames out.
    spec = animator.export_function()
    path = tmp_path / "lp.jaxfn"
    names = dict(input_names=spec.input_names, output_names=spec.output_names)
    jax_function.export_function(
        spec.fn, spec.params, spec.input_specs, path, metadata=spec.metadata, **names
    )
    fn, manifest = jax_function.load_function(path)
    assert manifest["inputs"][2]["shape"] == ["T", SIZE, SIZE, 3]
    assert manifest["metadata"]["stitching"] is True
    unit = lambda x: (x / 255.0).astype(np.float32)  # noqa: E731
    (got,) = fn(unit(source[None]), unit(driving[:1]), unit(driving))
    assert got.shape == (3, OUT, OUT, 3)
    # M runs on other batches than the animator's (and this test's M amplifies its heads):
    # float rounding apart, far under a pixel level (2 / 255).
    np.testing.assert_allclose(np.asarray(got), drawn, atol=1e-3)
    # Frames later in the video: relative to the same first frame, one at a time.
    (one,) = fn(unit(source[None]), unit(driving[:1]), unit(driving[2:]))
    np.testing.assert_allclose(np.asarray(one), drawn[2:], atol=1e-3)
    # Without stitching in the file, the function renders the unstitched keypoints.
    base = inference.open_animator(files["base"], driver=Driver.VIDEO, chunk=4)
    assert base.export_function().metadata["stitching"] is False
    plain = np.asarray(base.drive(*base.start(base.prepare(source), driving)))
    spec = base.export_function()
    got = jax.jit(spec.fn)(spec.params, unit(source[None]), unit(driving[:1]), unit(driving))
    np.testing.assert_allclose(np.asarray(got), plain, atol=1e-3)
    assert np.abs(plain - drawn).max() > 0.05  # stitching moved the frames


def test_onnx_export_runs_in_onnx_runtime(animator, tmp_path):
    """The whole per-frame pipeline as ONNX (opset 18): M's ConvNeXt and heads, the keypoint
    algebra, stitching, W's trilinear sampling, G's pooling and upsampling; ONNX Runtime
    within a tenth of a pixel level of jax, for 1 and 3 frames."""
    pytest.importorskip("onnxruntime")
    from jaxtalk.export import onnx_export

    spec = animator.export_function()
    path = tmp_path / "lp.onnx"
    info = onnx_export.export_onnx(spec, path)
    assert {"AveragePool", "GatherND"} <= set(info["ops"])  # pooling, trilinear sampling
    for frames in (1, 3):
        assert onnx_export.check_onnx(str(path), spec, {"T": frames}) < 1e-3


def test_export_command_writes_the_function(files, tmp_path):
    out = jaxtalk("export", f"--weights={files['full']}", f"--out={tmp_path / 'lp.jaxfn'}")
    assert out.returncode == 0, out.stderr[-2000:]
    _, manifest = jax_function.load_function(tmp_path / "lp.jaxfn")
    assert [i["name"] for i in manifest["inputs"]] == ["source", "first", "driving"]
    assert manifest["outputs"][0]["shape"] == ["T", OUT, OUT, 3]


def test_paste_back_puts_the_frame_into_the_source_image(animator, frames):
    source, driving = frames
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (150, 181, 3), dtype=np.uint8)
    # The crop: a 512 square of side 90 around (100, 70), rolled by 0.2 rad.
    frame = portrait_crop.FaceFrame(np.array([100.0, 70.0]), 90.0, 0.2)
    c2o = np.linalg.inv(portrait_crop.crop_matrix(frame, 512))
    paste = {"image": image, "crop_to_image": c2o, "crop_size": 512}
    out = animator.animate(source, driving, paste_back=paste)
    assert out.shape == (3, 150, 181, 3)
    mask = np.asarray(portrait_crop.paste_mask(c2o, (150, 181)))[..., 0]
    outside = mask == 0
    assert 0.3 < outside.mean() < 0.95
    np.testing.assert_array_equal(out[:, outside], np.repeat(image[None], 3, 0)[:, outside])
    # Inside, the animated frame where the crop's inverse map puts it: cv2.warpAffine (the
    # release's paste_back) of the 128 frame, pixel i standing for 512 crop pixel 4i + 1.5.
    cv2 = pytest.importorskip("cv2")
    frame_to_crop = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]])
    crop = animator.animate(source, driving)[0]
    placed = cv2.warpAffine(crop, (c2o @ frame_to_crop)[:2], (181, 150), flags=cv2.INTER_LINEAR)
    inside = mask > 0.999
    diff = np.abs(placed[inside].astype(float) - out[0][inside])
    # cv2 weighs in 1/32 pixel steps: up to 8 levels apart on this noise-like random frame.
    assert diff.max() <= 8 and diff.mean() < 2, (diff.max(), diff.mean())
    half = cv2.warpAffine(crop, (c2o @ frame_to_crop)[:2] + [[0, 0, 0.5], [0, 0, 0]], (181, 150))
    assert np.abs(half[inside].astype(float) - out[0][inside]).mean() > 5 * diff.mean()
    assert np.abs(image[inside].astype(float) - out[0][inside]).mean() > 10 * diff.mean()
    with pytest.raises(AnimationError, match="paste_back: image"):
        animator.animate(source, driving, paste_back={"image": image[..., 0], "crop_to_image": c2o})


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A portrait the OpenCV detector finds (512x512) and a driving clip with speech."""
    from PIL import Image

    from data_pipelines.synthetic import speech
    from jaxtalk.media.video import write_video

    d = tmp_path_factory.mktemp("lp_media")
    portrait = pytest.importorskip("skimage.data").astronaut()
    Image.fromarray(portrait).save(d / "source.png")
    rng = np.random.default_rng(3)
    clip = np.stack([np.roll(portrait[::4, ::4], 2 * i, axis=1) for i in range(5)])
    clip = np.clip(clip + rng.integers(-10, 10, clip.shape), 0, 255).astype(np.uint8)
    wav, _, _ = speech.synthesize(0.2, 140.0, rng)
    write_video(d / "driving.mp4", clip, 25.0, audio=wav, audio_sample_rate=16000)
    return {"source": str(d / "source.png"), "driving": str(d / "driving.mp4"), "image": portrait}


def jaxtalk(*args):
    return cli_processes.run(
        [sys.executable, "-m", "jaxtalk.cli", *args],
        cwd=REPO,
        env=cli_env(1),
        timeout=600,
    )


def test_animate_command_with_paste_back(files, media, tmp_path):
    common = [f"--weights={files['full']}", f"--source={media['source']}"]
    common += [f"--driving={media['driving']}"]
    out = jaxtalk(
        "animate", *common, f"--out={tmp_path / 'pasted.mp4'}", "--paste_back",
        "--driving_multiplier=0.8", "--nostitching",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    info = probe(tmp_path / "pasted.mp4")
    assert (info.width, info.height) == (512, 512) and info.audio_sample_rate  # the source's
    pasted, _ = read_video(tmp_path / "pasted.mp4")
    assert len(pasted) == 5
    # Outside the crop the source itself (codec noise only), inside the animation.
    crop, _ = portrait_crop.source_crop(media["image"])
    mask = np.asarray(portrait_crop.paste_mask(crop.c2o, (512, 512)))[..., 0]
    diff = np.abs(pasted.astype(float) - media["image"]).mean(-1)
    outside, inside = diff[:, mask == 0].mean(), diff[:, mask > 0.999].mean()
    assert outside < 4 and inside > 20, (outside, inside)
    # The driving motion moves the face: frames differ from each other inside the crop.
    moving = np.abs(pasted[1:].astype(float) - pasted[:1])[:, mask > 0.999].mean()
    assert moving > 2, moving  # codec noise alone: under 1 (the landmark test below)
    for flag, message in (
        ("--lip_ratio=0.3", "--lip_ratio needs --landmark_model"),
        ("--eye_ratio=wide", "--eye_ratio=wide: give a number or 'driving'"),
    ):
        bad = jaxtalk("animate", *common, f"--out={tmp_path / 'x.mp4'}", flag)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr


def test_animate_command_with_a_landmark_model(files, media, tmp_path):
    """The release's crop from 203 landmarks (a random landmark-shaped ONNX net) and
    constant eye and lip targets: relative motion with retargeting is x_s plus the offsets,
    so every frame is the same (the driving motion is replaced, as released)."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from tests.convert.onnx_models import conv_next_landmarks, export_torch

    onnx = export_torch(conv_next_landmarks(), torch.zeros(1, 3, 224, 224), tmp_path / "l.onnx", 11)
    out = jaxtalk(
        "animate", f"--weights={files['full']}", f"--source={media['source']}",
        f"--driving={media['driving']}", f"--out={tmp_path / 'lip.mp4'}",
        f"--landmark_model={onnx}", "--lip_ratio=0.3", "--eye_ratio=0.25",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    frames, _ = read_video(tmp_path / "lip.mp4")
    assert frames.shape == (5, OUT, OUT, 3) and probe(tmp_path / "lip.mp4").audio_sample_rate
    still = np.abs(frames[1:].astype(float) - frames[:1]).mean()
    assert still < 1, still  # codec noise only


def test_released_sizes_without_running_the_networks():
    """Released defaults (an empty model_config): 256 in, 512 out, the export's shapes."""
    from jaxtalk.models.liveportrait.retargeting import RELEASED

    image = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    points = jax.ShapeDtypeStruct((1, 21, 3), jnp.float32)
    inputs = {
        "appearance": (image,),
        "motion": (image,),
        "warping": (jax.ShapeDtypeStruct((1, 16, 64, 64, 32), jnp.float32), points, points),
        "spade": (jax.ShapeDtypeStruct((1, 64, 64, 256), jnp.float32),),
    }
    shapes = {g: mapping.variable_shapes(cls(), *inputs[g]) for g, cls in NETWORKS.items()}
    variables = {
        "params": {g: v["params"] for g, v in shapes.items()},
        "batch_stats": {g: v["batch_stats"] for g, v in shapes.items() if "batch_stats" in v},
    }
    for name, (size, _) in MLPS.items():
        x = jax.ShapeDtypeStruct((1, size), jnp.float32)
        mlp = RetargetingMLP(**RELEASED[name])
        variables["params"][name] = mapping.variable_shapes(mlp, x)["params"]
    animator = LivePortraitAnimator(variables, {"kind": "liveportrait"}, source="released")
    assert animator.size == 256 and animator.output_size() == 512
    spec = animator.export_function()
    assert [tuple(s.shape)[1:] for s in spec.input_specs] == [(256, 256, 3)] * 3
    assert sorted(spec.params["networks"]) == sorted(NETWORKS)
    assert sorted(spec.params["mlps"]) == ["stitching"] and spec.metadata["stitching"]
    with pytest.raises(AnimationError, match="released: no spade parameters"):
        LivePortraitAnimator({"params": {g: {} for g in list(NETWORKS)[:3]}}, {}, source="released")
    with pytest.raises(AnimationError, match="tiny.safetensors: motion and warping disagree"):
        LivePortraitAnimator(variables, {"warping": {"num_kp": 10}}, source="tiny.safetensors")
    with pytest.raises(AnimationError, match="x.safetensors: model_config input_size"):
        LivePortraitAnimator(variables, {"input_size": 100}, source="x.safetensors")
