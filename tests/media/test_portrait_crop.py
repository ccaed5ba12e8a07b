"""LivePortrait's crop geometry, warps, paste-back, eye/lip ratios and the landmark model
(a random landmark-shaped ONNX net, against onnxruntime)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.media import face_detect
from jaxtalk.media import portrait_crop as pc

rng = np.random.default_rng(0)


def upright_face(center=(200.0, 150.0), size=100.0, seed=0) -> np.ndarray:
    """203 points of an upright face: scattered inside an ellipse, the eye and mouth points
    the crop reads where an upright face has them."""
    r = np.random.default_rng(seed)
    angle, radius = r.uniform(0, 2 * np.pi, 203), np.sqrt(r.uniform(0, 1, 203))
    pts = np.stack([0.4 * radius * np.cos(angle), 0.5 * radius * np.sin(angle)], -1)
    pts[[0, 6, 12, 18]] = [(-0.3, -0.1), (-0.2, -0.13), (-0.1, -0.1), (-0.2, -0.07)]
    pts[[24, 30, 36, 42]] = [(0.1, -0.1), (0.2, -0.13), (0.3, -0.1), (0.2, -0.07)]
    pts[[48, 66]] = [(-0.12, 0.25), (0.12, 0.25)]
    pts[[90, 102]] = [(0.0, 0.22), (0.0, 0.28)]
    return np.asarray(center) + size * pts


def rotate(points, theta, pivot=(0.0, 0.0)):
    c, s = math.cos(theta), math.sin(theta)
    return (points - pivot) @ np.array([[c, -s], [s, c]]).T + pivot


def smooth_image(height=300, width=400, channels=3):
    y, x = np.mgrid[0:height, 0:width] / 40.0
    planes = [np.sin(x + k) * np.cos(0.7 * y - k) for k in range(channels)]
    return (127.5 + 100 * np.stack(planes, -1)).astype(np.float32)


def test_crop_follows_the_face_and_undoes_its_roll():
    face = upright_face()
    up = pc.frame_from_points(face, pc.SOURCE)
    assert up.angle == pytest.approx(0.0, abs=1e-12)
    extent = face.max(0) - face.min(0)  # upright: the axes are the image's
    assert up.size == pytest.approx(extent.max() * 2.3)
    middle = (face.max(0) + face.min(0)) / 2
    np.testing.assert_allclose(up.center, middle + [0, -0.125 * up.size])
    theta = 0.4
    tilted = rotate(face, theta, pivot=(50.0, 80.0))
    frame = pc.frame_from_points(tilted, pc.SOURCE)
    assert frame.angle == pytest.approx(theta)
    assert frame.size == pytest.approx(up.size)
    # the same face lands on the same crop pixels however it is rolled
    in_crop = pc.transform_points(tilted, pc.crop_matrix(frame, 512))
    np.testing.assert_allclose(
        in_crop, pc.transform_points(face, pc.crop_matrix(up, 512)), atol=1e-9
    )
    assert np.all((in_crop > 0) & (in_crop < 512))
    # unrotated (driving) crops keep the roll
    kept = pc.transform_points(tilted, pc.crop_matrix(frame, 512, rotate=False))
    assert not np.allclose(kept, in_crop, atol=1)


def test_other_landmark_layouts_and_bad_counts():
    face = upright_face()
    five = np.stack(
        [face[[0, 12]].mean(0), face[[24, 36]].mean(0), face.mean(0), face[48], face[66]]
    )
    ux, uy = pc.face_axes(five)
    np.testing.assert_allclose(ux, [1, 0], atol=1e-12)
    np.testing.assert_allclose(uy, [0, 1], atol=1e-12)
    with pytest.raises(pc.LandmarkError, match="7 landmarks"):
        pc.face_axes(face[:7])


def test_driving_box_is_the_average_square():
    a, b = upright_face((200, 150), 100), upright_face((220, 140), 110, seed=1)
    box = pc.driving_box([a, rotate(b, 0.2, b.mean(0))])
    boxes = []
    for pts in (a, rotate(b, 0.2, b.mean(0))):
        f = pc.frame_from_points(pts, pc.DRIVING)
        boxes.append([*(f.center - f.size / 2), *(f.center + f.size / 2)])
    np.testing.assert_allclose(box, np.mean(boxes, 0))
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])
    with pytest.raises(pc.LandmarkError):
        pc.driving_box([])


def test_warp_matches_cv2_warp_affine():
    cv2 = pytest.importorskip("cv2")
    image = smooth_image()
    frame = pc.FaceFrame(np.array([180.0, 140.0]), 170.0, 0.35)
    matrix = pc.crop_matrix(frame, 256)
    want = cv2.warpAffine(image, matrix[:2], (256, 256), flags=cv2.INTER_LINEAR)
    got = np.asarray(pc.warp_affine(image, matrix, (256, 256)))
    # cv2 quantises bilinear weights to 1/32; the image moves < 4 levels per pixel
    assert np.abs(got - want).max() < 0.2, np.abs(got - want).max()
    outside = pc.FaceFrame(np.array([0.0, 0.0]), 100.0, 0.0)  # half the crop off the image
    got = np.asarray(pc.warp_affine(image, pc.crop_matrix(outside, 64), (64, 64)))
    assert np.all(got[:30, :30] == 0) and np.all(got[40:, 40:] != 0)


def test_feather_mask():
    mask = pc.feather_mask(512)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[16:497, 16:497].min() == 1.0
    assert mask[0].max() == 0.0 and mask[:, 0].max() == 0.0
    np.testing.assert_allclose(mask[256, :17], np.arange(17) / 16)  # a 16-pixel ramp
    np.testing.assert_allclose(mask[256, -16:], np.arange(16, 0, -1) / 16)
    assert mask[4, 4] < mask[4, 256] - 0.1  # rounded corners
    np.testing.assert_allclose(mask, mask.T)


def test_crop_then_paste_back_restores_the_image_inside_the_mask():
    image = smooth_image()
    frame = pc.FaceFrame(np.array([210.0, 150.0]), 180.0, -0.3)
    crop = pc.crop_frame(image, frame, 512)
    assert crop.image.shape == (512, 512, 3)
    np.testing.assert_allclose(crop.c2o @ crop.o2c, np.eye(3), atol=1e-12)
    mask = np.asarray(pc.paste_mask(crop.c2o, image.shape[:2]))
    assert mask.shape == (300, 400, 1)
    other = np.zeros_like(image)
    pasted = np.asarray(pc.paste_back(crop.image, crop.c2o, other, mask))
    inside, outside = mask[..., 0] > 0.999, mask[..., 0] == 0
    assert inside.sum() > 0.2 * inside.size and outside.sum() > 0.1 * outside.size
    err = np.abs(pasted - image)[inside]
    assert err.max() < 1.0, err.max()  # two bilinear resamplings of a smooth image
    assert np.all(pasted[outside] == 0)
    jitted = jax.jit(pc.paste_back)(crop.image, jnp.asarray(crop.c2o), other, mask)  # traced map
    np.testing.assert_allclose(np.asarray(jitted), pasted, atol=1e-3)
    # uint8 in, uint8 out (truncated, as the release): off by interpolation and one level
    as_uint8 = np.round(image).astype(np.uint8)
    back = np.asarray(pc.paste_back(crop.image, crop.c2o, as_uint8, mask))
    assert back.dtype == np.uint8
    assert np.abs(back.astype(int) - as_uint8)[inside].max() <= 2
    assert np.all(back[outside] == as_uint8[outside])


def test_eye_and_lip_ratios():
    face = upright_face()
    eyes = np.asarray(pc.eye_open_ratio(face))
    np.testing.assert_allclose(eyes, [0.06 / 0.2, 0.06 / 0.2], rtol=1e-5)
    lip = np.asarray(pc.lip_open_ratio(face))
    np.testing.assert_allclose(lip, [0.06 / 0.24], rtol=1e-5)
    closed = face.copy()
    closed[18] = closed[6]  # left lids touch
    moved = 3.0 * rotate(face, 1.0) + 17  # ratios ignore position, size and roll
    batch = np.stack([face, closed, moved])
    got = np.asarray(pc.eye_open_ratio(batch))
    assert got.shape == (3, 2) and np.asarray(pc.lip_open_ratio(batch)).shape == (3, 1)
    assert got[1, 0] == 0 and got[1, 1] == pytest.approx(eyes[1], rel=1e-5)
    np.testing.assert_allclose(got[2], eyes, rtol=1e-5)


# ----------------------------------------------------------------------------- the model


def landmark_model(path) -> pc.LandmarkModel:
    from jaxtalk.convert import onnx_graph

    return pc.LandmarkModel(onnx_graph.load(path))


@pytest.fixture(scope="module")
def landmark_onnx(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from tests.convert.onnx_models import conv_next_landmarks, export_torch

    path = tmp_path_factory.mktemp("lmk") / "landmark.onnx"
    return export_torch(conv_next_landmarks(), torch.zeros(1, 3, 224, 224), path, opset=11)


@pytest.fixture(scope="module")
def astronaut():
    return pytest.importorskip("skimage.data").astronaut()


def test_landmark_model_matches_onnxruntime(landmark_onnx, astronaut):
    from tests.convert.onnx_models import run_ort

    model = landmark_model(landmark_onnx)
    face = upright_face((226, 125), 90)
    frame = pc.frame_from_points(face, pc.LANDMARK_INPUT)
    crop = pc.crop_frame(astronaut, frame, 224)
    x = np.transpose(np.asarray(crop.image)[None] / 255.0, (0, 3, 1, 2)).astype(np.float32)
    want = run_ort(landmark_onnx, {"input": x})[2].reshape(203, 2) * 224
    got = model.predict_crops(np.asarray(crop.image)[None])[0]
    err = np.abs(got - want).max()
    assert err < 224 * 1e-5, err
    points = model(astronaut, face)
    np.testing.assert_allclose(points, pc.transform_points(want, crop.c2o), atol=224 * 1e-5)
    print(f"landmark net vs onnxruntime: max error {err:.2e} px of 224")


def test_landmark_model_without_landmarks_uses_the_detector(landmark_onnx, astronaut):
    model = landmark_model(landmark_onnx)
    points = model(astronaut)
    assert points.shape == (203, 2) and np.all(np.isfinite(points))
    tracked = model.track([astronaut, astronaut])
    np.testing.assert_allclose(tracked[0], points)
    np.testing.assert_allclose(tracked[1], model(astronaut, points))
    with pytest.raises(face_detect.NoFaceError, match="blank.png"):
        model(np.zeros((128, 128, 3), np.uint8), what="blank.png")
    crop, found = pc.source_crop(astronaut, model)
    np.testing.assert_allclose(found, points)
    assert crop.image.shape == (512, 512, 3)


def test_landmark_model_refuses_other_networks(tmp_path):
    from tests.convert.onnx_models import graph_model, helper, save

    node = helper.make_node("Relu", ["x"], ["y"])
    path = save(
        graph_model([node], {"x": np.zeros((1, 3, 64, 64), np.float32)}, {"y": np.float32}),
        tmp_path / "r.onnx",
    )
    with pytest.raises(pc.LandmarkError, match="r.onnx"):
        landmark_model(path)


def test_source_crop_without_a_landmark_model_uses_the_detector_box(astronaut):
    crop, points = pc.source_crop(astronaut)
    assert points is None and crop.image.shape == (512, 512, 3)
    x0, y0, x1, y1 = face_detect.face_box(astronaut)
    centre = pc.transform_points(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), crop.o2c)
    np.testing.assert_allclose(centre, [256, 256 + 0.125 * 512], atol=1e-6)
    side = 512 / (max(x1 - x0, y1 - y0) * 2.3)
    np.testing.assert_allclose(crop.o2c[:2, :2], side * np.eye(2), atol=1e-12)
