"""The animator options the web app offers: one table, by the `start` keyword each fills.

For the model picked, the app shows the rows whose keyword that animator's `start` takes
(read from its signature), in table order, so a family that lands later gets its controls
by adding rows here and nothing else. `start` keywords that are not for a person to set
(data derived from files, such as `paste_back` or the source's landmark ratios) are in
`NOT_SHOWN`; tests check that every registered animator's keywords are in one or the other.

A row's widget says how its value is read back:
  choice    one of `choices`, always passed
  check     on / off, always passed
  auto      auto / on / off: auto leaves the animator's default, on / off pass True / False
  number    a float typed in, passed only when filled in (empty: the animator's default)
  slider    a float in [minimum, maximum], always passed
  integer   an int, always passed
  pose      a "use" box and yaw / pitch / roll sliders in [-1, 1]: [y, p, r] when ticked
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Container, Iterable, Sequence

from jaxtalk.inference.animator import AnimationError, Animator

WIDGETS = ("choice", "check", "auto", "number", "slider", "integer", "pose")
AUTO = ("auto", "on", "off")
POSE_PARTS = ("yaw", "pitch", "roll")


@dataclasses.dataclass(frozen=True)
class Option:
    """One row: the `start` keyword `name`, its label and widget (see the module doc)."""

    name: str
    label: str
    widget: str
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str = ""

    def __post_init__(self):
        if self.widget not in WIDGETS:
            raise ValueError(f"option {self.name}: unknown widget {self.widget!r}")

    @property
    def width(self) -> int:
        """How many widget values the row reads (the pose row: a box and three sliders)."""
        return 1 + len(POSE_PARTS) if self.widget == "pose" else 1

    def initial(self) -> list:
        """The widget values the page starts with."""
        if self.widget == "pose":
            return [False, 0.0, 0.0, 0.0]
        if self.widget == "auto":
            return [AUTO[0]]
        if self.widget == "number":
            return [""]  # empty: the animator's default
        return [self.default]

    def parse(self, values: Sequence) -> tuple[bool, Any]:
        """The row's widget values -> (given, value): `given` False leaves the animator's
        default. Values are checked: a bad one is an AnimationError naming the row."""
        if len(values) != self.width:
            raise AnimationError(f"{self.label}: expected {self.width} values, got {len(values)}")
        value = values[0]
        if self.widget == "pose":
            if not value:
                return False, None
            return True, [self._number(v, part) for v, part in zip(values[1:], POSE_PARTS)]
        if self.widget == "choice":
            if value not in self.choices:
                raise AnimationError(
                    f"{self.label}: {value!r} is not one of {', '.join(self.choices)}"
                )
            return True, value
        if self.widget == "check":
            return True, bool(value)
        if self.widget == "auto":
            if value not in AUTO:
                raise AnimationError(f"{self.label}: {value!r} is not one of {', '.join(AUTO)}")
            return value != "auto", value == "on"
        if value is None or (isinstance(value, str) and not value.strip()):
            if self.widget == "number":
                return False, None
            raise AnimationError(f"{self.label}: a value is required")
        number = self._number(value, self.label)
        if self.widget == "integer":
            if number != int(number):
                raise AnimationError(f"{self.label}: {value!r} is not a whole number")
            return True, int(number)
        return True, number

    def _number(self, value, what: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise AnimationError(f"{self.label}: {value!r} is not a number") from None
        low = -1.0 if self.widget == "pose" else self.minimum
        high = 1.0 if self.widget == "pose" else self.maximum
        if (low is not None and number < low) or (high is not None and number > high):
            raise AnimationError(f"{what}: {number:g} is outside [{low:g}, {high:g}]")
        return number


# The table. Rows are shown in this order; each only for animators whose `start` takes it.
OPTIONS = (
    # video-driven warping models (LIA, AniTalker stage 1) and LivePortrait
    Option(
        "mode",
        "Motion mode",
        "choice",
        "relative",
        ("relative", "absolute"),
        info="relative: the driving motion since its first frame, added to the portrait's own",
    ),
    # audio-driven models (AniTalker stage 2)
    Option("seed", "Seed", "integer", 0, minimum=0, info="noise seed of the diffusion sampler"),
    Option("ddim_steps", "Sampling steps", "integer", 50, minimum=1, maximum=1000),
    Option(
        "pose", "Control the head pose", "pose", info="yaw / pitch / roll in [-1, 1] (x 90 deg)"
    ),
    Option("face_location", "Face location", "number", minimum=0.0, maximum=1.0),
    Option("face_scale", "Face scale", "number", minimum=0.0),
    # LivePortrait
    Option(
        "stitching", "Stitching", "auto", info="auto: on when the weights have the stitching MLP"
    ),
    Option(
        "driving_multiplier",
        "Driving multiplier",
        "slider",
        1.0,
        minimum=0.0,
        maximum=3.0,
        step=0.05,
    ),
    Option(
        "animation_region",
        "Animated region",
        "choice",
        "all",
        ("all", "exp", "pose", "lip", "eyes"),
    ),
)

# `start` keywords the app fills itself or leaves at their defaults: `what` (it names the
# upload in errors), predictor-level `controls`, and data taken from files, not typed:
# LivePortrait's eye / lip retargeting (it needs the source's landmarks: `jaxtalk animate
# --landmark_model`; the app has no landmark model yet), AniPortrait's landmark files and
# model, MegActor's background mask.
NOT_SHOWN = frozenset(
    {
        "what",
        "controls",
        "pose_file",
        "paste_back",
        "eye_ratio",
        "lip_ratio",
        "source_eye_ratio",
        "source_lip_ratio",
        "source_landmarks",
        "driving_landmarks",
        "landmarks_model",
        "source_mask",
        "smooth_variance",  # a source video's; the app takes source images
        "source_video_eye_retargeting",
    }
)


def start_keywords(cls: type[Animator]) -> dict[str, Any]:
    """The keywords an animator class's `start` takes, with their defaults."""
    params = list(inspect.signature(cls.start).parameters.values())[3:]  # self, state, driving
    return {
        p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def rows_for(cls: type[Animator], table: Iterable[Option] = OPTIONS) -> list[Option]:
    """The table rows an animator class takes, in table order."""
    takes = start_keywords(cls)
    return [row for row in table if row.name in takes]


def unlisted(cls: type[Animator], table: Iterable[Option] = OPTIONS) -> list[str]:
    """`start` keywords of `cls` neither in the table nor in NOT_SHOWN (to be added)."""
    listed = {row.name for row in table} | NOT_SHOWN
    return sorted(set(start_keywords(cls)) - listed)


def parse(
    rows: Sequence[Option], values: Sequence, names: Container[str] | None = None
) -> dict[str, Any]:
    """Widget values of `rows` (flat, in row order) -> the `start` options given, of the rows
    named in `names` only (default: all; the page submits every row, the chosen model
    takes its own)."""
    if len(values) != sum(row.width for row in rows):
        raise AnimationError(
            f"expected {sum(row.width for row in rows)} option values, got {len(values)}"
        )
    options, at = {}, 0
    for row in rows:
        part = list(values[at : at + row.width])
        at += row.width
        if names is not None and row.name not in names:
            continue
        given, value = row.parse(part)
        if given:
            options[row.name] = value
    return options


__all__ = [
    "AUTO",
    "NOT_SHOWN",
    "OPTIONS",
    "Option",
    "parse",
    "rows_for",
    "start_keywords",
    "unlisted",
]
