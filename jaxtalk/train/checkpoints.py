"""Composite orbax checkpoints: train state + data iterator state + config + frozen sources.

Frozen groups that a task rebuilds from their source (`Task.frozen_sources`: a stage-1 run,
a HuBERT or VGG weights file) are not written into the train state: the `frozen` item
records {group: {"source": ..., "fingerprint": ...}} and resume, eval and export load them
from there (`load_frozen_groups`), failing with a one-line `FrozenSourceError` when the
source is gone or holds other weights than the run started with.

Saves are asynchronous (the loop keeps stepping while the arrays are written) and atomic
(orbax writes to a temporary directory and renames it once complete), so a run killed at
any moment resumes from the last complete checkpoint. Restoring takes the abstract state
with the *current* run's shardings, which is what lets a run saved on 8 devices resume on 4.
"""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from jaxtalk import fs
from jaxtalk.convert import weights
from jaxtalk.errors import InputError, one_line


class FrozenSourceError(InputError):
    """A frozen group's recorded source is missing or no longer holds the run's weights."""


def _preservation(config):
    keep = [policies.LatestN(n=config.checkpoint.keep)]
    if config.checkpoint.best_metric:
        name = config.checkpoint.best_metric
        keep.append(
            policies.BestN(
                get_metric_fn=lambda m: m[name],
                n=config.checkpoint.keep_best,
                reverse=config.checkpoint.best_mode == "min",
                keep_checkpoints_without_metrics=False,
            )
        )
    return policies.AnyPreservationPolicy(keep)


class Checkpointer:
    ITEMS = ("state", "data", "config", "frozen")

    def __init__(self, workdir: str, config):
        self.directory = fs.join(fs.absolute(workdir), "checkpoints")
        self._config_json = json.loads(config.to_json_best_effort())
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=config.checkpoint.async_save,
            preservation_policy=_preservation(config),
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=self.ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self, step: int, state, data_state, metrics: dict | None = None, frozen: dict | None = None
    ) -> None:
        """`state` without the frozen groups; `frozen` their record (see module doc)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"state": _jsonable(data_state)}),
            config=ocp.args.JsonSave(self._config_json),
            frozen=ocp.args.JsonSave(frozen or {}),
        )
        self.manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state):
        """Restores onto the shardings carried by `abstract_state` (ShapeDtypeStructs)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data=ocp.args.JsonRestore(),
            ),
        )
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


def without_groups(state, groups):
    """The train state (or its abstract / shardings) without params and EMA of `groups`."""
    drop = lambda tree: {g: v for g, v in tree.items() if g not in groups}  # noqa: E731
    return state.replace(params=drop(state.params), ema_params=drop(state.ema_params))


# ----------------------------------------------------------------------------- frozen groups


def fingerprint(tree) -> str:
    """sha256 over the key paths, dtypes, shapes and bytes of a params tree's leaves."""
    h = hashlib.sha256()
    for path, leaf in sorted(
        jax.tree_util.tree_leaves_with_path(tree), key=lambda pl: jax.tree_util.keystr(pl[0])
    ):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_frozen_groups(task, record: dict) -> dict:
    """{group: host params} of the frozen groups a record names, each from its source; the
    fingerprint is checked when the record has one. Fails with FrozenSourceError."""
    out = {}
    for group, entry in record.items():
        source = json.dumps(entry["source"], sort_keys=True)
        try:
            params = task.load_frozen(group, entry["source"])
        except (OSError, ValueError, KeyError) as e:
            raise FrozenSourceError(
                one_line(f"frozen group {group!r}: cannot load its source {source}: {e}", 500)
            ) from None
        params = jax.tree.map(np.asarray, params)
        if entry.get("fingerprint") and fingerprint(params) != entry["fingerprint"]:
            raise FrozenSourceError(
                one_line(
                    f"frozen group {group!r}: its source {source} holds other weights than "
                    "the run was trained with (fingerprint changed); restore the original",
                    500,
                )
            )
        out[group] = params
    return out


