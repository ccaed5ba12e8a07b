"""LivePortrait with a source video (jaxtalk/inference/liveportrait.py): the release's Kalman
smoother, the per-frame keypoints, agreement with the image path on a still video, the
per-frame paste-back, and `jaxtalk animate --source=VIDEO` end to end."""

import numpy as np
import pytest

from jaxtalk.inference.animator import AnimationError, to_pixels
from jaxtalk.inference.liveportrait import LivePortraitAnimator, kalman_smooth
from jaxtalk.media import portrait_crop
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from jaxtalk.models.liveportrait import keypoints as kp_lib
from tests.inference.test_liveportrait_animator import (
    NUM_KP,
    OUT,
    SIZE,
    jaxtalk,
    save,
    tiny_variables,
)


def reference_smooth(x, r, q=1e-5):
    """pykalman's filter and RTS smoother in matrix form, float64: identity transition and
    observation, covariances q I and r I, initial state x[0] with covariance I."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    d = x.shape[1]
    eye = np.eye(d)
    means, covs, predicted = [], [], []
    mean, cov = x[0], eye
    for t, y in enumerate(x):
        if t:
            mean, cov = means[-1], covs[-1] + q * eye
        predicted.append((mean, cov))
        gain = cov @ np.linalg.inv(cov + r * eye)
        means.append(mean + gain @ (y - mean))
        covs.append((eye - gain) @ cov)
    out = [means[-1]]
    for t in range(len(x) - 2, -1, -1):
        mean_next, cov_next = predicted[t + 1]
        gain = covs[t] @ np.linalg.inv(cov_next)
        out.insert(0, means[t] + gain @ (out[0] - mean_next))
    return np.stack(out)


def test_kalman_smoother_is_the_releases():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((12, 2, 3)) * 1e-3, 0) + rng.standard_normal((12, 2, 3))
    for r in (3e-7, 1e-4):
        got = kalman_smooth(x, r)
        assert got.shape == x.shape and got.dtype == np.float64
        np.testing.assert_allclose(got.reshape(12, -1), reference_smooth(x, r), rtol=0, atol=1e-12)
    # Stronger observation noise smooths more; a constant stays exactly constant.
    rough = lambda y: np.abs(np.diff(y, 2, axis=0)).mean()  # noqa: E731
    assert rough(kalman_smooth(x, 1e-4)) < 0.5 * rough(kalman_smooth(x, 3e-7)) < rough(x)
    still = np.broadcast_to(x[:1], x.shape)
    np.testing.assert_array_equal(kalman_smooth(still), still)
    np.testing.assert_array_equal(kalman_smooth(x[:1]), x[:1])


# ----------------------------------------------------------------------------- the animator
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save(tmp_path_factory.mktemp("lpv") / "lp.safetensors", tiny_variables())


@pytest.fixture(scope="module")
def animator(weights):
    return LivePortraitAnimator.from_weights(weights, chunk=3)


@pytest.fixture(scope="module")
def clips():
    """A still portrait, a 4-frame source video around it and a 5-frame driving video."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

    def around(n):
        noise = rng.integers(-40, 40, (n, SIZE, SIZE, 3))
        return np.clip(base[None].astype(int) + noise, 0, 255).astype(np.uint8)

    return base, around(4), around(5)


def _rows(a):
    return np.asarray(a, np.float64).reshape(len(a), NUM_KP, 3)


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_each_frame_moves_its_own_source_frame_by_the_smoothed_motion(animator, clips, mode):
    _, video, driving = clips
    variance = 1e-4  # strong enough that smoothing visibly changes the motion
    state, steps = animator.start(
        animator.prepare(video), driving, mode=mode, stitching=False, smooth_variance=variance
    )
    np.testing.assert_array_equal(steps, np.arange(4))  # min(source, driving) frames
    # The release's targets, written out: M on each source frame and driving frame.
    src, drv = animator.driving_motion(video), animator.driving_motion(driving[:4])
    rot = lambda info: np.asarray(kp_lib.info_rotation(info), np.float64)  # noqa: E731
    rot_s, rot_d = rot(src), rot(drv)
    exp_s, exp_d = _rows(src["exp"]), _rows(drv["exp"])
    if mode == "relative":
        raw_rot = rot_d @ rot_d[0].T @ rot_s
        raw_exp = exp_s + exp_d - exp_d[:1]
        t = np.asarray(src["t"], np.float64)
    else:
        raw_rot, raw_exp, t = rot_d, exp_d, np.asarray(drv["t"], np.float64)
    smooth_rot = reference_smooth(raw_rot, variance).reshape(4, 3, 3)
    smooth_exp = reference_smooth(raw_exp, variance).reshape(4, NUM_KP, 3)
    assert np.abs(smooth_exp - raw_exp).max() > 1e-3  # the test sees the smoothing
    mask = kp_lib.expression_mask("all", NUM_KP, relative=False)  # the release's subset
    exp = np.where(mask, smooth_exp, exp_s)
    scale = np.asarray(src["scale"], np.float64).reshape(4, 1, 1)
    t = t * [1, 1, 0]
    want = scale * (_rows(src["kp"]) @ smooth_rot + exp) + t[:, None]
    np.testing.assert_allclose(state["driven"], want, atol=2e-5)
    np.testing.assert_allclose(state["kp"], kp_lib.transform_keypoints(src), atol=1e-6)
    # Frame i is scaled by source frame i's scale, not the first one's.
    first = np.asarray(src["scale"])[0, 0] * (_rows(src["kp"]) @ smooth_rot + exp) + t[:, None]
    assert np.abs(first - want).max() > 100 * np.abs(state["driven"] - want).max()


