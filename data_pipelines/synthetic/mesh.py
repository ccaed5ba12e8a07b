"""The synthetic head's exact face mesh in MediaPipe's 478-point topology, and its pose.

AniPortrait's data are MediaPipe landmarks per frame; the synthetic set carries its own,
exact ones, placed on the features the renderer draws (synthetic/face.py):
  face oval (MediaPipe's 36)    a ring on the head ellipsoid just in front of its rim
                                (80 degrees from the face's axis), so it runs along the
                                outline of the drawn head in a frontal view
  eyes (2 x 16)                 on the eye white's ellipse, corners at its ends; the lids'
                                vertical half-axis is the white's times (1 - blink)
  irises (2 x 5)                centre and ring of the drawn iris (flattened by blinks)
  brows (2 x 10)                upper and lower edge of the drawn brow
  lips (40)                     outer ring on the lips' ellipse, inner ring on the dark
                                mouth's: both open with the `mouth` value
  nose tip (1)                  the drawn tip
  the other 339                 a golden-angle spiral over the face (static)
Everything is in head units (the renderer's head frame: x right, y down, z towards the
camera, frontal). The 2-D landmarks are the renderer's own orthographic projection.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from data_pipelines.synthetic import face
from jaxtalk.media import face_mesh as topology

OVAL_POLAR = np.radians(80.0)  # the oval ring's angle from the face's axis (90 = the rim)
NOSE_TIP = 1  # MediaPipe's nose tip vertex
SPIRAL_RADIUS = 0.9  # of the face's half-axes: the static points stay inside the oval


def _chain(part: str, k: int) -> tuple[int, ...]:
    return topology.PARTS[part].chains[k]


def _outer(side: int) -> float:
    """Disc angle of a side's outer end (eye corner, brow end): the image's left for the
    subject's right (side -1). From it, `+ side * pi` runs along the bottom to the inner
    end and `- side * pi` along the top."""
    return np.pi if side < 0 else 0.0


def _half(disc: face.Disc, chain: tuple[int, ...], t0: float, t1: float, out: np.ndarray):
    """Puts `chain` on `disc` at angles t0 .. t1 (both ends included)."""
    out[list(chain)] = disc.points(np.linspace(t0, t1, len(chain)))


def _inset(disc: face.Disc, chain: tuple[int, ...], t0: float, t1: float, out: np.ndarray):
    """Puts `chain` on `disc` at angles inside t0 .. t1 (ends excluded: two brow edges)."""
    n = len(chain)
    out[list(chain)] = disc.points(t0 + (np.arange(n) + 0.5) / n * (t1 - t0))


class FaceMesh:
    """One identity's landmarks: the static ones once, the moving ones per frame."""

    def __init__(self, ident: face.Identity):
        self.ident = ident
        self.static = np.zeros((topology.NUM_POINTS, 3))
        a, b, c = ident.radii
        ring = _chain("face_oval_full", 0)[:-1]  # 10 at the top, then to the image's right
        phi = -np.pi / 2 + 2 * np.pi * np.arange(len(ring)) / len(ring)
        s = np.sin(OVAL_POLAR)
        self.static[list(ring)] = np.stack(
            [a * s * np.cos(phi), b * s * np.sin(phi), np.full_like(phi, c * np.cos(OVAL_POLAR))], 1
        )
        for side, name in ((-1, "right_eyebrow"), (1, "left_eyebrow")):
            brow, outer = face.brow_disc(ident, side), _outer(side)
            _inset(brow, _chain(name, 0), outer, outer + side * np.pi, self.static)  # lower
            _inset(brow, _chain(name, 1), outer, outer - side * np.pi, self.static)  # upper
        self.static[NOSE_TIP] = face.nose(ident)[1]
        placed = {NOSE_TIP}
        for part in ("face_oval_full", "left_eyebrow", "right_eyebrow", "left_eye", "right_eye"):
            placed |= set(topology.PARTS[part].points)
        placed |= {i for p in topology.DRAWN if p.name.startswith("lips_") for i in p.points}
        rest = [i for i in range(topology.NUM_VERTICES) if i not in placed]
        k = np.arange(len(rest)) + 0.5
        r = SPIRAL_RADIUS * np.sqrt(k / len(rest))
        theta = k * np.pi * (3 - np.sqrt(5))  # the golden angle
        for i, x, y in zip(rest, a * r * np.cos(theta), b * r * np.sin(theta)):
            self.static[i] = face.surface(ident.radii, x, y)[0]

    def vertices(self, mouth: float, blink: float) -> np.ndarray:
        """float64 [478, 3] head-frame landmarks for one frame's mouth opening and blink."""
        ident, out = self.ident, self.static.copy()
        for side, eye_name, iris in ((-1, "right_eye", "right"), (1, "left_eye", "left")):
            white, outer = face.eye_disc(ident, side), _outer(side)
            lids = face.Disc(white.point, white.normal, white.ru, white.rv * (1 - blink))
            _half(lids, _chain(eye_name, 0), outer, outer + side * np.pi, out)  # lower lid
            _half(lids, _chain(eye_name, 1), outer, outer - side * np.pi, out)  # upper lid
            disc = face.iris_disc(ident, side, blink)
            centre = topology.IRIS_CENTRES[iris]
            out[centre] = disc.point
            ring = topology.PARTS[f"{iris}_iris"].chains[0][:-1]
            out[list(ring)] = disc.points(np.arange(4) * np.pi / 2)
        lips, inside = face.lips_disc(ident, mouth), face.mouth_disc(ident, mouth)
        for disc, prefix in ((lips, "lips_outer"), (inside, "lips_inner")):
            # image-left corner (t = pi) over the top (3 pi / 2) or the bottom (pi / 2)
            for half, t1 in (("top", 1.5 * np.pi), ("bottom", 0.5 * np.pi)):
                left = topology.PARTS[f"{prefix}_{half}_left"].chains[0]
                right = topology.PARTS[f"{prefix}_{half}_right"].chains[0]
                _half(disc, left + right[1:], np.pi, 2 * t1 - np.pi, out)
        return out