def frozen_record(workdir: str, step: int | None = None) -> dict:
    """The frozen-group record a run saved with a checkpoint ({} for older checkpoints)."""
    path = fs.join(_step_dir(workdir, step), "frozen", "metadata")
    return fs.read_json(path) if fs.exists(path) else {}


def _run_frozen(workdir: str, step: int | None, groups=None) -> dict:
    """Host params of a run's frozen groups (those in `groups`, default all), from source."""
    record = frozen_record(workdir, step)
    record = {g: e for g, e in record.items() if groups is None or g in groups}
    if not record:
        return {}
    import ml_collections

    from jaxtalk.train.task import get_task

    task = get_task(ml_collections.ConfigDict(run_config(workdir, step)))
    return load_frozen_groups(task, record)


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
    )


# ----------------------------------------------------------------------------- reading runs


def saved_steps(workdir: str) -> list[int]:
    directory = fs.join(fs.absolute(workdir), "checkpoints")
    return sorted(int(s) for s in fs.listdir(directory) if s.isdigit())


def _step_dir(workdir: str, step: int | None) -> str:
    steps = saved_steps(workdir)
    if not steps:
        raise ValueError(f"{workdir}: no checkpoints in {fs.join(workdir, 'checkpoints')}")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"{workdir}: no checkpoint at step {step} (have {steps})")
    return fs.join(fs.absolute(workdir), "checkpoints", str(step))


def run_config(workdir: str, step: int | None = None) -> dict:
    """The config a run saved with its checkpoint, as a plain dict (an old task name
    mapped to today's, see `weights.current_name`)."""
    config = fs.read_json(fs.join(_step_dir(workdir, step), "config", "metadata"))
    if isinstance(config, dict) and "task" in config:
        config["task"] = weights.current_name(config["task"])
    return config


def group_variables(workdir: str, group: str, step: int | None = None) -> dict:
    """{'params', maybe 'batch_stats'} of one parameter group of a run (EMA preferred).

    `group` may name a sub-tree, 'generator/model'."""
    state = ocp.StandardCheckpointer().restore(fs.join(_step_dir(workdir, step), "state"))
    name, *path = group.split("/")
    source = (state.get("ema_params") or {}).get(name) or state["params"].get(name)
    if source is None:
        source = _run_frozen(workdir, step, [name]).get(name)
    if source is None:
        groups = sorted(state["params"]) + sorted(frozen_record(workdir, step))
        raise ValueError(f"{workdir}: no parameter group {name!r} (groups: {groups})")
    for key in path:
        if not isinstance(source, dict) or key not in source:
            found = sorted(source) if isinstance(source, dict) else "a leaf"
            raise ValueError(f"{workdir}: group {name!r} has no {key!r} (has {found})")
        source = source[key]
    group = name
    variables = {"params": source}
    batch_stats = (state.get("model_state") or {}).get("batch_stats", {}).get(group)
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return variables


def eval_variables(workdir: str, step: int | None = None) -> dict:
    """{'params': every group, EMA over live as `TrainState.eval_params`, 'model_state'} of a
    run's checkpoint, as host numpy arrays (the optimizer state is not read); frozen groups
    come from their recorded source.

    Host arrays carry no device placement, so the caller chooses the mesh, whatever the run
    was saved on.
    """
    path = fs.join(_step_dir(workdir, step), "state")
    checkpointer = ocp.PyTreeCheckpointer()
    saved = checkpointer.metadata(path).item_metadata.tree
    wanted = {k: saved[k] for k in ("params", "ema_params", "model_state") if k in saved}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    state = checkpointer.restore(
        path,
        args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True),
    )
    return {
        "params": {
            **_run_frozen(workdir, step),
            **state["params"],
            **(state.get("ema_params") or {}),
        },
        "model_state": state.get("model_state") or {},
    }
