"""jaxtalk's LivePortrait crop against the release's own functions (src/utils/crop.py,
retargeting_utils.py, human_landmark_runner.py and the mask template): the same crop
matrices and driving box, crops within cv2's fixed-point interpolation, the same ratios,
the generated mask within one level of the template, and the landmark runner's points
from a random landmark-shaped ONNX net. Needs the official code, so only runs when told
where it is:

    LIVEPORTRAIT_CODE=/path/to/LivePortrait pytest -n 0 -s tests/media/test_portrait_crop_official_parity.py
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from jaxtalk.media import portrait_crop as pc
from tests.media.test_portrait_crop import landmark_model, rotate, smooth_image, upright_face

CODE = os.environ.get("LIVEPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="LIVEPORTRAIT_CODE (official checkout) not set")


@pytest.fixture(scope="module")
def official():
    pytest.importorskip("cv2")
    sys.path.insert(0, CODE)
    from src.utils import crop, retargeting_utils

    return crop, retargeting_utils


def faces():
    return [
        upright_face(),
        rotate(upright_face((260, 180), 120, seed=1), 0.5, (260, 180)),
        rotate(upright_face((150, 200), 80, seed=2), -0.8, (0, 0)) + 40,
    ]


def test_crop_matrices_and_driving_box(official):
    crop, _ = official
    for face in faces():
        got = pc.crop_matrix(pc.frame_from_points(face, pc.SOURCE), 512)
        want = crop.crop_image(
            np.zeros((400, 400, 3), np.uint8), face, dsize=512, scale=2.3, vy_ratio=-0.125
        )
        np.testing.assert_allclose(got, want["M_o2c"], rtol=1e-5, atol=1e-3)
        got = pc.crop_matrix(pc.frame_from_points(face, pc.LANDMARK_INPUT), 224)
        want = crop.crop_image(
            np.zeros((400, 400, 3), np.uint8), face, dsize=224, scale=1.5, vy_ratio=-0.1
        )
        np.testing.assert_allclose(got, want["M_o2c"], rtol=1e-5, atol=1e-3)
    boxes = [crop.parse_bbox_from_landmark(f, scale=2.2, vy_ratio=-0.1)["bbox"] for f in faces()]
    want = crop.average_bbox_lst([[b[0, 0], b[0, 1], b[2, 0], b[2, 1]] for b in boxes])
    np.testing.assert_allclose(pc.driving_box(faces()), want, rtol=1e-5, atol=1e-3)
    box = want
    got = pc.crop_matrix(pc.FaceFrame((np.array(box[:2]) + box[2:]) / 2, box[2] - box[0], 0.0), 512)
    ref = crop.crop_image_by_bbox(np.zeros((400, 400, 3), np.uint8), box, dsize=512)["M_o2c"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_crop_and_paste_back_images(official):
    crop, _ = official
    image = np.round(smooth_image(400, 400)).astype(np.uint8)
    face = faces()[1]
    want = crop.crop_image(image, face, dsize=512, scale=2.3, vy_ratio=-0.125)
    mine = pc.crop_frame(image, pc.frame_from_points(face, pc.SOURCE), 512)
    diff = np.abs(np.asarray(mine.image) - want["img_crop"]).max(-1)
    covered = np.asarray(pc.warp_affine(np.ones((400, 400, 1)), mine.o2c, (512, 512)))[..., 0]
    # cv2 rounds to uint8 and quantises weights to 1/32 pixel, which shows where the crop
    # blends the image's last pixels with the zeros outside it
    assert diff[covered > 0.999].max() <= 0.6 and diff.max() <= 8, diff.max()
    diff = diff[covered > 0.999].max()
    template = np.asarray(
        __import__("cv2").imread(os.path.join(CODE, "src/utils/resources/mask_template.png"))
    )
    mask_diff = np.abs(pc.feather_mask(512) * 255 - template[..., 0]).max()
    assert mask_diff <= 1.0, mask_diff
    animated = np.round(smooth_image(512, 512)[:, ::-1]).astype(np.uint8)
    mask_ori = crop.prepare_paste_back(template, want["M_c2o"], dsize=(400, 400))
    ref = crop.paste_back(animated, want["M_c2o"], image, mask_ori)
    got = np.asarray(pc.paste_back(animated, mine.c2o, image, pc.paste_mask(mine.c2o, (400, 400))))
    err = np.abs(got.astype(int) - ref)
    assert np.percentile(err, 99.9) <= 2 and err.max() <= 6, (np.percentile(err, 99.9), err.max())
    print(f"crop max diff {diff:.2f}, mask {mask_diff:.2f} levels, paste-back max {err.max()}")


def test_ratios(official):
    _, retargeting = official
    batch = np.stack(faces())
    np.testing.assert_allclose(
        pc.eye_open_ratio(batch), retargeting.calc_eye_close_ratio(batch), rtol=1e-5
    )
    np.testing.assert_allclose(
        pc.lip_open_ratio(batch), retargeting.calc_lip_close_ratio(batch), rtol=1e-5
    )


def test_landmark_runner(official, tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from src.utils.human_landmark_runner import LandmarkRunner

    from tests.convert.onnx_models import conv_next_landmarks, export_torch

    path = export_torch(conv_next_landmarks(), torch.zeros(1, 3, 224, 224), tmp_path / "l.onnx", 11)
    runner = LandmarkRunner(ckpt_path=path, onnx_provider="cpu")
    image = pytest.importorskip("skimage.data").astronaut()
    prior = upright_face((226, 125), 90)
    want = runner.run(image, prior)
    got = landmark_model(path)(image, prior)
    err = np.abs(got - want).max()
    assert err < 0.05, err  # pixels; the crops differ by cv2's uint8 rounding only
    print(f"landmark runner vs LandmarkModel: max {err:.4f} px")
