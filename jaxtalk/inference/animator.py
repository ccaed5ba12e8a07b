"""The animator contract: what every model family implements to animate a portrait.

An animator turns one source image and a driver (a video, speech, keypoints) into uint8
frames. A family implements four hooks; `Animator.animate` is written once here from them:

    state = prepare(source)                   # encode the source once
    state, steps = start(state, driving, **options)   # whole-driver work (optional):
                                              # e.g. diffusion over the whole utterance
    for each fixed-size chunk of steps:       # padded to `chunk`, so one compiled call
        frames = drive(state, chunk)          # motion + render, floats in [-1, 1]

plus `size` (the square input resolution), `fps` (the output rate; None = the driver's own,
as for a driving video), `chunk` (steps per device call), `driver` (the `Driver` kind it
takes) and, optionally, `export_function()`: the pure jax function that `jaxtalk export
--out=X.jaxfn` serializes with jaxtalk/export/jax_function.py and `jaxtalk export
--format=onnx` translates to ONNX with jaxtalk/export/onnx_export.py (a family gets both
by implementing it; an op the ONNX translator lacks is an error naming the primitive).

Animators are found by the weights' `kind` (or release) or a run's task name among the
`ANIMATORS` each animator module declares (`jaxtalk.inference.animators`); commands never
branch on model classes.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Callable, ClassVar, Sequence

import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxtalk.errors import InputError

SourceState = Any  # what a family's `prepare` returns: a pytree of (device) arrays
SAMPLE_RATE = 16000  # Driver.AUDIO speech: mono float samples at this rate


class AnimationError(InputError):
    """Unusable input for animation; the message names the file and the reason."""


class Driver(str, enum.Enum):
    """What drives an animator, and the array `animate` takes for it."""

    VIDEO = "video"  # (T, S, S, 3) uint8 frames, face-cropped like the source
    AUDIO = "audio"  # mono SAMPLE_RATE float speech; the animator windows it per frame
    KEYPOINTS = "keypoints"  # (T, K, 3) float implicit keypoints (LivePortrait-style families)


@dataclasses.dataclass(frozen=True)
class ExportedFunction:
    """`outputs = fn(params, *inputs)`: a pure jax function and what `jax.export` needs."""

    fn: Callable
    params: Any
    input_specs: Sequence[Any]  # jax.ShapeDtypeStruct, symbolic dims allowed ("T")
    input_names: Sequence[str]
    output_names: Sequence[str]
    metadata: dict


# ---------------------------------------------------------------------------- pixels
def to_pixels(images) -> np.ndarray:
    """Model-range floats [-1, 1] -> uint8 pixels (the inverse of `to_model_range`)."""
    return np.asarray(jnp.clip((images + 1.0) * 127.5, 0, 255).round().astype(jnp.uint8))


def read_image(path: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, as stored (see jaxtalk.media.face_detect for a face crop)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise AnimationError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AnimationError(f"{path}: not a readable image ({e})") from None


def centre_square(width: int, height: int) -> list[int]:
    """The (x, y, w, h) of the largest centred square."""
    side = min(width, height)
    return [(width - side) // 2, (height - side) // 2, side, side]


def load_image(path: str, size: int) -> np.ndarray:
    """An image file -> (size, size, 3) uint8, centre-cropped to a square first."""
    img = Image.fromarray(read_image(path))
    x, y, side, _ = centre_square(*img.size)
    img = img.crop((x, y, x + side, y + side))
    return np.asarray(img.resize((size, size), Image.BICUBIC))


# ---------------------------------------------------------------------------- contract
class Animator(abc.ABC):
    """A source portrait + a driver -> uint8 frames. Subclasses set `driver`, `size`,
    `chunk` (and `fps` when the output rate is theirs) and implement `prepare` and `drive`;
    `start`, `export_function` and the constructors `from_stored` / `from_run` (which
    `jaxtalk.inference.open_animator` calls) have defaults."""

    driver: ClassVar[Driver]
    # Every Driver kind a family takes when more than one: its constructors then get
    # `driver=` (the kind asked for) and build an animator driven by it.
    drivers: ClassVar[tuple[Driver, ...]] = ()
    fps: float | None = None  # output frames per second; None: the driver's own rate
    size: int  # the square source / driving-frame resolution
    chunk: int = 8  # steps rendered per device call
    exports: ClassVar[bool] = False  # implements export_function
    # Takes a source video too: `prepare` and `animate` accept (T, size, size, 3) frames,
    # one source frame per output frame (the output then has the source's rate and length
    # at most; jaxtalk/inference/files.py reads a video --source for such a family).
    source_video: ClassVar[bool] = False

    @classmethod
    def from_stored(cls, stored: dict, path: str, **options) -> "Animator":
        """The animator for a loaded weights file (`jaxtalk.convert.weights.load(path)`)."""
        raise AnimationError(f"{path}: {cls.__name__} does not animate from a weights file")

    @classmethod
    def from_run(cls, workdir: str, step: int | None = None, **options) -> "Animator":
        """The animator for a training run's checkpoint (default: the latest)."""
        raise AnimationError(f"{workdir}: {cls.__name__} does not animate from a training run")

    @abc.abstractmethod
    def prepare(self, source: np.ndarray) -> SourceState:
        """Encodes a (size, size, 3) uint8 source once (`to_model_range` it first)."""

    def start(self, state: SourceState, driving, **options) -> tuple[SourceState, np.ndarray]:
        """The whole driver -> (state, steps): one entry of `steps` per output frame, which
        `drive` consumes chunk by chunk. Default: the driver as it is, no options. Raise
        AnimationError for unusable input or options."""
        if options:
            raise AnimationError(f"{type(self).__name__} takes no options {sorted(options)}")
        return state, driving

    @abc.abstractmethod
    def drive(self, state: SourceState, steps: np.ndarray):
        """One chunk of exactly `chunk` steps -> (chunk, size, size, 3) frames in [-1, 1]."""

    def export_function(self) -> ExportedFunction:
        """The pure function `jaxtalk export --out=X.jaxfn` serializes (set `exports`);
        animators that cannot be exported raise `not_exportable`."""
        raise self.not_exportable(type(self).__name__)

    @classmethod
    def not_exportable(cls, what: str) -> AnimationError:
        return AnimationError(
            f"{what}: the {cls.driver.value}-driven {cls.__name__} cannot be "
            "exported as a .jaxfn or ONNX function (video-driven stage-1 weights can: "
            "lia, anitalker_stage1)"
        )

    def animate(
        self,
        source: np.ndarray,
        driving,
        *,
        progress: Callable[[int], None] | None = None,
        **options,
    ) -> np.ndarray:
        """source (size, size, 3) uint8 (or frames, with `source_video`) + a driver (see
        `Driver`) -> (T, size, size, 3) uint8 frames; `options` go to `start`, `progress(n)` is told each chunk's frames."""
        source = np.asarray(source)
        video = self.source_video and source.ndim == 4 and len(source) > 0
        if source.shape[int(video) :] != (self.size, self.size, 3):
            frames = f" or (T, {self.size}, {self.size}, 3) frames" if self.source_video else ""
            raise AnimationError(
                f"the source must be ({self.size}, {self.size}, 3) pixels{frames}, "
                f"got {source.shape}"
            )
        state, steps = self.start(self.prepare(source), driving, **options)
        if len(steps) == 0:
            raise AnimationError(f"nothing to animate: the {self.driver.value} gives no frames")
        out = []
        for begin in range(0, len(steps), self.chunk):
            part = steps[begin : begin + self.chunk]
            padded = np.concatenate([part, np.repeat(part[-1:], self.chunk - len(part), 0)])
            out.append(to_pixels(self.drive(state, padded))[: len(part)])
            if progress:
                progress(len(part))
        return np.concatenate(out)


__all__ = [
    "Animator",
    "AnimationError",
    "Driver",
    "ExportedFunction",
    "SAMPLE_RATE",
    "SourceState",
    "centre_square",
    "load_image",
    "read_image",
    "to_pixels",
]
