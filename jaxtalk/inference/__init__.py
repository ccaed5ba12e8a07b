"""Inference: the animator contract (`animator.py`) and one animator per family.

Each animator module declares `ANIMATORS = {kind: AnimatorClass}`: the weights `kind`s (a
weights file's model_config `kind`, else its release name) and training-run task names it
drives. `animators()` collects them from the modules of this package and of the
$JAXTALK_PLUGINS packages (jaxtalk/discovery.py), so a new family adds its module and edits
nothing here. Commands find animators only through `animator_class` / `open_animator` and
never branch on model classes; a kind read from a file is only looked up, never imported.
"""

from __future__ import annotations

from jaxtalk import discovery, fs, lapack_threads
from jaxtalk.inference.animator import AnimationError, Animator, Driver
from jaxtalk.train import checkpoints


def animators() -> dict[str, type[Animator]]:
    """Every declared animator class, by the kinds and task names it drives."""
    found: dict[str, type[Animator]] = {}
    for _module, declared in discovery.declarations("jaxtalk.inference", "ANIMATORS"):
        found.update(declared)
    return found


def animator_class(kind: str, what: str = "weights") -> type[Animator]:
    """The animator class for weights of `kind` or a run of task `kind`."""
    known = animators()
    if kind not in known:
        raise AnimationError(
            f"{what}: cannot animate {str(kind)[:40]!r} weights or runs "
            f"(animators for: {', '.join(sorted(known))})"
        )
    return known[kind]


def weights_kind(stored: dict) -> str:
    """A loaded weights file's kind: its model_config's `kind`, else its release name."""
    config = stored.get("model_config") or {}
    return (
        config.get("kind")
        or stored.get("release")
        or ("anitalker_stage2" if "infer_type" in config else "anitalker_stage1")
    )


def open_animator(
    path: str,
    *,
    driver: Driver | None = None,
    run: bool | None = None,
    step: int | None = None,
    **options,
) -> Animator:
    """The animator for a weights file or a training run directory (`run`: which one `path`
    is; default: a directory with checkpoints/ is a run). `driver`: the kind the caller
    drives with, checked before the model is built. `options` go to the class's
    `from_stored` / `from_run` (e.g. chunk, stage1, hubert)."""
    lapack_threads.single_thread()  # for callers of this API outside the CLI as well
    run = checkpoints.is_run(path) if run is None else run
    if run:
        if not checkpoints.is_run(path):
            raise AnimationError(f"{path}: not a training run (no checkpoints/ directory)")
        kind = checkpoints.run_config(path, step).get("task")
    else:
        from jaxtalk.convert import weights

        if not fs.exists(path):
            raise AnimationError(f"{path}: no such weights file")
        stored = weights.load(path)
        kind = weights_kind(stored)
    cls = animator_class(kind, path)
    if driver is not None and Driver(driver) not in (cls.drivers or (cls.driver,)):
        raise AnimationError(
            f"{path}: {kind} {'runs' if run else 'weights'} are driven by "
            f"{cls.driver.value}, not {Driver(driver).value} "
            f"(--mode={cls.driver.value})"
        )
    if cls.drivers:
        options["driver"] = Driver(driver or cls.driver)
    if run:
        return cls.from_run(path, step, **options)
    return cls.from_stored(stored, path, **options)


__all__ = [
    "AnimationError",
    "Animator",
    "Driver",
    "animator_class",
    "animators",
    "open_animator",
    "weights_kind",
]
