"""The synthetic set's exact MediaPipe-topology landmarks: on the drawn face, moving with it."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data_pipelines import clip_store, process
from data_pipelines.clip_spec import ClipSpec
from data_pipelines.synthetic import face, mesh
from jaxtalk.media import face_mesh as topology

MOUTH_INSIDE = (60, 15, 25)
EYE_WHITE = (245, 245, 245)


def _frame(ident, yaw=0.0, pitch=0.0, roll=0.0, mouth=0.0, blink=0.0):
    """A 256 frame and its landmarks in pixels [478, 2]."""
    pose = dict(cx=128.0, cy=120.0, head_height=130.0)
    image, _ = face.Renderer(ident).render(yaw, pitch, roll, *pose.values(), mouth, blink)
    att = mesh.video_attributes(
        ident, [yaw], [pitch], [roll], *([v] for v in pose.values()), [mouth], [blink]
    )
    return image, att["face_mesh_xy"].reshape(-1, 2)


def _colours_at(image, xy):
    ij = np.round(xy).astype(int)
    return image[ij[:, 1], ij[:, 0]]


def _towards(xy, centre, pixels):
    d = centre - xy
    return xy + pixels * d / np.linalg.norm(d, axis=-1, keepdims=True)


def _points(*names):
    return sorted({i for n in names for i in topology.PARTS[n].points})


@pytest.fixture(scope="module")
def ident():
    return face.random_identity(np.random.default_rng(5), 256, 256)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (12, -5, 6), (-15, 4, -4)])
def test_mesh_lies_on_the_drawn_features(ident, yaw, pitch, roll):
    image, xy = _frame(ident, yaw, pitch, roll, mouth=0.8)
    # Lips: just inside the outer ring is lip colour or the mouth's inside; just inside the
    # inner ring is the mouth's inside.
    outer = _points(*(f"lips_outer_{h}_{s}" for h in ("top", "bottom") for s in ("left", "right")))
    inner = _points(*(f"lips_inner_{h}_{s}" for h in ("top", "bottom") for s in ("left", "right")))
    centre = xy[inner].mean(0)
    got = _colours_at(image, _towards(xy[outer], centre, 2.0))
    lips = (got == ident.lips).all(-1) | (got == MOUTH_INSIDE).all(-1)
    assert lips.mean() > 0.9, got
    got = _colours_at(image, _towards(xy[inner], centre, 2.0))
    assert (got == MOUTH_INSIDE).all(-1).mean() > 0.9, got
    # Eyes open: inside the contour is the eye white or the iris.
    for name, iris in (("right_eye", 468), ("left_eye", 473)):
        pts = _points(name)
        got = _colours_at(image, _towards(xy[pts], xy[iris], 1.5))
        eye = (got == EYE_WHITE).all(-1) | (got == ident.eye).all(-1)
        assert eye.mean() > 0.85, (name, got)
        assert (_colours_at(image, xy[[iris]]) == ident.eye).all()
    # Brows: the lower and upper edge points pair up across the drawn (hair-coloured) brow.
    for name in ("right_eyebrow", "left_eyebrow"):
        lower, upper = (list(c) for c in topology.PARTS[name].chains)
        middle = (xy[lower] + xy[upper])[1:-1] / 2  # the ends taper to a pixel's width
        got = _colours_at(image, middle)
        assert (got == ident.hair).all(-1).all(), got
        assert (xy[lower, 1] > xy[upper, 1] - 0.5).all()  # the lower edge is lower (small roll)
    # Face oval: skin a few pixels inside, something else a few pixels outside, on the side
    # turning away (on the other, the side of the head shows beyond it, as beyond a jaw line).
    oval = np.array(_points("face_oval_full"))
    head = xy[oval].mean(0)
    near = oval[np.sign(xy[oval, 0] - head[0]) == np.sign(yaw)] if yaw else oval
    inside = _colours_at(image, _towards(xy[near], head, 4.0))
    outside = _colours_at(image, _towards(xy[near], head, -4.0))
    assert (inside == ident.skin).all(-1).mean() > 0.9, inside
    assert (outside != ident.skin).any(-1).mean() > 0.9, outside


def test_mouth_and_eyes_move_with_speech_and_blinks(ident):
    rng = np.random.default_rng(0)
    frames = 60
    mouth = rng.uniform(0, 1, frames)
    blink = rng.uniform(0, 1, frames)
    zeros = np.zeros(frames)
    att = mesh.video_attributes(
        ident, zeros, zeros, zeros, zeros + 64, zeros + 64, zeros + 60, mouth, blink
    )
    verts = att["face_mesh"].reshape(frames, 468, 3)
    opening = np.linalg.norm(verts[:, 14] - verts[:, 13], axis=-1)
    eye = np.linalg.norm(verts[:, 145] - verts[:, 159], axis=-1)
    assert np.corrcoef(opening, mouth)[0, 1] > 0.999
    assert np.corrcoef(eye, blink)[0, 1] < -0.999
    # Lids and lips move, but for the corners; the rest of the mesh is rigid in the head frame.
    moving = set(np.flatnonzero(np.abs(verts - verts[:1]).max((0, 2)) > 1e-7))
    lids_and_lips = set(_points("right_eye", "left_eye"))
    lids_and_lips |= {i for p in topology.DRAWN if p.name.startswith("lips_") for i in p.points}
    corners = {33, 133, 263, 362, 61, 291, 78, 308}
    assert moving == lids_and_lips - corners
    assert att["face_mesh_xy"].shape == (frames, 956) and att["head_pose"].shape == (frames, 6)


def test_pose_and_crop_mapping_reproject_the_landmarks(tmp_path, ident):
    """In the crop, xy = (R(angles) @ v)[:2] * pose[5] + pose[3:5] holds exactly."""
    rng = np.random.default_rng(1)
    n = 30
    yaw, pitch, roll = (rng.uniform(-20, 20, n) for _ in range(3))
    cx, cy, size = rng.uniform(100, 150, n), rng.uniform(90, 130, n), rng.uniform(100, 140, n)
    mouth, blink = rng.uniform(0, 1, n), np.zeros(n)
    att = mesh.video_attributes(ident, yaw, pitch, roll, cx, cy, size, mouth, blink)
    path = tmp_path / "a.npz"
    np.savez(path, fps=np.float32(25), **att)
    spec = ClipSpec("c", "synthetic", "v.mp4", "id", "train", attributes_path=str(path))
    box = (40, 30, 180, 180)
    got = process._load_attributes(spec, 0.0, n, 25.0, box)
    pose, xy = got["head_pose"], got["face_mesh_xy"].reshape(n, 478, 2)
    np.testing.assert_allclose(xy, (att["face_mesh_xy"].reshape(n, 478, 2) - box[:2]) / box[2])
    verts = att["face_mesh"].reshape(n, 468, 3)
    rot = Rotation.from_euler("xyz", pose[:, :3], degrees=True).as_matrix()
    again = np.einsum("fij,fnj->fni", rot[:, :2], verts) * pose[:, 5:, None] + pose[:, None, 3:5]
    np.testing.assert_allclose(again, xy[:, :468], atol=2e-5)


def test_prepared_synthetic_records_carry_the_mesh(synthetic_dir):
    store = clip_store.ClipStore.open(synthetic_dir, "train")
    clip = store.clip(0)
    att = clip.header["attributes"]
    n = clip.num_frames
    assert att["face_mesh"].shape == (n, 1404) and att["head_pose"].shape == (n, 6)
    assert att["face_mesh_xy"].shape == (n, 956)
    xy = att["face_mesh_xy"].reshape(n, 478, 2)
    assert 0 < xy.min() and xy.max() < 1  # the face is inside its crop
    # The 5-point landmarks (eyes, nose, mouth corners) agree with the mesh: the nose tip.
    np.testing.assert_allclose(att["landmarks_xy"][:, 4:6], xy[:, 1], atol=1e-5)
    # The mesh's mouth opening is the renderer's `mouth` value, as written with the video.
    verts = att["face_mesh"].reshape(n, 468, 3)
    opening = np.linalg.norm(verts[:, 14] - verts[:, 13], axis=-1)
    assert np.corrcoef(opening, att["mouth"][:, 0])[0, 1] > 0.999
