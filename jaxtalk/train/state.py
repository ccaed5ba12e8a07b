"""The train state: parameters by group, their optimizer states, EMA copies and counters."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

PyTree = Any


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: completed updates
    params: dict[str, PyTree]  # every group, trained or frozen
    opt_state: dict[str, PyTree]  # trained groups only
    ema_params: dict[str, PyTree]  # groups with an EMA decay in config
    model_state: PyTree  # non-param collections (e.g. batch_stats)
    rng: jax.Array  # base key; step keys are fold_in(rng, step)
    skipped_steps: jax.Array  # int32: updates dropped by the NaN guard

    def eval_params(self) -> dict[str, PyTree]:
        """The parameters evaluation and export use: EMA where kept, live otherwise."""
        return {**self.params, **self.ema_params}


def create(params: dict, model_state: PyTree, optimizers: dict, ema_groups, rng) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state={g: tx.init(params[g]) for g, tx in optimizers.items()},
        ema_params={g: jax.tree.map(lambda x: x, params[g]) for g in ema_groups},
        model_state=model_state,
        rng=rng,
        skipped_steps=jnp.zeros((), jnp.int32),
    )
