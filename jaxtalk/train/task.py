"""The task contract: what a task supplies to the training loop and the evaluation sweep,
and how they find it.

A task is a module `jaxtalk/tasks/<name>.py` with `build(config) -> Task`, where the
returned object subclasses `Task` below. The loop and the sweep know nothing else about
the model and call only the hooks declared here; the optional ones have defaults, so
nobody probes a task for methods. The loop asks the task for variables, for the optimizer
of each parameter group and for an ordered list of losses, one per trained group. A GAN lists
`("discriminator", d_loss)` then `("generator", g_loss)`; each loss differentiates only its
own group while seeing the others' current values, which is the usual alternating update
done inside one jitted step.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp

from jaxtalk.models.pixels import to_model_range

PyTree = Any
Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LossOutput:
    loss: jax.Array  # scalar to minimise
    metrics: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)
    model_state: PyTree = None  # updated non-param collections (or None)
    # Per-example arrays (leading batch axis) handed to the losses that follow, through
    # their batch dict and without gradient: a generator passes its fakes to the
    # discriminator instead of the discriminator re-running the generator.
    outputs: Mapping[str, jax.Array] = dataclasses.field(default_factory=dict)


# loss_fn(params, model_state, batch, rng) -> LossOutput, where `params` holds every group
# and the loop differentiates with respect to the named group only.
LossFn = Callable[[PyTree, PyTree, Batch, jax.Array], LossOutput]


class Task:
    """Base class of every task. Subclasses implement init, losses, eval_step, samples and
    data; pretrained, frozen_sources/load_frozen, preprocess, EVAL_MODES and eval_outputs
    have defaults."""

    # Batch keys holding uint8 pixels that `preprocess` turns into the models' float range.
    PIXEL_KEYS: tuple[str, ...] = ()
    # The evaluation protocols `eval_outputs` supports, e.g. ("self", "cross"); empty for a
    # task without one (`jaxtalk eval` / `jaxtalk sweep` then refuse its runs).
    EVAL_MODES: tuple[str, ...] = ("self",)

    def init(self, rng: jax.Array, batch: Batch) -> tuple[dict[str, PyTree], PyTree]:
        """Returns (params by group, model_state); params may be nn.Partitioned-boxed."""
        raise NotImplementedError(f"{type(self).__name__} does not implement init")

    def losses(self) -> list[tuple[str, LossFn]]:
        """(group, loss) pairs in update order; each group needs an optimizer in config."""
        raise NotImplementedError(f"{type(self).__name__} does not implement losses")

    def pretrained(self) -> dict[str, dict[str, PyTree]]:
        """Weights that replace parts of a fresh initialisation (not of a resumed run):
        {group: {subtree key: params}}, e.g. imported released weights. Default: none."""
        return {}

    def frozen_sources(self) -> dict[str, dict]:
        """Frozen groups (no optimizer) that checkpoints do not hold: {group: source}, where
        source is a JSON-able record of where the weights come from (a weights file, a run
        and its concrete step), resolved now so that it names fixed weights. The loop saves
        the record (and a fingerprint of the weights) with every checkpoint and rebuilds
        these groups with `load_frozen` on resume; eval and export do the same. Default:
        none (every group is saved)."""
        return {}

    def load_frozen(self, group: str, source: dict) -> dict[str, PyTree]:
        """The params of frozen group `group`, {subtree key: params} with every key of the
        group, read from a record `frozen_sources` gave (OSError/ValueError when missing)."""
        raise NotImplementedError(f"{type(self).__name__} declares no frozen group {group!r}")

    def preprocess(self, batch: Batch) -> Batch:
        """The batch with its uint8 pixel arrays (PIXEL_KEYS) in the models' float range
        ([-1, 1], float32); other entries, and pixels already float, are left as they are.
        Tasks call it on device, at the top of their entry points, so the loader and the
        host-to-device copy keep the compact uint8 frames."""
        out = dict(batch)
        for key in self.PIXEL_KEYS:
            if key in out and out[key].dtype == jnp.uint8:
                out[key] = to_model_range(out[key])
        return out

    def eval_step(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> Mapping[str, jax.Array]:
        """Per-batch mean metrics on held-out data (params are the EMA ones when kept)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement eval_step")

    def samples(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array
    ) -> Mapping[str, jax.Array]:
        """Images (N,H,W,3) or videos (N,T,H,W,3) in [0,1] for TensorBoard."""
        raise NotImplementedError(f"{type(self).__name__} does not implement samples")

    def eval_outputs(
        self, params: PyTree, model_state: PyTree, batch: Batch, rng: jax.Array, mode: str = "self"
    ) -> Mapping[str, jax.Array]:
        """For `jaxtalk eval` / `jaxtalk sweep` (jaxtalk/evaluate), one of EVAL_MODES: a
        dict with "prediction" (N,H,W,3) in [0,1], and where defined "target" (the frame
        to reproduce), "source" (the identity reference, for CSIM), "video"/"audio"/
        "audio_rate" (for lip-sync metrics)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no eval_outputs (no evaluation protocol)"
        )

    def data(
        self,
        split: str,
        *,
        global_batch_size: int,
        seed: int,
        process_index: int,
        process_count: int,
    ) -> Iterator[Batch]:
        """The process-local share of each global batch; the training iterator must be
        checkpointable (grain: get_state/set_state)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement data")


def get_task(config) -> Task:
    """The task `config.task` names: a module of jaxtalk/tasks/ (`anitalker_stage1`), or a
    full import path (`my_lab.tasks.portrait`) for a family living outside jaxtalk. Configs
    are code the user runs, so importing what they name is no wider trust."""
    if not config.task:
        raise ValueError("config.task is empty: set it to a module name under jaxtalk/tasks/")
    name = config.task if "." in config.task else f"jaxtalk.tasks.{config.task}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is None or not name.startswith(e.name):
            raise
        raise ValueError(f"unknown task {config.task!r}: no module {name}") from None
    return module.build(config)
