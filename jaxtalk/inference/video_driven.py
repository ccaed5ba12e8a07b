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

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.pixels import to_model_range

MODES = ("absolute", "relative")
_MODEL_KEYS = ("size", "style_dim", "motion_dim", "width")


class AnimationError(ValueError):
    """Unusable input for animation; the message names the file and the reason."""


def read_image(path: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, as stored (see jaxtalk.media.face_detect for a face crop)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise AnimationError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AnimationError(f"{path}: not a readable image ({e})") from None


def load_image(path: str, size: int) -> np.ndarray:
    """An image file -> (size, size, 3) uint8, centre-cropped to a square first."""
    img = Image.fromarray(read_image(path))
    x, y, side, _ = centre_square(*img.size)
    img = img.crop((x, y, x + side, y + side))
    return np.asarray(img.resize((size, size), Image.BICUBIC))


def centre_square(width: int, height: int) -> list[int]:
    """The (x, y, w, h) of the largest centred square."""
    side = min(width, height)
    return [(width - side) // 2, (height - side) // 2, side, side]


def _to_uint8(images: jnp.ndarray) -> np.ndarray:
    return np.asarray(jnp.clip((images + 1.0) * 127.5, 0, 255).round().astype(jnp.uint8))


def build_generator(kind: str, model_config: dict, source: str = "model_config"):
    """The stage-1 generator module for weights of `kind`, sized by `model_config` (checked:
    it may come from a weights file, named by `source`)."""
    from jaxtalk.convert import weights

    classes = {"lia": LIAGenerator, "anitalker_stage1": AniTalkerMotion}
    if kind not in classes:
        raise AnimationError(f"cannot animate with {str(kind)[:40]!r} weights (lia, anitalker_stage1)")
    return classes[kind](**weights.module_options(classes[kind], model_config, source, _MODEL_KEYS))


def export_animate_function(kind: str, params, model_config: dict, path: str,
                            platforms=("cpu",), source: str = "model_config") -> dict:
    """Serializes `frames = f(source (1,S,S,3), alphas (T, motion_dim))` (absolute motion;
    relative = alphas - alpha_start + alpha_source) to a `.jaxfn` file that runs without
    jaxtalk (see jaxtalk/export/jax_function.py)."""
    from jaxtalk.export import jax_function

    model = build_generator(kind, model_config, source)
    size = int(model_config.get("size", 256))
    (frames,) = jax.export.symbolic_shape("T")
    specs = [jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
             jax.ShapeDtypeStruct((frames, int(model_config.get("motion_dim", 20))), jnp.float32)]
    return jax_function.export_function(
        lambda p, source, alphas: model.apply({"params": p}, source, alphas, method="animate"),
        params, specs, path, input_names=["source", "alphas"], output_names=["frames"],
        platforms=platforms, metadata={"model": kind, **model_config})


class MotionAnimator:
    """Encodes a source once, then renders driving motion on it chunk by chunk."""

    def __init__(self, kind: str, params, model_config: dict, chunk: int = 8,
                 source: str = "model_config"):
        model = build_generator(kind, model_config, source)
        self.size = int(model_config.get("size", 256))
        self.chunk = chunk
        if isinstance(model, LIAGenerator):
            encode_source = lambda x: model.apply(params, x, method=LIAGenerator.encode_source)  # noqa: E731
            self._source = lambda x: (lambda o: (o["wa"], o["feats"], o["alpha"]))(encode_source(x))
            self._motion = lambda x: model.apply(params, x, method=LIAGenerator.encode_motion)
        else:
            encode = lambda x: model.apply(params, x, method=AniTalkerMotion.encode)  # noqa: E731
            self._source = lambda x: (lambda o: (o["h"], o["feats"], o["alpha"]))(encode(x))
            self._motion = lambda x: encode(x)["alpha"]
        render = type(model).render
        self._render = lambda *a: model.apply(params, *a, method=render)["image"]
        self._encode_source = jax.jit(self._source)
        self._drive = jax.jit(self._chunk_step, static_argnames=("relative",))

    @classmethod
    def from_weights(cls, path: str, **kw) -> "MotionAnimator":
        """A file written by `jaxtalk import --release=lia|anitalker_stage1` or `jaxtalk export`."""
        from jaxtalk.convert import weights

        if not os.path.exists(path):
            raise AnimationError(f"{path}: no such weights file")
        stored = weights.load(path)
        config = stored["model_config"]
        kind = config.get("kind") or stored.get("release") or "anitalker_stage1"
        return cls(kind, {"params": stored["params"]}, config, source=path, **kw)

    @classmethod
    def from_run(cls, workdir: str, step: int | None = None, **kw) -> "MotionAnimator":
        """The EMA generator of an `anitalker_stage1` training run."""
        from jaxtalk.train import checkpoints

        config = checkpoints.run_config(workdir, step)
        if config.get("task") != "anitalker_stage1":
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not anitalker_stage1")
        variables = checkpoints.group_variables(workdir, "generator", step)
        return cls("anitalker_stage1", {"params": variables["params"]["model"]}, config["model"],
                   source=workdir, **kw)

    def _chunk_step(self, source_code, feats, alpha_source, frames, alpha_start, relative):
        alpha = self._motion(frames)
        n = frames.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        feats = [tile(f) for f in feats]
        if relative:
            return self._render(tile(source_code), feats, alpha, tile(alpha_start),
                                tile(alpha_source))
        return self._render(tile(source_code), feats, alpha)

    def animate(self, source: np.ndarray, driving: np.ndarray, mode: str = "relative",
                progress: Callable[[int], None] | None = None) -> np.ndarray:
        """source (S,S,3) uint8, driving (T,S,S,3) uint8 -> (T,S,S,3) uint8 frames."""
        if mode not in MODES:
            raise AnimationError(f"unknown motion mode {mode!r}: {', '.join(MODES)}")
        code, feats, alpha_source = self._encode_source(to_model_range(source[None]))
        alpha_start = jax.jit(self._motion)(to_model_range(driving[:1]))
        out = []
        for start in range(0, len(driving), self.chunk):
            chunk = driving[start:start + self.chunk]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], self.chunk - len(chunk), 0)])
            frames = self._drive(code, feats, alpha_source, to_model_range(padded), alpha_start,
                                 relative=mode == "relative")
            out.append(_to_uint8(frames)[: len(chunk)])
            if progress:
                progress(len(chunk))
        return np.concatenate(out)
