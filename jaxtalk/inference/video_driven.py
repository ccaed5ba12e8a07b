"""Video-driven animation: a source portrait moved by the motion of a driving video.

Works with LIA weights and AniTalker stage-1 weights (imported with `jaxtalk import`, or a
jaxtalk training run). The source is encoded once; driving frames are encoded and rendered
in fixed-size chunks under one jit, so memory stays flat however long the video is.

Motion modes as released: `absolute` renders each driving frame's motion code directly;
`relative` adds the driving motion *change* since the first driving frame to the
source's own motion code (LIA's rule), which keeps the source's pose and identity better
when source and driving faces differ.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.inference.animator import AnimationError, Animator, Driver, ExportedFunction
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.layers.weight_cache import WEIGHT_CACHE, weight_cache
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.pixels import to_model_range

MODES = ("absolute", "relative")
_MODEL_KEYS = ("size", "style_dim", "motion_dim", "width")


@dataclasses.dataclass(frozen=True)
class _Adapter:
    """How one generator class encodes: `source(o)` picks (code, feats, alpha) from
    `encode_source`'s output, `motion(o)` the motion code from `encode_motion`'s."""

    cls: type
    encode_source: Callable
    encode_motion: Callable
    source: Callable
    motion: Callable


# The generators the video animator drives, by weights kind / task name.
_ADAPTERS = {
    "lia": _Adapter(
        LIAGenerator,
        LIAGenerator.encode_source,
        LIAGenerator.encode_motion,
        lambda o: (o["wa"], o["feats"], o["alpha"]),
        lambda o: o,
    ),
    "anitalker_stage1": _Adapter(
        AniTalkerMotion,
        AniTalkerMotion.encode,
        AniTalkerMotion.encode,
        lambda o: (o["h"], o["feats"], o["alpha"]),
        lambda o: o["alpha"],
    ),
}


def _adapter(kind: str) -> _Adapter:
    if kind not in _ADAPTERS:
        raise AnimationError(
            f"cannot animate with {str(kind)[:40]!r} weights (lia, anitalker_stage1)"
        )
    return _ADAPTERS[kind]


def build_generator(kind: str, model_config: dict, source: str = "model_config"):
    """The stage-1 generator module for weights of `kind`, sized by `model_config` (checked:
    it may come from a weights file, named by `source`)."""
    from jaxtalk.convert import weights

    cls = _adapter(kind).cls
    return cls(**weights.module_options(cls, model_config, source, _MODEL_KEYS))


class MotionAnimator(Animator):
    """Encodes a source once, then renders driving motion on it chunk by chunk (LIA and
    AniTalker stage 1: one class, the generators differ only in their `_Adapter`)."""

    driver = Driver.VIDEO
    exports = True

    def __init__(
        self, kind: str, params, model_config: dict, chunk: int = 8, source: str = "model_config"
    ):
        adapter = _adapter(kind)
        model = build_generator(kind, model_config, source)
        self.kind, self.model, self.params, self.model_config = kind, model, params, model_config
        self.size = int(model_config.get("size", 256))
        self.chunk = chunk
        # the weight-only arrays of encoder and renderer, computed once for these weights
        image = jnp.zeros((1, self.size, self.size, 3), jnp.float32)
        cached = {**params, WEIGHT_CACHE: weight_cache(model, params, image, image)}
        self._source = lambda x: adapter.source(
            model.apply(cached, x, method=adapter.encode_source)
        )
        self._motion = lambda x: adapter.motion(
            model.apply(cached, x, method=adapter.encode_motion)
        )
        self._render = lambda *a: model.apply(cached, *a, method=adapter.cls.render)["image"]
        self._encode_source = jax.jit(self._source)
        self._drive = jax.jit(self._chunk_step, static_argnames=("relative",))

    @classmethod
    def from_stored(cls, stored: dict, path: str, **kw) -> "MotionAnimator":
        """`weights.load`'s dict of a file written by `jaxtalk import --release=lia|
        anitalker_stage1` or `jaxtalk export`."""
        config = stored["model_config"]
        kind = config.get("kind") or stored.get("release") or "anitalker_stage1"
        return cls(kind, {"params": stored["params"]}, config, source=path, **kw)

    @classmethod
    def from_weights(cls, path: str, **kw) -> "MotionAnimator":
        """A file written by `jaxtalk import --release=lia|anitalker_stage1` or `jaxtalk export`."""
        from jaxtalk.convert import weights

        if not fs.exists(path):
            raise AnimationError(f"{path}: no such weights file")
        return cls.from_stored(weights.load(path), path, **kw)

    @classmethod
    def from_run(cls, workdir: str, step: int | None = None, **kw) -> "MotionAnimator":
        """The EMA generator of an `anitalker_stage1` training run."""
        from jaxtalk.train import checkpoints

        config = checkpoints.run_config(workdir, step)
        if config.get("task") != "anitalker_stage1":
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not anitalker_stage1")
        variables = checkpoints.group_variables(workdir, "generator", step)
        return cls(
            "anitalker_stage1",
            {"params": variables["params"]["model"]},
            config["model"],
            source=workdir,
            **kw,
        )

    def _chunk_step(self, source_code, feats, alpha_source, frames, alpha_start, relative):
        alpha = self._motion(frames)
        n = frames.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        feats = [tile(f) for f in feats]
        if relative:
            return self._render(
                tile(source_code), feats, alpha, tile(alpha_start), tile(alpha_source)
            )
        return self._render(tile(source_code), feats, alpha)

    # ------------------------------------------------------------------ the contract
    def prepare(self, source: np.ndarray):
        return self._encode_source(to_model_range(source[None]))

    def start(self, state, driving: np.ndarray, mode: str = "relative"):
        """driving (T,S,S,3) uint8; mode: relative (default) or absolute motion."""
        if mode not in MODES:
            raise AnimationError(f"unknown motion mode {mode!r}: {', '.join(MODES)}")
        alpha_start = jax.jit(self._motion)(to_model_range(driving[:1]))
        return (state, alpha_start, mode == "relative"), driving

    def drive(self, state, steps: np.ndarray):
        (code, feats, alpha_source), alpha_start, relative = state
        return self._drive(
            code, feats, alpha_source, to_model_range(steps), alpha_start, relative=relative
        )

    def export_function(self) -> ExportedFunction:
        """`frames = f(source (1,S,S,3) in [-1,1], alphas (T, motion_dim))`, absolute motion
        (relative = alphas - alpha_start + alpha_source, the renderer being linear in it)."""
        model = self.model
        (frames,) = jax.export.symbolic_shape("T")
        motion_dim = int(self.model_config.get("motion_dim", 20))
        specs = [
            jax.ShapeDtypeStruct((1, self.size, self.size, 3), jnp.float32),
            jax.ShapeDtypeStruct((frames, motion_dim), jnp.float32),
        ]
        return ExportedFunction(
            lambda p, source, alphas: model.apply({"params": p}, source, alphas, method="animate"),
            self.params["params"],
            specs,
            ["source", "alphas"],
            ["frames"],
            {"model": self.kind, **self.model_config},
        )


# What this module drives (jaxtalk/discovery.py): weights kinds and the stage-1 task name.
ANIMATORS = {"lia": MotionAnimator, "anitalker_stage1": MotionAnimator}

__all__ = ["ANIMATORS", "MODES", "MotionAnimator", "build_generator"]
