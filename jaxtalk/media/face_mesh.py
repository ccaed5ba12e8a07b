"""MediaPipe's 478-point face mesh as AniPortrait uses it: the parts' topology and the pose image.

AniPortrait conditions its video model on a drawing of face landmarks in MediaPipe's mesh
topology (468 vertices + 2 x 5 iris points): a black 512 canvas with coloured polylines
for a custom face oval (jaw and temples, no forehead), both eyes, both brows and the lips
in eight parts (outer/inner x top/bottom x left/right, each its own colour, so the mouth's
opening reads off the colours). Irises and points are not drawn; the release resizes the
512 drawing to the sample size (bilinear).

Colours: the release draws its tuples into a fresh canvas with OpenCV and gives that array
to the model unconverted, both in training (`FaceDataset`) and in `pose2vid` (which undoes
its own RGB->BGR swap), so a tuple's first value is the first channel. jaxtalk's images are
RGB, and the tuples below are written to R, G, B in that order: the same arrays the
released PoseGuider saw.

Chains are polylines: consecutive indices are the edges, in the orientation MediaPipe's
connection sets give them (OpenCV's thick lines are drawn from the first point).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

NUM_VERTICES = 468  # the mesh proper (what Audio2Mesh predicts, x3)
NUM_POINTS = 478  # + the two irises, 5 points each (centre first)
RELEASE_CANVAS = 512  # the release draws here with lines 2 px thick
RELEASE_THICKNESS = 2


@dataclasses.dataclass(frozen=True)
class Part:
    """One named group of landmarks: polylines and the release's colour (None: not drawn)."""

    name: str
    chains: tuple[tuple[int, ...], ...]
    colour: tuple[int, int, int] | None = None

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        return tuple(e for c in self.chains for e in zip(c[:-1], c[1:]))

    @property
    def points(self) -> tuple[int, ...]:
        return tuple(sorted({i for c in self.chains for i in c}))


# "Right"/"left" are the subject's (MediaPipe's names): the right eye is on the image's left.
# The lip parts keep the release's names, where "left" is the image's left (point 61).
DRAWN = (
    # The release's custom oval: temple (251) round the jaw to the other temple (21).
    Part(
        "face_oval",
        (
            (251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152)
            + (148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21),
        ),
        (10, 200, 10),
    ),
    Part(
        "left_eye",
        (
            (263, 249, 390, 373, 374, 380, 381, 382, 362),
            (263, 466, 388, 387, 386, 385, 384, 398, 362),
        ),
        (180, 200, 10),
    ),
    Part("left_eyebrow", ((276, 283, 282, 295, 285), (300, 293, 334, 296, 336)), (180, 220, 10)),
    Part(
        "right_eye",
        ((33, 7, 163, 144, 145, 153, 154, 155, 133), (33, 246, 161, 160, 159, 158, 157, 173, 133)),
        (10, 200, 180),
    ),
    Part("right_eyebrow", ((46, 53, 52, 65, 55), (70, 63, 105, 66, 107)), (10, 220, 180)),
    Part("lips_outer_bottom_left", ((61, 146, 91, 181, 84, 17),), (10, 180, 20)),
    Part("lips_outer_bottom_right", ((17, 314, 405, 321, 375, 291),), (20, 10, 180)),
    Part("lips_inner_bottom_left", ((78, 95, 88, 178, 87, 14),), (100, 100, 30)),
    Part("lips_inner_bottom_right", ((14, 317, 402, 318, 324, 308),), (100, 150, 50)),
    Part("lips_outer_top_left", ((61, 185, 40, 39, 37, 0),), (20, 80, 100)),
    Part("lips_outer_top_right", ((0, 267, 269, 270, 409, 291),), (80, 100, 20)),
    Part("lips_inner_top_left", ((78, 191, 80, 81, 82, 13),), (120, 100, 200)),
    Part("lips_inner_top_right", ((13, 312, 311, 310, 415, 308),), (150, 120, 100)),
)