def test_source_video_eye_retargeting_holds_the_first_frames_eyes(animator, clips):
    _, video, driving = clips
    state = animator.prepare(video)
    plain = animator.start(state, driving, stitching=False)[0]["driven"]
    eyes = np.array([[0.3, 0.2], [0.1, 0.12], [0.25, 0.3], [0.2, 0.2]], np.float32)
    for first, target in ((eyes[0], 0.25), ([0.1, 0.2], 0.39)):  # under 0.18: held open
        given = np.concatenate([np.asarray(first, np.float32)[None], eyes[1:]])
        held, _ = animator.start(
            state, driving, stitching=False, source_eye_ratio=given,
            source_video_eye_retargeting=True,
        )  # fmt: skip
        ratio = np.concatenate([given, np.full((4, 1), target, np.float32)], 1)
        offset = kp_lib.retarget_eye(animator.mlps["eye"], held["kp"], ratio)
        np.testing.assert_allclose(held["driven"], plain + offset, atol=1e-6)
        assert np.abs(offset).max() > 1e-3
    with pytest.raises(AnimationError, match="needs the source's eye ratios"):
        animator.start(state, driving, source_video_eye_retargeting=True)
    with pytest.raises(AnimationError, match="needs a source video"):
        animator.start(animator.prepare(video[0]), driving, source_video_eye_retargeting=True)


def test_a_still_source_video_is_the_source_image(animator, clips):
    """A video of one image driven by identical frames: the release's smoothed relative
    motion of each frame is that image's own pose, as with the image itself."""
    base, _, driving = clips
    still = np.repeat(driving[:1], 5, 0)
    image = animator.animate(base, still)
    video = animator.animate(np.repeat(base[None], 4, 0), still)
    assert image.shape == (5, OUT, OUT, 3) and video.shape == (4, OUT, OUT, 3)
    diff = np.abs(video.astype(int) - image[:4])
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())
    _, steps = animator.start(animator.prepare(base), still)
    state, _ = animator.start(animator.prepare(np.repeat(base[None], 4, 0)), still)
    np.testing.assert_allclose(state["driven"], steps[:4], atol=1e-5)  # float32 rounding


