"""The AniPortrait pose image: MediaPipe topology and the release's drawing.

The structure tests need nothing optional. The parity tests compare with MediaPipe's
connection sets and with the release's `FaceMeshVisualizer` pixel for pixel; they run when
mediapipe (0.10.x, with `solutions`) is importable and, for the pixels, when
ANIPORTRAIT_CODE points at the release (Zejun-Yang/AniPortrait's root). mediapipe 0.10.11's
generated protos need protobuf < 4, so install both apart from the main environment:

    pip install --no-deps --target /tmp/mp mediapipe==0.10.11 "protobuf<4"
    PYTHONPATH=.:/tmp/mp ANIPORTRAIT_CODE=/path/to/AniPortrait pytest -n 0 tests/media/test_face_mesh.py
"""

import os
import sys

import numpy as np
import pytest

from jaxtalk.media import face_mesh

COLOURS = {p.colour for p in face_mesh.DRAWN}


def _face(rng, n=face_mesh.NUM_POINTS):
    """Points spread over the middle of the canvas (not a face: every edge is checked alike)."""
    return rng.uniform(0.15, 0.85, (n, 2)).astype(np.float32)


def test_parts_topology():
    lips = [p for p in face_mesh.DRAWN if p.name.startswith("lips_")]
    assert len(lips) == 8 and all(len(p.edges) == 5 for p in lips)
    assert len(face_mesh.PARTS["face_oval"].edges) == 26
    assert len(face_mesh.PARTS["face_oval_full"].edges) == 36
    for name in ("left_eye", "right_eye"):
        assert len(face_mesh.PARTS[name].edges) == 16 and len(face_mesh.PARTS[name].points) == 16
    # The custom oval is the full oval less the forehead (21 -> 10 -> 251).
    full = set(face_mesh.FACE_OVAL.edges)
    assert set(face_mesh.PARTS["face_oval"].edges) < full
    # Distinct colours, so each lip part can be told apart in the drawing.
    assert len(COLOURS) == len(face_mesh.DRAWN)
    drawn_points = {i for p in face_mesh.DRAWN for i in p.points}
    assert max(drawn_points) < face_mesh.NUM_VERTICES  # the irises are not drawn


def test_each_part_drawn_in_its_colour_and_nothing_else():
    rng = np.random.default_rng(0)
    pts = _face(rng)
    image = face_mesh.draw_face_mesh(pts, 512)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    colours = {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0)}
    assert colours <= COLOURS | {(0, 0, 0)}
    assert colours >= COLOURS  # every part shows
    # Each part alone: its colour along every one of its edges.
    for part in face_mesh.DRAWN:
        for a, b in part.edges:
            mid = np.floor((pts[a] + pts[b]) / 2 * 512).astype(int)
            window = image[mid[1] - 2 : mid[1] + 3, mid[0] - 2 : mid[0] + 3].reshape(-1, 3)
            if not (window == part.colour).all(-1).any():
                # another part's line may cross the midpoint; then it must be a drawn colour
                assert {tuple(c) for c in window} & COLOURS, (part.name, a, b)


def test_lines_scale_with_size_and_points_off_canvas_drop_their_edges():
    rng = np.random.default_rng(1)
    pts = _face(rng)
    lit = {s: (face_mesh.draw_face_mesh(pts, s).any(-1)).mean() for s in (64, 256, 512, 1024)}
    # Lines of the scaled thickness cover roughly the same fraction of every canvas.
    assert face_mesh.line_thickness(512) == 2 and face_mesh.line_thickness(64) == 1
    assert face_mesh.line_thickness(1024) == 4
    assert 0.5 < lit[1024] / lit[512] < 2 and 0.5 < lit[256] / lit[512] < 2.5
    # The release's path at 64 (draw at 512, bilinear down) loses most of the lines.
    small = face_mesh.draw_face_mesh(pts, 64, release_canvas=True)
    assert small.any(-1).mean() < lit[64]
    # One lip corner off the canvas: its two edges go, the rest stays.
    off = pts.copy()
    off[61] = (1.2, 0.5)
    a, b = face_mesh.draw_face_mesh(pts, 256), face_mesh.draw_face_mesh(off, 256)
    gone = a.any(-1) & ~b.any(-1)
    assert gone.sum() > 0 and not (b.any(-1) & ~a.any(-1)).any()
    # 468 points (a projected mesh without irises) draw the same picture.
    np.testing.assert_array_equal(face_mesh.draw_face_mesh(pts[:468], 256), a)
    frames = face_mesh.draw_face_meshes(np.stack([pts, off]).reshape(2, -1), 256)
    np.testing.assert_array_equal(frames[1], b)
    with pytest.raises(ValueError, match="468"):
        face_mesh.draw_face_mesh(pts[:100], 256)


def _mediapipe_face_mesh():
    mp = pytest.importorskip("mediapipe")
    solutions = getattr(mp, "solutions", None)
    if solutions is None:
        pytest.skip("mediapipe without `solutions` (needs 0.10.x, as the release)")
    return solutions.face_mesh


def test_topology_matches_mediapipe():
    fm = _mediapipe_face_mesh()
    parts = face_mesh.PARTS
    for name, mp_set in (
        ("face_oval_full", fm.FACEMESH_FACE_OVAL),
        ("left_eye", fm.FACEMESH_LEFT_EYE),
        ("right_eye", fm.FACEMESH_RIGHT_EYE),
        ("left_eyebrow", fm.FACEMESH_LEFT_EYEBROW),
        ("right_eyebrow", fm.FACEMESH_RIGHT_EYEBROW),
        ("left_iris", fm.FACEMESH_LEFT_IRIS),
        ("right_iris", fm.FACEMESH_RIGHT_IRIS),
    ):
        assert set(parts[name].edges) == set(mp_set), name  # oriented as MediaPipe's
    lips = {e for p in face_mesh.DRAWN if p.name.startswith("lips_") for e in p.edges}
    assert lips == set(fm.FACEMESH_LIPS)


@pytest.mark.skipif(not os.environ.get("ANIPORTRAIT_CODE"), reason="ANIPORTRAIT_CODE not set")
def test_pixels_match_the_release():
    _mediapipe_face_mesh()
    sys.path.insert(0, os.environ["ANIPORTRAIT_CODE"])
    try:
        from src.utils.draw_util import FaceMeshVisualizer  # the release's module
    except (ImportError, AttributeError, TypeError) as e:  # protobuf >= 4 under mediapipe 0.10
        pytest.skip(f"the release's draw_util does not import here: {e}")
    finally:
        sys.path.remove(os.environ["ANIPORTRAIT_CODE"])
    vis = FaceMeshVisualizer(forehead_edge=False)
    rng = np.random.default_rng(2)
    for trial in range(6):
        pts = _face(rng)
        if trial % 2:  # some points off the canvas, some exactly on its edges
            pts[rng.integers(0, 478, 20)] = rng.uniform(-0.2, 1.2, (20, 2))
            pts[rng.integers(0, 478, 4)] = (1.0, 0.0)
        for size in (512, 256):
            want = vis.draw_landmarks((size, size), pts, normed=True)
            got = face_mesh.draw_face_mesh(pts, size, release_canvas=True)
            np.testing.assert_array_equal(got, want, err_msg=f"trial {trial} size {size}")
