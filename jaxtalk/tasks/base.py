"""What a task supplies to the training loop, and how the loop finds it.

A task is a module `jaxtalk/tasks/<name>.py` with `build(config) -> Task`. The loop knows
nothing else about the model: it asks the task for variables, for the optimizer of each
parameter group and for an ordered list of losses, one per trained group. A GAN lists
`("discriminator", d_loss)` then `("generator", g_loss)`; each loss differentiates only its
own group while seeing the others' current values, which is the usual alternating update
done inside one jitted step.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Mapping, Protocol

import jax

PyTree = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossOutput:
    loss: jax.Array                                    # scalar to minimise
    metrics: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)
    model_state: PyTree = None                         # updated non-param collections (or None)
    # Per-example arrays (leading batch axis) handed to the losses that follow, through
    # their batch dict and without gradient: a generator passes its fakes to the
    # discriminator instead of the discriminator re-running the generator.
    outputs: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)


# loss_fn(params, model_state, batch, rng) -> LossOutput, where `params` holds every group
# and the loop differentiates with respect to the named group only.
LossFn = Callable[[PyTree, PyTree, Batch, jax.Array], LossOutput]


class Task(Protocol):
    def init(self, rng: jax.Array, batch: Batch) -> tuple[dict[str, PyTree], PyTree]:
        """Returns (params by group, model_state); params may be nn.Partitioned-boxed."""

    def losses(self) -> list[tuple[str, LossFn]]:
        """(group, loss) pairs in update order; each group needs an optimizer in config."""

    def eval_step(self, params: PyTree, model_state: PyTree, batch: Batch,
                  rng: jax.Array) -> Mapping[str, jax.Array]:
        """Per-batch mean metrics on held-out data (params are the EMA ones when kept)."""

    def samples(self, params: PyTree, model_state: PyTree, batch: Batch,
                rng: jax.Array) -> Mapping[str, jax.Array]:
        """Images (N,H,W,3) or videos (N,T,H,W,3) in [0,1] for TensorBoard."""

    # Optional, for `jaxtalk eval` / `jaxtalk sweep` (jaxtalk/evaluate):
    # EVAL_MODES: tuple of the protocols the task supports, e.g. ("self", "cross").
    # def eval_outputs(self, params, model_state, batch, rng, mode) -> dict with
    #   "prediction" (N,H,W,3) in [0,1], and where defined "target" (the frame to
    #   reproduce), "source" (the identity reference, for CSIM), "video"/"audio"/
    #   "audio_rate" (for lip-sync metrics).

    def data(self, split: str, *, global_batch_size: int, seed: int, process_index: int,
             process_count: int) -> Iterator[Batch]:
        """The process-local share of each global batch; the training iterator must be
        checkpointable (grain: get_state/set_state)."""


def get_task(config) -> Task:
    if not config.task:
        raise ValueError("config.task is empty: set it to a module name under jaxtalk/tasks/")
    try:
        module = importlib.import_module(f"jaxtalk.tasks.{config.task}")
    except ModuleNotFoundError as e:
        if e.name != f"jaxtalk.tasks.{config.task}":
            raise
        raise ValueError(f"unknown task {config.task!r}: no module jaxtalk/tasks/"
                         f"{config.task}.py") from None
    return module.build(config)