# Topology the release does not draw: MediaPipe's full oval (over the forehead, from 10 at
# the top) and the irises (ring; centres 468 right, 473 left).
FACE_OVAL = Part(
    "face_oval_full",
    (
        (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377)
        + (152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109, 10),
    ),
)
RIGHT_IRIS = Part("right_iris", ((469, 470, 471, 472, 469),))
LEFT_IRIS = Part("left_iris", ((474, 475, 476, 477, 474),))
IRIS_CENTRES = {"right": 468, "left": 473}

PARTS = {p.name: p for p in DRAWN + (FACE_OVAL, RIGHT_IRIS, LEFT_IRIS)}


def line_thickness(canvas: int) -> int:
    """The release's 2 px at 512, scaled to the canvas (at least 1)."""
    return max(1, round(RELEASE_THICKNESS * canvas / RELEASE_CANVAS))


def _pixels(points_xy: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's mapping of normalized points to pixels, and which points it keeps.

    The release stores the points in float32 landmark fields; a point outside [0, 1] is
    dropped with its edges; a point at 1 goes to the last pixel.
    """
    pts = np.asarray(points_xy, np.float32).astype(np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < NUM_VERTICES:
        raise ValueError(f"face mesh points must be [>={NUM_VERTICES}, 2], got {pts.shape}")
    keep = np.all((pts >= 0) & ((pts <= 1) | np.isclose(pts, 1, rtol=1e-9, atol=0)), axis=1)
    px = np.minimum(np.floor(np.where(keep[:, None], pts, 0) * canvas), canvas - 1)
    return px.astype(np.int64), keep


def draw_face_mesh(points_xy: np.ndarray, size: int, *, release_canvas: bool = False) -> np.ndarray:
    """The pose image of one face: uint8 [size, size, 3] from points [>=468, 2] in 0..1.

    By default drawn at `size` with lines scaled from the release's 2 px at 512 (a 2 px
    line at 512 shrunk to 64 by bilinear sampling would mostly vanish). `release_canvas`
    draws at 512 and resizes as the release does; at size 512 the two are the same.
    """
    canvas = RELEASE_CANVAS if release_canvas else size
    thickness = line_thickness(canvas)
    px, keep = _pixels(points_xy, canvas)
    image = np.zeros((canvas, canvas, 3), np.uint8)
    for part in DRAWN:
        for a, b in part.edges:
            if keep[a] and keep[b]:
                cv2.line(
                    image,
                    (int(px[a, 0]), int(px[a, 1])),
                    (int(px[b, 0]), int(px[b, 1])),
                    part.colour,
                    thickness,
                )
    if canvas != size:
        image = cv2.resize(image, (size, size))  # the release's cv2 default: bilinear
    return image


def draw_face_meshes(
    points_xy: np.ndarray, size: int, *, release_canvas: bool = False
) -> np.ndarray:
    """`draw_face_mesh` over frames: points [F, N, 2] or [F, N * 2] -> uint8 [F, size, size, 3]."""
    pts = np.asarray(points_xy)
    pts = pts.reshape(pts.shape[0], -1, 2)
    out = np.empty((len(pts), size, size, 3), np.uint8)
    for i, p in enumerate(pts):
        out[i] = draw_face_mesh(p, size, release_canvas=release_canvas)
    return out


def project(vertices: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
    """Mesh vertices [F, N, 3] and `head_pose` [F, 6] (the data's weak perspective:
    extrinsic "xyz" angles in degrees, centre x, y, scale) -> points [F, N, 2] in the
    pose's units (0..1 of the crop for prepared clips): (R @ v)[:2] * scale + centre.
    How speech-driven mesh and pose become the points `draw_face_mesh` takes."""
    pose = np.asarray(head_pose, np.float64)
    rot = Rotation.from_euler("xyz", pose[:, :3], degrees=True).as_matrix()
    xy = np.einsum("fij,fnj->fni", rot[:, :2], np.asarray(vertices, np.float64))
    return xy * pose[:, 5, None, None] + pose[:, None, 3:5]
