"""AED / APD: average expression and pose distances between generated and driving frames.

Both are measured by a motion extractor: any callable mapping NHWC images in [0, 1] to
{"expression": (N, E), "pose": (N, 3)} (pose as yaw, pitch, roll in degrees). LivePortrait
reports them with its own motion extractor M: `from_liveportrait_motion` makes one from any
function returning M's raw outputs (expression = its 3K expression deltas, pose = its pose
bins as degrees), `liveportrait_extractor` from a LivePortrait weights file (registered as
"liveportrait" in jaxtalk/evaluate/registry.py: the `aed_apd` metric's default); other
extractors can be registered by name (`register_extractor`), e.g. a 3DMM regressor.

Per frame: AED = mean |expression_pred - expression_target| over expression dims,
APD = mean |pose_pred - pose_target| over the three angles; a test set's value is the mean
over frames.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol

import jax
import jax.numpy as jnp


class MotionExtractor(Protocol):
    def __call__(self, images: jnp.ndarray) -> Mapping[str, jnp.ndarray]:
        """NHWC images in [0, 1] -> {"expression": (N, E), "pose": (N, 3)}."""


# name -> factory(weights_path or None, weights_dir=None) -> MotionExtractor
_EXTRACTORS: dict[str, Callable[..., MotionExtractor]] = {}


def register_extractor(name: str, factory: Callable[..., MotionExtractor]) -> None:
    """Makes an extractor available to the `aed_apd` metric under `name`."""
    _EXTRACTORS[name] = factory


def extractor_names() -> list[str]:
    return sorted(_EXTRACTORS)


def make_extractor(name: str, weights=None, weights_dir=None) -> MotionExtractor:
    """The extractor registered as `name`, with its weights file (None: found in
    `weights_dir`, by default the weights directory)."""
    if name not in _EXTRACTORS:
        raise KeyError(
            f"no motion extractor {name!r} registered (known: {extractor_names()}); "
            "register one with jaxtalk.evaluate.pose_expression.register_extractor"
        )
    return _EXTRACTORS[name](weights, weights_dir=weights_dir)


def liveportrait_motion(info: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
    """LivePortrait M's raw outputs -> {"expression": exp (N, 3K), "pose": (N, 3) degrees,
    yaw, pitch, roll} (bins turned into degrees as the release does)."""
    from jaxtalk.models.liveportrait.keypoints import degrees

    exp = jnp.asarray(info["exp"], jnp.float32)
    pose = jnp.stack([degrees(info[k]) for k in ("yaw", "pitch", "roll")], -1)
    return {"expression": exp.reshape(exp.shape[0], -1), "pose": pose}


def from_liveportrait_motion(
    motion_fn: Callable[[jnp.ndarray], Mapping[str, jnp.ndarray]], input_size: int = 256
) -> MotionExtractor:
    """An AED/APD extractor from `motion_fn(images (N, S, S, 3) in [0, 1]) -> M's outputs`
    (e.g. `lambda x: MotionExtractor().apply(variables, x)`); frames are resized to S."""

    def extract(images):
        images = jnp.asarray(images, jnp.float32)
        if images.shape[1:3] != (input_size, input_size):
            shape = (images.shape[0], input_size, input_size, images.shape[3])
            images = jax.image.resize(images, shape, "linear", antialias=True)
        return liveportrait_motion(motion_fn(images))

    return extract


def liveportrait_extractor(stored: Mapping, source: str) -> MotionExtractor:
    """The extractor LivePortrait's paper measures AED / APD with: M of a weights file from
    `jaxtalk import --release=liveportrait` (or a LivePortrait run's export), run at the
    file's input size. Registered as "liveportrait", the `aed_apd` metric's default."""
    from jaxtalk.convert import weights
    from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor as Network

    config = stored.get("model_config") or {}
    params = (stored.get("params") or {}).get("motion")
    if params is None:
        raise ValueError(f"{source}: no LivePortrait motion extractor ('motion') parameters")
    options = weights.module_options(Network, dict(config.get("motion") or {}), source)
    network = Network(**options)
    motion = jax.jit(lambda x: network.apply({"params": params}, x))
    return from_liveportrait_motion(motion, int(config.get("input_size", 256)))


def _per_frame_l1(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    a = jnp.asarray(a, jnp.float32).reshape(a.shape[0], -1)
    b = jnp.asarray(b, jnp.float32).reshape(b.shape[0], -1)
    return jnp.mean(jnp.abs(a - b), axis=-1)


def expression_pose_distances(
    extractor: MotionExtractor, prediction: jnp.ndarray, target: jnp.ndarray
) -> dict[str, jnp.ndarray]:
    """{"aed": (N,), "apd": (N,)} for generated frames against their driving frames."""
    pred, true = extractor(prediction), extractor(target)
    for name, motion in (("prediction", pred), ("target", true)):
        missing = {"expression", "pose"} - set(motion)
        if missing:
            raise ValueError(f"motion extractor output for the {name} lacks {sorted(missing)}")
    return {
        "aed": _per_frame_l1(pred["expression"], true["expression"]),
        "apd": _per_frame_l1(pred["pose"], true["pose"]),
    }
