"""Composite orbax checkpoints: train state + data iterator state + config.

Saves are asynchronous (the loop keeps stepping while the arrays are written) and atomic
(orbax writes to a temporary directory and renames it once complete), so a run killed at
any moment resumes from the last complete checkpoint. Restoring takes the abstract state
with the *current* run's shardings, which is what lets a run saved on 8 devices resume on 4.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies


def _preservation(config):
    keep = [policies.LatestN(n=config.checkpoint.keep)]
    if config.checkpoint.best_metric:
        name = config.checkpoint.best_metric
        keep.append(policies.BestN(
            get_metric_fn=lambda m: m[name], n=config.checkpoint.keep_best,
            reverse=config.checkpoint.best_mode == "min", keep_checkpoints_without_metrics=False))
    return policies.AnyPreservationPolicy(keep)


class Checkpointer:
    ITEMS = ("state", "data", "config")

    def __init__(self, workdir: str, config):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self._config_json = json.loads(config.to_json_best_effort())
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=config.checkpoint.async_save,
            preservation_policy=_preservation(config),
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=self.ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_state, metrics: dict | None = None) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"state": _jsonable(data_state)}),
            config=ocp.args.JsonSave(self._config_json),
        )
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state):
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
        ))
        return restored.state, _from_jsonable(restored.data["state"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _jsonable(state):
    # grain iterator states are dicts or JSON-encoded bytes.
    if isinstance(state, bytes):
        return {"__bytes__": state.decode("utf-8")}
    return state


def _from_jsonable(state):
    if isinstance(state, dict) and "__bytes__" in state:
        return state["__bytes__"].encode("utf-8")
    return state


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract_tree, shardings)
