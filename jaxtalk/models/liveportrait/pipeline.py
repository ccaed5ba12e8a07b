"""LivePortrait's per-frame inference on one variables tree, as the release's pipeline runs
it (src/live_portrait_pipeline.py with relative motion, 'pose-friendly', stitching on):

- `prepare_source`: once per source image: F's feature volume, M's motion dict and the
  source's implicit keypoints x_s;
- `animate`: per driving frame: the driven keypoints (`keypoints.relative_motion` against
  the first driving frame's motion), stitched (`keypoints.stitch`) when the variables hold
  the stitching MLP, then W and G -> image (B, 8h, 8w, 3) in [0, 1].

The variables tree is the one `jaxtalk import --release=liveportrait` writes (and the
training task keeps): {"params": {appearance, motion, warping, spade[, stitching, lip,
eye]}, "batch_stats": {appearance, warping, spade}}; `networks` builds the four modules
from the module options its model_config holds (the release's where it holds none).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import jax.numpy as jnp

from jaxtalk.models.liveportrait import keypoints
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.generator import SPADEDecoder
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.warping import WarpingNetwork

NETWORKS = {
    "appearance": AppearanceFeatureExtractor,
    "motion": MotionExtractor,
    "warping": WarpingNetwork,
    "spade": SPADEDecoder,
}


class Source(NamedTuple):
    """What the release computes once per source image."""

    feature: Any  # (B, D, h, w, C) F's volume
    info: Mapping[str, Any]  # M's raw outputs
    kp: Any  # (B, K, 3) the source's implicit keypoints


def networks(model_config: Mapping | None = None, dtype=jnp.float32) -> dict:
    """{group: module} with the options `model_config[group]` gives (lists as tuples)."""
    config = model_config or {}
    out = {}
    for group, cls in NETWORKS.items():
        options = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in dict(config.get(group) or {}).items()
        }
        out[group] = cls(**options, dtype=dtype)
    return out


def network_variables(variables: Mapping, group: str) -> dict:
    """One network's {"params"[, "batch_stats"]} out of the whole tree."""
    out = {"params": variables["params"][group]}
    if group in (variables.get("batch_stats") or {}):
        out["batch_stats"] = variables["batch_stats"][group]
    return out


def _apply(nets, variables, group, *args):
    return nets[group].apply(network_variables(variables, group), *args)


def motion(nets: Mapping, variables: Mapping, image) -> dict:
    """M's outputs for images (B, H, W, 3) in [0, 1]."""
    return _apply(nets, variables, "motion", image)


def prepare_source(nets: Mapping, variables: Mapping, image) -> Source:
    info = motion(nets, variables, image)
    feature = _apply(nets, variables, "appearance", image)
    return Source(feature, info, keypoints.transform_keypoints(info))


def driven_keypoints(
    variables: Mapping,
    source: Source,
    driving_info: Mapping,
    first_driving_info: Mapping,
    stitching: bool = True,
):
    """(kp_source, kp_driving), both (B, K, 3): the source's keypoints moved by the driving
    frame's motion relative to the first driving frame's, stitched when asked and the
    variables hold the stitching MLP. A source of batch 1 is broadcast over B frames."""
    kp_driving = keypoints.relative_motion(source.info, driving_info, first_driving_info)
    kp_source = jnp.broadcast_to(source.kp, kp_driving.shape)
    if stitching and "stitching" in variables["params"]:
        kp_driving = keypoints.stitch(variables["params"]["stitching"], kp_source, kp_driving)
    return kp_source, kp_driving


def animate(
    nets: Mapping,
    variables: Mapping,
    source: Source,
    driving_info: Mapping,
    first_driving_info: Mapping,
    stitching: bool = True,
):
    """The frames (B, 8h, 8w, 3) for B driving motions: keypoints, then W and G."""
    kp_source, kp_driving = driven_keypoints(
        variables, source, driving_info, first_driving_info, stitching
    )
    feature = jnp.broadcast_to(source.feature, (kp_driving.shape[0],) + source.feature.shape[1:])
    warped = _apply(nets, variables, "warping", feature, kp_driving, kp_source)
    return _apply(nets, variables, "spade", warped["out"])
