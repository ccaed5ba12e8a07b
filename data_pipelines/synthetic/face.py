"""A simple 3-D head (ellipsoid with eyes, brows, nose, mouth, ears, hair) drawn in 2-D.

Pose is yaw/pitch/roll in degrees; the head is rotated, projected orthographically and
drawn with PIL polygons. Features on the far side of the head are hidden. Each identity
has its own face shape, colours, feature placement and background.

Every shape drawn is part of the person (shirt, neck, hair, ears, face and its features),
so the renderer also knows the exact background mask (MegActor's human-parser mask): it
draws each polygon into a mask image as well (`Renderer.render(..., mask=True)`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw


@dataclasses.dataclass(frozen=True)
class Identity:
    radii: tuple[float, float, float]  # head ellipsoid half-axes (x, y, z), head-height units
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    eye: tuple[int, int, int]
    lips: tuple[int, int, int]
    shirt: tuple[int, int, int]
    eye_gap: float
    eye_height: float
    mouth_width: float
    hair_lift: float  # how far the hair ellipsoid sits above/behind the head
    pitch_hz: float  # voice pitch
    background: np.ndarray  # uint8 [H, W, 3]


MOUTH_Y = 0.25  # height of the mouth's centre on the face (head units, down)


def _colour(rng, lo, hi):
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def random_identity(rng: np.random.Generator, width: int, height: int) -> Identity:
    skin_tone = rng.uniform(0.25, 1.0)
    skin = tuple(
        int(v)
        for v in (np.array([235, 190, 160]) * skin_tone + np.array([20, 15, 10])).clip(0, 255)
    )
    # Background: a two-colour gradient plus soft blobs, so that it has texture.
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    c0, c1 = rng.integers(30, 226, (2, 3))
    angle = rng.uniform(0, np.pi)
    g = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    bg = c0 * (1 - g) + c1 * g
    for _ in range(6):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        bg = bg * (1 - 0.6 * blob) + rng.integers(0, 256, 3) * 0.6 * blob
    return Identity(
        radii=(rng.uniform(0.33, 0.42), rng.uniform(0.45, 0.55), rng.uniform(0.38, 0.45)),
        skin=skin,
        hair=_colour(rng, 10, 200),
        eye=_colour(rng, 20, 160),
        lips=_colour(rng, 120, 220),
        shirt=_colour(rng, 0, 256),
        eye_gap=rng.uniform(0.28, 0.38),
        eye_height=rng.uniform(0.05, 0.15),
        mouth_width=rng.uniform(0.3, 0.4),
        hair_lift=rng.uniform(0.06, 0.16),
        pitch_hz=float(rng.uniform(95, 240)),
        background=bg.clip(0, 255).astype(np.uint8),
    )


def swap_face(target: Identity, donor: Identity) -> Identity:
    """`target` with `donor`'s face, as a face swapper makes it: the inner face (shape,
    skin, eyes, lips, feature placement) changes; hair, shirt and background stay."""
    return dataclasses.replace(
        target,
        radii=donor.radii,
        skin=donor.skin,
        eye=donor.eye,
        lips=donor.lips,
        eye_gap=donor.eye_gap,
        eye_height=donor.eye_height,
        mouth_width=donor.mouth_width,
    )


class _Canvas:
    """PIL drawing on the frame and, when asked, the same shapes (as 0) on a mask that
    starts all background (255)."""

    def __init__(self, frame: Image.Image, mask: bool):
        self.frame = ImageDraw.Draw(frame)
        self.mask_image = Image.new("L", frame.size, 255) if mask else None
        self.mask = ImageDraw.Draw(self.mask_image) if mask else None

    def polygon(self, points, fill):
        self.frame.polygon(points, fill=fill)
        if self.mask is not None:
            self.mask.polygon(points, fill=0)

    def rectangle(self, box, fill):
        self.frame.rectangle(box, fill=fill)
        if self.mask is not None:
            self.mask.rectangle(box, fill=0)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head-to-camera rotation; x right, y down, z towards the camera (degrees in)."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def surface(radii, x, y):
    """Point on the front of the ellipsoid above (x, y), and its normal."""
    a, b, c = radii
    z = c * np.sqrt(max(1e-4, 1 - (x / a) ** 2 - (y / b) ** 2))
    normal = np.array([x / a**2, y / b**2, z / c**2])
    return np.array([x, y, z]), normal / np.linalg.norm(normal)


def _silhouette(radii, rot, centre, scale, offset, n=40):
    """Outline polygon of the rotated ellipsoid (exact under orthographic projection)."""
    cov = rot @ np.diag(np.square(radii)) @ rot.T
    vals, vecs = np.linalg.eigh(cov[:2, :2])
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = vecs @ (np.sqrt(vals)[:, None] * np.stack([np.cos(t), np.sin(t)]))
    c = (rot @ offset)[:2]
    return (pts.T + c) * scale + centre


def disc_points(point, normal, ru, rv, t) -> np.ndarray:
    """Points [len(t), 3] of the ellipse in the plane tangent at `point`: u across, v down.

    Angle t = 0 is towards +x (image right), pi / 2 down, pi left, 3 pi / 2 up.
    """
    # u = y x normal, v = normal x u, written out: np.cross costs more than the drawing.
    nx, ny, nz = (float(c) for c in normal)
    length = np.sqrt(nz * nz + nx * nx)
    u = np.array([nz / length, 0.0, -nx / length])
    v = np.array([ny * u[2], nz * u[0] - nx * u[2], -ny * u[0]])
    t = np.asarray(t, np.float64)
    return point + ru * np.cos(t)[:, None] * u + rv * np.sin(t)[:, None] * v


@dataclasses.dataclass(frozen=True)
class Disc:
    """A flat elliptic feature on the head: centre, normal, half-axes (head units)."""

    point: np.ndarray
    normal: np.ndarray
    ru: float
    rv: float

    def points(self, t) -> np.ndarray:
        return disc_points(self.point, self.normal, self.ru, self.rv, t)


# The features' geometry, in the head frame (before pose); the renderer draws these discs
# and the face mesh (synthetic/mesh.py) puts its landmarks on them.
def eye_disc(ident: Identity, side: int) -> Disc:
    """The eye white; side -1 is the image's left (the subject's right eye)."""
    p, n = surface(ident.radii, side * ident.eye_gap / 2, -ident.eye_height)
    return Disc(p, n, 0.075, 0.045)


def iris_disc(ident: Identity, side: int, blink: float) -> Disc:
    eye = eye_disc(ident, side)
    return Disc(eye.point + 0.005 * eye.normal, eye.normal, 0.032, 0.032 * (1 - blink) + 1e-3)


def eyelid_disc(ident: Identity, side: int, blink: float) -> Disc:
    eye = eye_disc(ident, side)
    return Disc(eye.point + 0.01 * eye.normal, eye.normal, 0.09, 0.056 * blink)


def brow_disc(ident: Identity, side: int) -> Disc:
    p, n = surface(ident.radii, side * ident.eye_gap / 2, -ident.eye_height - 0.09)
    return Disc(p, n, 0.08, 0.014)


def lips_disc(ident: Identity, mouth: float) -> Disc:
    # A wide-opening, cartoon mouth: at 64x64 crops it still spans several pixels, so the
    # speech-driven motion is a visible part of every frame.
    p, n = surface(ident.radii, 0.0, MOUTH_Y)
    return Disc(p, n, ident.mouth_width / 2, 0.02 + 0.17 * mouth)


def mouth_disc(ident: Identity, mouth: float) -> Disc:
    """The dark inside of the open mouth, just in front of the lips."""
    lips = lips_disc(ident, mouth)
    return Disc(lips.point + 0.004 * lips.normal, lips.normal, lips.ru * 0.8, 0.004 + 0.15 * mouth)


def nose(ident: Identity) -> tuple[np.ndarray, np.ndarray]:
    """The nose's root on the surface and its tip."""
    pn, nn = surface(ident.radii, 0.0, 0.07)
    return pn, pn + 0.07 * nn