def test_each_frame_is_pasted_into_its_own_source_frame(animator, clips):
    _, video, driving = clips
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 120, 140, 3), dtype=np.uint8)
    maps = []
    for i in range(4):  # a 512 crop of side 70 around a moving centre, rolling
        frame = portrait_crop.FaceFrame(np.array([60.0 + 5 * i, 55.0]), 70.0, 0.1 * i)
        maps.append(np.linalg.inv(portrait_crop.crop_matrix(frame, 512)))
    paste = {"image": images, "crop_to_image": np.stack(maps), "crop_size": 512}
    out = animator.animate(video, driving, paste_back=paste)
    crops = animator.animate(video, driving)
    assert out.shape == (4, 120, 140, 3)
    for i in range(4):
        mask = np.asarray(portrait_crop.paste_mask(maps[i], (120, 140)))[..., 0]
        np.testing.assert_array_equal(out[i][mask == 0], images[i][mask == 0])
        # Inside: frame i through map i, as the image path pastes one frame.
        one = {"image": images[i], "crop_to_image": maps[i], "crop_size": 512}
        pasted = animator._paste(crops[i][None] / 127.5 - 1.0, **animator._paste_state(one))
        diff = np.abs(to_pixels(pasted)[0].astype(int) - out[i])
        assert diff.max() <= 2 and diff.mean() < 0.5, (diff.max(), diff.mean())
    with pytest.raises(AnimationError, match="paste_back: image must be"):
        animator.animate(video, driving, paste_back=dict(paste, image=images[0]))


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A source video with speech (10 fps, 4 frames) and a silent driving video (6 frames)."""
    from PIL import Image

    from data_pipelines.synthetic import speech

    d = tmp_path_factory.mktemp("lpv_media")
    portrait = pytest.importorskip("skimage.data").astronaut()[::2, ::2]
    rng = np.random.default_rng(3)
    source = np.stack([np.roll(portrait, i, axis=0) for i in range(4)])
    wav, _, _ = speech.synthesize(0.4, 140.0, rng)
    write_video(d / "source.mp4", source, 10.0, audio=wav, audio_sample_rate=16000)
    driving = np.stack([np.roll(portrait[::2, ::2], 2 * i, axis=1) for i in range(6)])
    write_video(d / "driving.mp4", driving, 25.0)
    (d / "broken.mp4").write_bytes(b"\x00\x01not a video at all" * 50)
    Image.fromarray(portrait).save(d / "image.png")
    paths = {k: str(d / f"{k}.mp4") for k in ("source", "driving", "broken")}
    return dict(paths, image=str(d / "image.png"))


def test_a_source_video_is_cropped_by_the_first_frames_face(media):
    from jaxtalk.inference import files

    frames, fps, box = files.load_source_video(media["source"], SIZE)
    assert frames.shape == (4, SIZE, SIZE, 3) and fps == 10.0
    x, y, side, _ = box
    assert 0 < side < 256 and 0 <= x <= 256 - side and 0 <= y <= 256 - side
    assert files.source_video_info(media["source"]).has_audio
    assert files.source_video_info(media["image"]) is None  # an image: the image path
    with pytest.raises(AnimationError, match="broken.mp4: not a readable image or video"):
        files.source_video_info(media["broken"])


def test_with_landmarks_each_source_frame_has_its_own_crop():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (3, 90, 100, 3), dtype=np.uint8)
    points = [rng.uniform(30, 60, (203, 2)) for _ in range(3)]

    class Tracker:  # a landmark model's tracking, as LandmarkModel.track answers
        def track(self, frames, what):
            return points

    crops, found = portrait_crop.source_video_crops(frames, Tracker(), what="clip")
    crops = list(crops)
    np.testing.assert_array_equal(found, np.stack(points))
    for p, crop in zip(points, crops):
        face = portrait_crop.frame_from_points(p, portrait_crop.SOURCE)
        np.testing.assert_allclose(crop.o2c, portrait_crop.crop_matrix(face, 512))
    assert np.abs(crops[0].c2o - crops[1].c2o).max() > 0.1


def test_animate_command_with_a_source_video(weights, media, tmp_path):
    """Paste-back into each source frame (cropped by the first frame's face box), min(4, 6)
    frames at the source's 10 fps, with the source's audio (the driving video has none)."""
    out = tmp_path / "out.mp4"
    run = jaxtalk(
        "animate", f"--weights={weights}", f"--source={media['source']}",
        f"--driving={media['driving']}", f"--out={out}", "--paste_back",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    frames, fps = read_video(out)
    assert frames.shape == (4, 256, 256, 3) and fps == 10.0
    assert probe(out).audio_sample_rate
    assert "wrote 4 frames (0.4 s)" in run.stdout
    source, _ = read_video(media["source"])
    crop, _ = portrait_crop.source_crop(source[0])
    mask = np.asarray(portrait_crop.paste_mask(crop.c2o, (256, 256)))[..., 0]
    diff = lambda a, b: np.abs(a.astype(float) - b)[mask == 0].mean()  # noqa: E731
    assert diff(frames[3], source[3]) < 3 < diff(frames[3], source[0])  # its own frame
    assert np.abs(frames.astype(float) - source)[:, mask > 0.999].mean() > 20  # animated
    bad = jaxtalk(
        "animate", f"--weights={weights}", f"--source={media['broken']}",
        f"--driving={media['driving']}", f"--out={tmp_path / 'x.mp4'}",
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    lines = [line for line in bad.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and media["broken"] in lines[0], bad.stderr[-2000:]
    assert "not a readable image or video" in lines[0]
