"""Inference: the animator contract (`animator.py`) and one animator per family.

`ANIMATORS` maps a weights file's `kind` (its model_config's, else its release name) or a
training run's task name to the animator class that drives it, as "module:Class", imported
on first use. A family adds its lines here; commands find animators only through
`animator_class` / `open_animator` and never branch on model classes.
"""

from __future__ import annotations

import importlib
import os

from jaxtalk.inference.animator import AnimationError, Animator, Driver

ANIMATORS = {
    "lia": "video_driven:MotionAnimator",
    "anitalker_stage1": "video_driven:MotionAnimator",   # weights kind and task name alike
    "anitalker_stage2": "audio_driven:AudioAnimator",
}


def animator_class(kind: str, what: str = "weights") -> type[Animator]:
    """The animator class for weights of `kind` or a run of task `kind`."""
    if kind not in ANIMATORS:
        raise AnimationError(f"{what}: cannot animate {str(kind)[:40]!r} weights or runs "
                             f"(animators for: {', '.join(sorted(ANIMATORS))})")
    module, name = ANIMATORS[kind].split(":")
    return getattr(importlib.import_module(f"jaxtalk.inference.{module}"), name)


def weights_kind(stored: dict) -> str:
    """A loaded weights file's kind: its model_config's `kind`, else its release name."""
    config = stored.get("model_config") or {}
    return (config.get("kind") or stored.get("release")
            or ("anitalker_stage2" if "infer_type" in config else "anitalker_stage1"))


def _is_run(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "checkpoints"))


def open_animator(path: str, *, driver: Driver | None = None, run: bool | None = None,
                  step: int | None = None, **options) -> Animator:
    """The animator for a weights file or a training run directory (`run`: which one `path`
    is; default: a directory with checkpoints/ is a run). `driver`: the kind the caller
    drives with, checked before the model is built. `options` go to the class's
    `from_stored` / `from_run` (e.g. chunk, stage1, hubert)."""
    run = _is_run(path) if run is None else run
    if run:
        from jaxtalk.train import checkpoints

        kind = checkpoints.run_config(path, step).get("task")
    else:
        from jaxtalk.convert import weights

        if not os.path.exists(path):
            raise AnimationError(f"{path}: no such weights file")
        stored = weights.load(path)
        kind = weights_kind(stored)
    cls = animator_class(kind, path)
    if driver is not None and cls.driver is not Driver(driver):
        raise AnimationError(f"{path}: {kind} {'runs' if run else 'weights'} are driven by "
                             f"{cls.driver.value}, not {Driver(driver).value} "
                             f"(--mode={cls.driver.value})")
    if run:
        return cls.from_run(path, step, **options)
    return cls.from_stored(stored, path, **options)


__all__ = ["ANIMATORS", "AnimationError", "Animator", "Driver", "animator_class",
           "open_animator", "weights_kind"]