class Renderer:
    """Draws one identity at a given pose, mouth opening and blink."""

    def __init__(self, ident: Identity):
        self.ident = ident
        self.h, self.w = ident.background.shape[:2]
        self.bg = Image.fromarray(ident.background)

    def _disc(self, draw, rot, centre, scale, disc: Disc, fill, n=16):
        if (rot @ disc.normal)[2] < 0.15:  # facing away: hidden behind the head
            return
        pts3 = disc.points(np.linspace(0, 2 * np.pi, n, endpoint=False))
        pts = (rot @ pts3.T).T[:, :2] * scale + centre
        draw.polygon([tuple(p) for p in pts], fill=fill)

    def render(self, yaw, pitch, roll, cx, cy, head_height, mouth, blink, mask: bool = False):
        """Returns (uint8 frame [H, W, 3], face box x0, y0, x1, y1 in pixels), and with
        `mask` a third item: bool [H, W], True where the background shows."""
        ident, rot = self.ident, rotation(yaw, pitch, roll)
        centre, scale = np.array([cx, cy]), head_height
        img = self.bg.copy()
        draw = _Canvas(img, mask)
        a, b, c = ident.radii
        # Shoulders, neck, hair (behind the head), ears, then the face.
        sw = 0.9 * scale
        draw.polygon(
            [
                (cx - sw, self.h),
                (cx - 0.5 * sw, cy + 0.75 * scale),
                (cx + 0.5 * sw, cy + 0.75 * scale),
                (cx + sw, self.h),
            ],
            fill=ident.shirt,
        )
        draw.rectangle(
            [cx - 0.14 * scale, cy + 0.3 * scale, cx + 0.14 * scale, cy + 0.8 * scale],
            fill=tuple(int(v * 0.85) for v in ident.skin),
        )
        hair = _silhouette(
            (a * 1.08, b * 0.9, c * 1.05),
            rot,
            centre,
            scale,
            np.array([0, -ident.hair_lift, -0.05]),
        )
        draw.polygon([tuple(p) for p in hair], fill=ident.hair)
        for side in (-1, 1):
            ear = Disc(
                np.array([side * a * 0.98, 0.02, -0.02]),
                np.array([side, 0, 0.5]) / np.sqrt(1.25),
                0.05,
                0.09,
            )
            self._disc(draw, rot, centre, scale, ear, tuple(int(v * 0.9) for v in ident.skin))
        face = _silhouette(ident.radii, rot, centre, scale, np.zeros(3))
        draw.polygon([tuple(p) for p in face], fill=ident.skin)
        for side in (-1, 1):
            self._disc(draw, rot, centre, scale, eye_disc(ident, side), (245, 245, 245))
            if blink < 0.95:
                self._disc(draw, rot, centre, scale, iris_disc(ident, side, blink), ident.eye)
            if blink > 0.05:  # the eyelid closes over the eye
                self._disc(draw, rot, centre, scale, eyelid_disc(ident, side, blink), ident.skin)
            self._disc(draw, rot, centre, scale, brow_disc(ident, side), ident.hair)
        pn, tip = nose(ident)
        nn = surface(ident.radii, 0.0, 0.07)[1]
        for side in (-1, 1):
            base = surface(ident.radii, side * 0.045, 0.12)[0]
            if (rot @ nn)[2] > 0:
                tri = [
                    (rot @ q)[:2] * scale + centre
                    for q in (pn + np.array([0, -0.06, 0]), tip, base)
                ]
                draw.polygon(
                    [tuple(q) for q in tri],
                    fill=tuple(int(v * (0.8 if side < 0 else 0.9)) for v in ident.skin),
                )
        self._disc(draw, rot, centre, scale, lips_disc(ident, mouth), ident.lips, n=24)
        self._disc(draw, rot, centre, scale, mouth_disc(ident, mouth), (60, 15, 25), n=24)
        pts = np.concatenate([face, hair])
        box = np.array([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
        if mask:
            return np.asarray(img), box, np.asarray(draw.mask_image) > 127
        return np.asarray(img), box

    def landmarks(self, yaw, pitch, roll, cx, cy, head_height) -> np.ndarray:
        """5 points (eyes, nose tip, mouth corners) in pixels, [10] as x1 y1 ... x5 y5."""
        rot = rotation(yaw, pitch, roll)
        ident = self.ident
        pts = [surface(ident.radii, s * ident.eye_gap / 2, -ident.eye_height)[0] for s in (-1, 1)]
        pn, nn = surface(ident.radii, 0.0, 0.07)
        pts.append(pn + 0.07 * nn)
        pts += [surface(ident.radii, s * ident.mouth_width / 2, MOUTH_Y)[0] for s in (-1, 1)]
        xy = np.stack([(rot @ p)[:2] for p in pts]) * head_height + np.array([cx, cy])
        return xy.reshape(-1).astype(np.float32)
