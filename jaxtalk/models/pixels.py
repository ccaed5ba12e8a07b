"""Pixels <-> the models' float range, written once.

Every image model here takes float32 pixels in [-1, 1]; loaders, tasks and animators hold
uint8 frames and convert with `to_model_range` (the tasks through `Task.preprocess`).
"""

from __future__ import annotations

import jax.numpy as jnp


def to_model_range(pixels) -> jnp.ndarray:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1]."""
    return jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0


def to_01(x) -> jnp.ndarray:
    """Model-range images in [-1, 1] -> float32 in [0, 1] (clipped)."""
    return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)
