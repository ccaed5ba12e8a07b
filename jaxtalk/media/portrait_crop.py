"""LivePortrait's face crop, its inverse and the paste-back, the eye and lip open ratios, and
the 203-point landmark model that drives them.

The release aligns every face with a similarity transform read from landmarks: the axis
from the eyes' centre to the mouth's centre fixes the angle; the landmarks' extent in that
rotated frame, made square and scaled, fixes the size; the centre is the extent's centre
moved by (vx, vy) times the size along the rotated axes (vy < 0 moves it up, to take in
more forehead). Source images and videos: scale 2.3, vy -0.125, rotated, 512 px. Driving
videos: scale 2.2, vy -0.1, one axis-aligned box averaged over the clip, 512 px. The
landmark network itself reads a 224 px crop at scale 1.5, vy -0.1, placed from earlier
landmarks (InsightFace's 106 points in the release, the previous frame's 203 when
tracking). The release also passes vx to its crop functions, where it is not used; it is 0
in every configuration.

Here, without InsightFace, the first crop comes from jaxtalk's OpenCV face detector
(`jaxtalk.media.face_detect`): its box is placed as a landmark extent would be (same
scale and vy, no rotation), and the landmark model is run a second time on the crop its
own first answer gives (`LandmarkModel.__call__`). Without a landmark model at all, the
source crop is the box's (`source_crop(image)`), unrotated, and no eye/lip ratios exist.

Images are (H, W, C) arrays, RGB, values in 0..255; points are (x, y) pixels. Warps are
bilinear with zeros outside (cv2.warpAffine's INTER_LINEAR / BORDER_CONSTANT, which the
release uses, up to its 1/32-pixel fixed-point weights) and run in JAX, so the paste-back
can be part of a jitted per-frame function.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.errors import InputError
from jaxtalk.models.layers.grid_sample import grid_sample_2d


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """How large a crop is around a face (scale x the landmark extent), where its centre
    sits (vx, vy x its size along the face's axes), its pixel size, and whether it follows
    the head's roll."""

    scale: float
    vy: float
    dsize: int
    rotate: bool = True
    vx: float = 0.0


SOURCE = CropSpec(scale=2.3, vy=-0.125, dsize=512)
DRIVING = CropSpec(scale=2.2, vy=-0.1, dsize=512, rotate=False)
LANDMARK_INPUT = CropSpec(scale=1.5, vy=-0.1, dsize=224)

# (left-eye points, right-eye points, mouth points) by landmark count: the eyes' centre and
# the mouth's centre set the face's axis. 203: the release's landmark.onnx; 106:
# InsightFace's 2d106det; 101 and 68: the common layouts; 5: detector key points.
AXIS_POINTS = {
    203: ((0, 6, 12, 18), (24, 30, 36, 42), (48, 66)),
    106: ((33, 35, 40, 39), (87, 89, 94, 93), (52, 61)),
    101: ((39, 42, 45, 48), (51, 54, 57, 60), (75, 81)),
    68: ((36, 39), (42, 45), (48, 54)),
    5: ((0,), (1,), (3, 4)),
}

# Eye and lip openness from the 203 points: |upper - lower| / |corner - corner| (the
# release's retargeting inputs).
LEFT_EYE = (6, 18, 0, 12)
RIGHT_EYE = (30, 42, 24, 36)
LIP = (90, 102, 48, 66)
RATIO_EPS = 1e-6


class LandmarkError(InputError):
    """Landmarks or a landmark model jaxtalk cannot use; the message names them."""


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    """A square around a face: centre (x, y), side in pixels, roll in radians (the angle of
    the face's x axis, clockwise positive in image coordinates)."""

    center: np.ndarray
    size: float
    angle: float


@dataclasses.dataclass(frozen=True)
class Crop:
    """A face crop and the 3x3 maps between its pixels and the full image's."""

    image: jax.Array
    o2c: np.ndarray
    c2o: np.ndarray


# ----------------------------------------------------------------------------- geometry


def face_axes(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors (ux, uy) of the face: uy from the eyes' centre to the mouth's centre,
    ux perpendicular to it (towards the image's +x for an upright face)."""
    points = np.asarray(points, np.float64)
    groups = AXIS_POINTS.get(len(points))
    if groups is None:
        raise LandmarkError(
            f"{len(points)} landmarks: expected one of {sorted(AXIS_POINTS)} points"
        )
    left, right, mouth = (points[list(g)].mean(0) for g in groups)
    uy = mouth - (left + right) / 2
    norm = np.linalg.norm(uy)
    uy = uy / norm if norm > 1e-3 else np.array([0.0, 1.0])
    return np.array([uy[1], -uy[0]]), uy


def frame_from_points(points: np.ndarray, spec: CropSpec) -> FaceFrame:
    """The release's crop square from landmarks (its extent measured along the face's axes)."""
    points = np.asarray(points, np.float64)
    ux, uy = face_axes(points)
    mean = points.mean(0)
    rotated = (points - mean) @ np.stack([ux, uy]).T
    lo, hi = rotated.min(0), rotated.max(0)
    mid = (lo + hi) / 2
    size = float((hi - lo).max()) * spec.scale
    center = mean + ux * mid[0] + uy * mid[1] + (spec.vx * ux + spec.vy * uy) * size
    return FaceFrame(center, size, math.atan2(ux[1], ux[0]))


def frame_from_box(box: Sequence[float], spec: CropSpec) -> FaceFrame:
    """A detector box (x0, y0, x1, y1) taken as an upright landmark extent."""
    x0, y0, x1, y1 = (float(v) for v in box)
    size = max(x1 - x0, y1 - y0) * spec.scale
    center = np.array([(x0 + x1) / 2 + spec.vx * size, (y0 + y1) / 2 + spec.vy * size])
    return FaceFrame(center, size, 0.0)


def crop_matrix(frame: FaceFrame, dsize: int, rotate: bool = True) -> np.ndarray:
    """3x3 map from image pixels to crop pixels: the frame's centre to the crop's centre,
    its side to `dsize`, its roll undone when `rotate`."""
    s = dsize / frame.size
    cos, sin = (math.cos(frame.angle), math.sin(frame.angle)) if rotate else (1.0, 0.0)
    linear = s * np.array([[cos, sin], [-sin, cos]])
    shift = np.array([dsize / 2, dsize / 2]) - linear @ frame.center
    return np.block([[linear, shift[:, None]], [np.zeros((1, 2)), np.ones((1, 1))]])


def driving_box(points_per_frame: Sequence[np.ndarray], spec: CropSpec = DRIVING) -> np.ndarray:
    """The driving clip's one box (x0, y0, x1, y1): each frame's landmark square, unrotated,
    averaged over the frames."""
    boxes = []
    for points in points_per_frame:
        f = frame_from_points(points, spec)
        boxes.append(np.concatenate([f.center - f.size / 2, f.center + f.size / 2]))
    if not boxes:
        raise LandmarkError("no frame with landmarks to place the driving crop")
    return np.mean(boxes, axis=0)


def transform_points(points, matrix: np.ndarray):
    """Points (..., 2) through a 2x3 or 3x3 affine map."""
    matrix = np.asarray(matrix)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


# ----------------------------------------------------------------------------- warps


@functools.partial(jax.jit, static_argnames="size")
def _warp(x, inverse, size: tuple[int, int]):
    height, width = size
    ys, xs = jnp.mgrid[0:height, 0:width].astype(jnp.float32)
    src = jnp.stack([xs, ys], -1) @ inverse[:2, :2].T + inverse[:2, 2]
    h, w = x.shape[1:3]
    # pixel centres at integers -> grid_sample's align_corners=False [-1, 1] coordinates
    grid = (2 * src + 1) / jnp.array([w, h], jnp.float32) - 1
    grid = jnp.broadcast_to(grid, (x.shape[0], height, width, 2))
    return grid_sample_2d(x, grid, align_corners=False, padding_mode="zeros")


def warp_affine(image, matrix, size: tuple[int, int]):
    """`image` (H, W, C) or (N, H, W, C) moved by the affine `matrix` (2x3 or 3x3, source
    pixels -> output pixels, as cv2.warpAffine) into an output of `size` = (height, width),
    bilinear, zeros outside. `matrix` may be traced (a per-frame map inside jit)."""
    image = jnp.asarray(image)
    x = image if image.ndim == 4 else image[None]
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    xp = np if isinstance(matrix, np.ndarray) else jnp  # numpy: inverted in float64
    matrix = xp.asarray(matrix)
    if matrix.shape == (2, 3):
        matrix = xp.concatenate([matrix, xp.asarray([[0.0, 0.0, 1.0]])])
    inverse = jnp.asarray(xp.linalg.inv(matrix), jnp.float32)
    out = _warp(x, inverse, tuple(int(s) for s in size))
    return out if image.ndim == 4 else out[0]


def crop_frame(image, frame: FaceFrame, dsize: int, rotate: bool = True) -> Crop:
    """The (dsize, dsize) crop of `frame` from `image` (float32) with its maps."""
    o2c = crop_matrix(frame, dsize, rotate)
    return Crop(warp_affine(image, o2c, (dsize, dsize)), o2c, np.linalg.inv(o2c))


def feather_mask(size: int, ramp: float | None = None) -> np.ndarray:
    """(size, size) float32 paste-back weights: 1 inside, falling linearly to 0 over `ramp`
    pixels (size / 32 by default) at the edges, with corners rounded by the same radius.

    Generated here in place of the release's mask_template.png, which has this shape (a
    16-pixel linear ramp and 16-pixel corner radius at 512)."""
    ramp = size / 32 if ramp is None else float(ramp)
    idx = np.arange(size, dtype=np.float64)
    edge = np.minimum(idx, size - idx)  # distance to the nearer edge, edges at 0 and size
    dy, dx = np.meshgrid(edge, edge, indexing="ij")
    inside = np.minimum(dx, dy)
    corner = (dx < ramp) & (dy < ramp)
    inside = np.where(corner, ramp - np.hypot(ramp - dx, ramp - dy), inside)
    return np.clip(inside / ramp, 0.0, 1.0).astype(np.float32)


def paste_mask(c2o: np.ndarray, image_size: tuple[int, int], dsize: int = SOURCE.dsize):
    """The feather mask of a `dsize` crop placed into the full image: (H, W, 1), computed
    once per source image."""
    return warp_affine(feather_mask(dsize)[..., None], c2o, image_size)


def paste_back(crop_image, c2o: np.ndarray, image, mask):
    """The animated crop put back into the full source `image` through `c2o`, blended by
    `mask` (paste_mask); a uint8 image comes back as uint8 (clipped, truncated, as the
    release)."""
    image = jnp.asarray(image)
    placed = warp_affine(crop_image, c2o, image.shape[:2])
    out = mask * placed + (1 - mask) * image.astype(placed.dtype)
    if image.dtype == jnp.uint8:
        return jnp.clip(out, 0, 255).astype(jnp.uint8)
    return out


# ----------------------------------------------------------------------------- ratios


def _ratio(points, a: int, b: int, c: int, d: int):
    points = jnp.asarray(points)
    opening = jnp.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)
    width = jnp.linalg.norm(points[..., c, :] - points[..., d, :], axis=-1)
    return opening / (width + RATIO_EPS)


def eye_open_ratio(points):
    """(..., 203, 2) landmarks -> (..., 2): each eye's lid gap over its width (left, right)."""
    return jnp.stack([_ratio(points, *LEFT_EYE), _ratio(points, *RIGHT_EYE)], -1)


def lip_open_ratio(points):
    """(..., 203, 2) landmarks -> (..., 1): the lips' gap over the mouth's width."""
    return _ratio(points, *LIP)[..., None]


# ----------------------------------------------------------------------------- the model


class LandmarkModel:
    """LivePortrait's 203-point landmark network: the release's landmark.onnx imported with
    `jaxtalk.convert.onnx_graph` (`LandmarkModel(onnx_graph.load(path))`; media sits below
    convert, so the caller imports it), run as the release runs it: an RGB 224 crop (LANDMARK_INPUT)
    scaled to [0, 1], NCHW; its third output, 406 values in [0, 1] of the crop, times 224.

    A face is found by earlier landmarks (any layout in AXIS_POINTS, e.g. the previous
    frame's) or, without them, by jaxtalk's OpenCV detector, whose box places the first
    crop and the model's own answer a second one (`refine` times)."""

    OUTPUT = 2
    POINTS = 203

    def __init__(self, fn, spec: CropSpec = LANDMARK_INPUT, refine: int = 1):
        shapes = fn.input_shapes
        want = (3, spec.dsize, spec.dsize)
        if len(shapes) != 1 or len(shapes[0]) != 4 or tuple(shapes[0][1:]) != want:
            raise LandmarkError(
                f"{fn.path}: expected one (N, {want[0]}, {want[1]}, {want[2]}) input, "
                f"got {shapes} (not LivePortrait's landmark.onnx?)"
            )
        if len(fn.output_names) <= self.OUTPUT:
            raise LandmarkError(
                f"{fn.path}: {len(fn.output_names)} outputs, expected at least {self.OUTPUT + 1}"
            )
        self.fn, self.spec, self.refine = fn, spec, refine
        self._batch = shapes[0][0]
        self._run = jax.jit(lambda params, x: fn.apply(params, x)[self.OUTPUT])

    def predict_crops(self, crops) -> np.ndarray:
        """(N, 224, 224, 3) RGB crops, 0..255 -> (N, 203, 2) points in crop pixels."""
        crops = jnp.asarray(crops, jnp.float32)
        x = jnp.transpose(crops / 255.0, (0, 3, 1, 2))
        if self._batch is not None and self._batch != x.shape[0]:  # a fixed-batch export
            out = jnp.concatenate([self._run(self.fn.params, x[i : i + 1]) for i in range(len(x))])
        else:
            out = self._run(self.fn.params, x)
        points = np.asarray(out, np.float64).reshape(len(x), -1, 2)
        if points.shape[1] != self.POINTS:
            raise LandmarkError(
                f"{self.fn.path}: output {self.OUTPUT} holds {points.shape[1]} points, not {self.POINTS}"
            )
        return points * self.spec.dsize

    def from_frame(self, image, frame: FaceFrame) -> np.ndarray:
        """203 points (image pixels) of the face in `frame`."""
        c = crop_frame(image, frame, self.spec.dsize, self.spec.rotate)
        return transform_points(self.predict_crops(c.image[None])[0], c.c2o)

    def __call__(self, image, points: np.ndarray | None = None, what: str = "image") -> np.ndarray:
        """(203, 2) landmarks of the face in `image` (H, W, 3) uint8 RGB: placed by
        `points` (earlier landmarks), else by the OpenCV detector's largest face
        (NoFaceError naming `what` when there is none)."""
        if points is not None:
            return self.from_frame(image, frame_from_points(points, self.spec))
        from jaxtalk.media import face_detect

        found = self.from_frame(image, frame_from_box(face_detect.face_box(image, what), self.spec))
        for _ in range(self.refine):
            found = self.from_frame(image, frame_from_points(found, self.spec))
        return found

    def track(self, frames, what: str = "video") -> list[np.ndarray]:
        """Landmarks of every frame, each placed by the previous frame's (the first by the
        detector), as the release tracks a video."""
        out = []
        for i, frame in enumerate(frames):
            out.append(self(frame, out[-1] if out else None, what=f"{what} frame {i}"))
        return out


# ----------------------------------------------------------------------------- pipeline crops


def source_crop(
    image, landmarks: LandmarkModel | None = None, spec: CropSpec = SOURCE, what: str = "image"
) -> tuple[Crop, np.ndarray | None]:
    """(the source crop, its 203 landmarks in image pixels or None). Without a landmark
    model the crop is placed by the OpenCV detector's box, unrotated."""
    if landmarks is None:
        from jaxtalk.media import face_detect

        frame = frame_from_box(face_detect.face_box(image, what), spec)
        return crop_frame(image, frame, spec.dsize, rotate=False), None
    points = landmarks(image, what=what)
    return crop_frame(image, frame_from_points(points, spec), spec.dsize, spec.rotate), points


def source_video_crops(
    frames, landmarks: LandmarkModel | None = None, spec: CropSpec = SOURCE, what: str = "video"
):
    """(every frame's crop, lazily; their 203 landmarks (T, 203, 2) or None), as the release
    crops a source video: each frame by its own landmarks, tracked from frame to frame, as
    `source_crop` crops an image. Without a landmark model: by the first frame's detector
    box, unrotated, the same for every frame (a detector box per frame would jitter)."""
    if landmarks is None:
        from jaxtalk.media import face_detect

        face = frame_from_box(face_detect.face_box(frames[0], f"{what} frame 0"), spec)
        return (crop_frame(f, face, spec.dsize, rotate=False) for f in frames), None
    points = landmarks.track(frames, what=what)
    crops = (
        crop_frame(f, frame_from_points(p, spec), spec.dsize, spec.rotate)
        for f, p in zip(frames, points)
    )
    return crops, np.stack(points)


def driving_crops(
    frames, points_per_frame: Sequence[np.ndarray], spec: CropSpec = DRIVING
) -> list[Crop]:
    """A driving clip cropped by its one averaged, unrotated box (`driving_box`)."""
    box = driving_box(points_per_frame, spec)
    frame = FaceFrame((box[:2] + box[2:]) / 2, float(box[2] - box[0]), 0.0)
    return [crop_frame(f, frame, spec.dsize, rotate=False) for f in frames]