def rotations(yaw, pitch, roll) -> np.ndarray:
    """The renderer's head-to-camera rotations [F, 3, 3] (degrees in)."""
    return np.stack([face.rotation(y, p, r) for y, p, r in zip(yaw, pitch, roll)])


def project(vertices, rot, cx, cy, head_height) -> np.ndarray:
    """Pixels [F, N, 2] of head-frame points [F, N, 3]: the renderer's projection."""
    xy = np.einsum("fij,fnj->fni", rot[:, :2], vertices)
    return xy * np.asarray(head_height)[:, None, None] + np.stack([cx, cy], 1)[:, None]


def head_pose(rot, cx, cy, head_height) -> np.ndarray:
    """[F, 6]: rotation angles (degrees; scipy's extrinsic "xyz", the release's pose_util
    convention, of the head-to-camera rotation in the renderer's camera frame) and the
    head centre x, y and the head height, in source pixels (`process` maps them into the
    crop: then `xy = (R @ v)[:2] * pose[5] + pose[3:5]` in 0..1 of the crop)."""
    angles = Rotation.from_matrix(rot).as_euler("xyz", degrees=True)
    return np.concatenate([angles, np.stack([cx, cy, head_height], 1)], 1)


def video_attributes(ident: face.Identity, yaw, pitch, roll, cx, cy, head_height, mouth, blink):
    """Per-frame `face_mesh` [F, 468*3] (head units), `head_pose` [F, 6], `face_mesh_xy` [F, 478*2]
    (pixels) for one rendered video."""
    mesh = FaceMesh(ident)
    verts = np.stack([mesh.vertices(m, b) for m, b in zip(mouth, blink)])
    rot = rotations(yaw, pitch, roll)
    frames = len(verts)
    return {
        "face_mesh": verts[:, : topology.NUM_VERTICES].reshape(frames, -1).astype(np.float32),
        "head_pose": head_pose(rot, cx, cy, head_height).astype(np.float32),
        "face_mesh_xy": project(verts, rot, cx, cy, head_height)
        .reshape(frames, -1)
        .astype(np.float32),
    }
