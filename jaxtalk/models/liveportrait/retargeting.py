"""LivePortrait's stitching and retargeting networks (S and R): Linear/ReLU stacks.

Released instances (src/config/models.yaml), as (hidden_sizes, output_size) with the input
size taken from the input:
- stitching: 126 = 2 * 21 * 3 (source and driving keypoints) -> [128, 128, 64] -> 65
  (an offset per keypoint coordinate, then tx, ty);
- lip: 65 = 63 + 2 (source keypoints, source and driving lip ratios) -> [128, 128, 64] -> 63;
- eye: 66 = 63 + 3 (source keypoints, two source eye ratios, the driving one)
  -> [256, 256, 128, 128, 64] -> 63.
Layer i is named `mlp_{2i}` after its index in the release's nn.Sequential (`mlp.{2i}`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn

STITCHING = dict(hidden_sizes=(128, 128, 64), output_size=65)
LIP = dict(hidden_sizes=(128, 128, 64), output_size=63)
EYE = dict(hidden_sizes=(256, 256, 128, 128, 64), output_size=63)
RELEASED = {"stitching": STITCHING, "lip": LIP, "eye": EYE}


class RetargetingMLP(nn.Module):
    """x (B, input_size) -> (B, output_size): Linear, ReLU, ..., Linear."""

    hidden_sizes: Sequence[int] = STITCHING["hidden_sizes"]
    output_size: int = STITCHING["output_size"]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        for i, size in enumerate(self.hidden_sizes):
            x = nn.relu(torch_nn.dense(size, name=f"mlp_{2 * i}", **kw)(x))
        return torch_nn.dense(self.output_size, name=f"mlp_{2 * len(self.hidden_sizes)}", **kw)(x)


def mlp_config(params: Mapping) -> dict:
    """(hidden_sizes, output_size) of a RetargetingMLP from its params' kernel shapes."""
    layers = sorted(params, key=lambda name: int(name.rsplit("_", 1)[1]))
    sizes = [int(params[name]["kernel"].shape[1]) for name in layers]
    return dict(hidden_sizes=tuple(sizes[:-1]), output_size=sizes[-1])
