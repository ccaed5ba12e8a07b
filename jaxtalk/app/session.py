"""What the web app does, without the web: open the models, turn a submitted form into one
animation (jaxtalk/inference/files.py) and name the mp4 it wrote.

    studio = Studio(open_models(weights=["w.safetensors"], stage2="s2.safetensors",
                                stage1="s1.safetensors"), out_dir)
    path, written = studio.animate(label, "face.png", "talk.mp4", values,
                                   crop_face=True, progress=lambda done, total: ...)

`values` are the option widgets' values of `studio.rows` (jaxtalk/app/options.py), flat;
only the rows the chosen model takes are passed to it. Bad input raises an InputError whose
message names uploads by their file name (not the server's temporary path).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
from typing import Callable, Sequence

from jaxtalk import fs
from jaxtalk.app import options as options_lib
from jaxtalk.errors import InputError
from jaxtalk.inference import Animator, Driver, files, open_animator

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Model:
    """One model the page offers: its label, where it came from, the open animator."""

    label: str
    path: str
    animator: Animator

    @property
    def driver(self) -> Driver:
        return self.animator.driver

    @property
    def rows(self) -> list[options_lib.Option]:
        return options_lib.rows_for(type(self.animator))


def _label(path: str, animator: Animator, taken: set[str]) -> str:
    """`name (video-driven)`: unique among `taken`."""
    base = f"{fs.basename(path.rstrip('/')) or path} ({animator.driver.value}-driven)"
    label, n = base, 1
    while label in taken:
        n += 1
        label = f"{base} #{n}"
    return label


def open_models(
    weights: Sequence[str] = (),
    workdirs: Sequence[str] = (),
    *,
    stage2: str | None = None,
    stage1: str | None = None,
    hubert: str | None = None,
    step: int | None = None,
    chunk: int = 8,
) -> list[Model]:
    """The models `jaxtalk app` serves, in the order given: weights files (or runs) of any
    family, training runs (`step`: their checkpoint), and a speech-driven stage 2 (a file,
    rendered with `stage1`, or a run that carries its stage 1)."""
    opened: list[tuple[str, Animator]] = [
        (path, open_animator(path, chunk=chunk)) for path in weights
    ]
    opened += [(path, open_animator(path, run=True, step=step, chunk=chunk)) for path in workdirs]
    if stage2:
        audio = open_animator(
            stage2, driver=Driver.AUDIO, stage1=stage1, hubert=hubert, chunk=chunk
        )
        opened.append((stage2, audio))
    if not opened:
        raise InputError("give a model: --weights, --workdir or --stage2 (see --help)")
    models: list[Model] = []
    for path, animator in opened:
        if animator.driver not in (Driver.VIDEO, Driver.AUDIO):
            raise InputError(
                f"{path}: the app animates from a video or speech, not {animator.driver.value}"
            )
        models.append(Model(_label(path, animator, {m.label for m in models}), path, animator))
    return models


def _stem(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem)[:60] or "upload"


# Command-line advice in messages, as the page says it.
PAGE_WORDS = {"pass --nocrop_face": "untick 'Crop the face'"}


def _for_page(error: InputError, uploads: Sequence[str]) -> InputError:
    """`error` with each upload's temporary path replaced by its file name, and flags by
    the page's words."""
    message = str(error)
    for path in uploads:
        message = message.replace(path, os.path.basename(path))
    for flag, words in PAGE_WORDS.items():
        message = message.replace(flag, words)
    if message == str(error):
        return error
    try:
        return type(error)(message)
    except TypeError:  # a subclass with other constructor arguments
        return InputError(message)


class Studio:
    """The models and the form: `rows` are the option rows of every model (the page shows a
    model's own), `animate` runs one submission."""

    def __init__(self, models: Sequence[Model], out_dir: str | None = None):
        self.models = {m.label: m for m in models}
        self.out_dir = out_dir or tempfile.mkdtemp(prefix="jaxtalk_app_")
        os.makedirs(self.out_dir, exist_ok=True)
        wanted = {row.name for m in models for row in m.rows}
        self.rows = [row for row in options_lib.OPTIONS if row.name in wanted]

    def model(self, label: str) -> Model:
        if label not in self.models:
            raise InputError(f"unknown model {label!r}: {', '.join(self.models)}")
        return self.models[label]

    def visible(self, label: str) -> list[bool]:
        """Which of `rows` the model `label` takes."""
        names = {row.name for row in self.model(label).rows}
        return [row.name in names for row in self.rows]

    def animate(
        self,
        label: str,
        source: str | None,
        driving: str | None,
        values: Sequence = (),
        *,
        crop_face: bool = True,
        max_seconds: float | None = None,
        progress: Progress | None = None,
    ) -> tuple[str, files.Written]:
        """One submission -> the mp4's path under `out_dir` and what was written."""
        model = self.model(label)
        what = "speech" if model.driver is Driver.AUDIO else "driving video"
        if not source:
            raise InputError("upload a portrait image first")
        if not driving:
            raise InputError(f"{model.label} needs a {what}: upload one")
        if max_seconds is not None and max_seconds <= 0:
            raise InputError(f"max seconds must be positive, not {max_seconds:g}")
        takes = options_lib.start_keywords(type(model.animator))
        chosen = options_lib.parse(self.rows, values, takes)
        if "what" in takes:
            chosen["what"] = os.path.basename(driving)
        out = os.path.join(
            tempfile.mkdtemp(dir=self.out_dir), f"{_stem(source)}__{_stem(driving)}.mp4"
        )
        try:
            written = files.animate_files(
                model.animator,
                source,
                driving,
                out,
                crop_face=crop_face,
                max_seconds=max_seconds,
                options=chosen,
                progress=progress,
            )
        except InputError as e:
            raise _for_page(e, (source, driving)) from None
        return out, written


__all__ = ["Model", "Studio", "open_models"]
