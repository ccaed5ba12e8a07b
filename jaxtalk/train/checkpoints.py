"""Composite orbax checkpoints: train state + data iterator state + config + frozen sources.

Frozen groups that a task rebuilds from their source (`Task.frozen_sources`: a stage-1 run,
a HuBERT or VGG weights file) are not written into the train state: the `frozen` item
records {group: {"source": ..., "fingerprint": ...}} and resume, eval and export load them
from there (`load_frozen_groups`), failing with a one-line `FrozenSourceError` when the
source is gone or holds other weights than the run started with.

Saves are asynchronous (the loop keeps stepping while the arrays are written) and atomic
(on a disk orbax writes to a temporary directory and renames it once complete; on a bucket
it writes in place and marks the step complete with a commit file written last), so a run
killed at any moment resumes from the last complete checkpoint, and only complete steps are
listed (`saved_steps`). Restoring takes the abstract state
with the *current* run's shardings, which is what lets a run saved on 8 devices resume on 4.

A damaged newest checkpoint (half copied, a truncated or deleted file) does not stop a run:
`restore_newest`, the one place that chooses a checkpoint for train, eval, export and sweeps,
reports it in one line and tries the next older step; a step asked for by number and found
damaged, or a directory where no step restores, is a one-line `CheckpointError`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import sys
import warnings
from typing import Callable, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies
from orbax.checkpoint._src import asyncio_utils as orbax_async
from orbax.checkpoint._src.metadata import empty_values as orbax_empty
from orbax.checkpoint._src.metadata import tree as orbax_tree
from orbax.checkpoint._src.metadata.value_metadata_entry import ValueMetadataEntry
from orbax.checkpoint._src.path import step as orbax_steps
from orbax.checkpoint._src.path import temporary_paths as orbax_unfinished
from orbax.checkpoint._src.serialization import serialization as orbax_reads

from jaxtalk import fs
from jaxtalk.convert import weights
from jaxtalk.errors import CheckpointError, InputError, one_line

T = TypeVar("T")


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


def _whole_arrays_on_cpu() -> None:
    """On CPU devices, orbax writes each replicated array whole instead of a slice per
    replica (its own default when JAX_PLATFORMS names a GPU): the "devices" share host
    memory, so there is no transfer to spread, and each slice was an op-by-op slice (a
    600-array state replicated over 8 simulated devices: 3,152 of them, 6 s of a 7 s save).
    Nor does it write the `_sharding` file (each array's sharding, for a restore given no
    target): jaxtalk restores onto the shardings it is given or as numpy, a plain orbax
    restore then gives numpy arrays, and the file was a quarter of a small-array save
    (2,400 arrays of 4 KB, three rounds: 1.4 s against 1.8-1.9 s). Registered globally, as
    orbax keeps its array handler, once per process (orbax logs a warning on every override,
    which is dropped: the override is the point)."""
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if jax.devices()[0].platform != "cpu" or not getattr(current, "_use_replica_parallel", True):
        return
    absl_logger = logging.getLogger("absl")
    overriding = _Dropping("Type handler registry type")
    absl_logger.addFilter(overriding)
    try:
        ocp.type_handlers.register_type_handler(
            jax.Array,
            ocp.type_handlers.ArrayHandler(
                use_replica_parallel=False, enable_write_sharding_file=False
            ),
            override=True,
        )
    finally:
        absl_logger.removeFilter(overriding)


def _remove_unfinished_saves(directory: str, options: ocp.CheckpointManagerOptions) -> None:
    """Deletes the steps a killed run left half written, before anything lists the steps.

    Not orbax's `cleanup_tmp_directories`: that deletes in a background thread while the
    manager lists the directory, and on a bucket a folder exists only through its objects,
    so deleting a run's one unfinished step (killed during its first save) could make the
    folder vanish between orbax's existence check and its listing (FileNotFoundError, the
    restart fails). Here the primary process deletes them first, the others wait for it.
    """
    orbax_async.run_sync(
        orbax_unfinished.cleanup_temporary_paths(
            directory,
            multiprocessing_options=options.multiprocessing_options,
            temporary_path_cls=options.temporary_path_class,
            atomicity_options=options.atomicity_options,
        )
    )
    _all_processes_reach("jaxtalk_unfinished_checkpoints_removed")


def _all_processes_reach(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class Checkpointer:
    ITEMS = ("state", "data", "config", "frozen")

    def __init__(self, workdir: str, config):
        _whole_arrays_on_cpu()
        self.directory = fs.join(fs.absolute(workdir), "checkpoints")
        self._config_json = json.loads(config.to_json_best_effort())
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=config.checkpoint.async_save,
            preservation_policy=_preservation(config),
        )
        _remove_unfinished_saves(self.directory, options)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=self.ITEMS)

    def restore_newest(
        self, restore: Callable[[int], T], agree: Callable[[bool], bool] | None = None
    ) -> tuple[int, T] | None:
        """`restore_newest` over this run's steps; damaged steps newer than the one restored
        are set aside (a resumed run saves those step numbers again)."""
        steps = self.manager.all_steps()
        found = restore_newest(self.directory, steps, restore, agree=agree)
        newer = [s for s in steps if found and s > found[0]]
        if newer:
            self._set_aside(newer)
        return found

    def _set_aside(self, steps: list[int]) -> None:
        # Moved, not deleted: a read that failed for a passing reason (a storage hiccup) must
        # not cost a checkpoint. Outside checkpoints/, where orbax never looks.
        target = fs.join(fs.dirname(self.directory), "damaged_checkpoints")
        if jax.process_index() == 0:
            for step in steps:
                source = fs.join(self.directory, str(step))
                fs.copy_tree(source, fs.join(target, str(step)))
                fs.rmtree(source)
                _report(f"moved the damaged checkpoint step {step} to {target}")
        _all_processes_reach("jaxtalk_set_aside_damaged_checkpoints")
        self.manager.reload()

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


# ----------------------------------------------------------------------------- choosing a step


def _report(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _reason(error: BaseException) -> str:
    return one_line(f"{type(error).__name__}: {error}", 240)


def _attempt(restore: Callable[[int], T], step: int) -> tuple[T | None, BaseException | None]:
    _quiet_failed_read_noise()  # before: a failed read's siblings may be reported mid-restore
    try:
        return restore(step), None
    except Exception as e:  # noqa: BLE001
        # Damage surfaces as whatever orbax / tensorstore / json raise (ValueError, OSError,
        # KeyError, AttributeError on a missing metadata file, ...): any failure of this one
        # step's restore counts, and its type and message go into the report.
        return None, e


def restore_step(directory: str, step: int, restore: Callable[[int], T]) -> T:
    """`restore(step)`, or a one-line CheckpointError naming the step and the reason."""
    value, error = _attempt(restore, step)
    if error is not None:
        raise CheckpointError(
            f"checkpoint step {step} in {directory} cannot be restored ({_reason(error)})"
        )
    return value


def restore_newest(
    directory: str,
    steps,
    restore: Callable[[int], T],
    agree: Callable[[bool], bool] | None = None,
    report: Callable[[str], None] = _report,
) -> tuple[int, T] | None:
    """(step, restore(step)) for the newest of `steps` that restores; each one that fails is
    reported in one line and the next older one tried. None when there are no steps; a
    CheckpointError naming `directory` when none restores. `agree` (multi-process) turns this
    process's success into all processes' success, so every process picks the same step."""
    steps = sorted(steps, reverse=True)
    for i, step in enumerate(steps):
        value, error = _attempt(restore, step)
        ok = error is None if agree is None else agree(error is None)
        if ok:
            return step, value
        reason = _reason(error) if error is not None else "another process cannot read it"
        older = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "none older"
        report(f"checkpoint step {step} in {directory} cannot be restored ({reason}); {older}")
    if steps:
        raise CheckpointError(
            f"no checkpoint in {directory} can be restored (steps {sorted(steps)}, each "
            "reported above); restore the directory from a copy or train in a new workdir"
        )
    return None


def _quiet_failed_read_noise() -> None:
    """When one read of a restore fails, its sibling reads are abandoned: tensorstore reads
    still in flight complete against orbax's closed event loop ('Event loop is closed'
    tracebacks), asyncio logs their failures as never retrieved and Python warns of orbax
    coroutines never awaited, while the restore is unwinding or as late as exit. Drop just
    those (the failure itself is reported in one line). Idempotent."""
    reads = "|".join(n for n, f in vars(orbax_reads).items() if inspect.iscoroutinefunction(f))
    warnings.filterwarnings(  # re-adding a filter replaces it
        "ignore", message=f"coroutine '({reads})' was never awaited", category=RuntimeWarning
    )
    previous = sys.unraisablehook
    if getattr(previous, "_jaxtalk_filter", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        closed = isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)
        code = getattr(unraisable.object, "cr_code", None)  # an abandoned orbax read
        if not (closed or (code is not None and "orbax" in code.co_filename)):
            previous(unraisable)

    hook._jaxtalk_filter = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_NeverRetrievedReads())


class _NeverRetrievedReads(logging.Filter):
    """Drops asyncio's 'exception was never retrieved' for checkpoint reads: a task of
    orbax's or a future of tensorstore's (whose errors name the OCDBT store read)."""

    def filter(self, record):
        message = str(record.msg)
        if "exception was never retrieved" not in message:
            return True
        return not any(word in message for word in ("orbax", "TensorStore", "OCDBT"))


class _Dropping(logging.Filter):
    """Drops the records whose message starts with `prefix`."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not str(record.msg).startswith(self.prefix)


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
    return _read_frozen(_step_dir(workdir, step))


def _read_frozen(step_dir: str) -> dict:
    path = fs.join(step_dir, "frozen", "metadata")
    return fs.read_json(path) if fs.exists(path) else {}


def _run_frozen(workdir: str, step: int | None, groups=None) -> dict:
    """Host params of a run's frozen groups (those in `groups`, default all), from source."""
    record = _read(workdir, step)["frozen"]
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


def _directory(workdir: str) -> str:
    return fs.join(fs.absolute(workdir), "checkpoints")


def is_run(path: str) -> bool:
    """A training run directory (it has checkpoints/), local or remote."""
    return fs.isdir(fs.join(path, "checkpoints"))


def saved_steps(workdir: str) -> list[int]:
    """The run's complete checkpoints, as its training resumes from them: not a save in
    progress or cut short, which orbax keeps under a temporary name on a disk but writes in
    place on a bucket, marked complete by a commit file written last (a run evaluated while
    it trains must not read its step being written, nor report it damaged)."""
    directory = _directory(workdir)
    with fs.guarded(directory, "list"):
        return sorted(m.step for m in orbax_steps.standard_name_format().find_all(directory))


def _incomplete_steps(workdir: str, complete: list[int]) -> tuple[int, ...]:
    """Step folders that are not complete checkpoints (on a bucket: no commit file yet)."""
    directory = _directory(workdir)
    if not fs.isdir(directory):
        return ()
    named = {int(s) for s in fs.listdir(directory) if s.isdigit()}
    return tuple(sorted(named - set(complete)))


def resolve_step(workdir: str, step: int | None = None) -> int:
    """`step` when the run saved it, else the newest step that can be read (an older one
    after a damaged one, reported; see `restore_newest`). Newer incomplete steps are
    reported, not read."""
    steps = saved_steps(workdir)
    incomplete = _incomplete_steps(workdir, steps)
    if not steps:
        also = f" (incomplete: steps {list(incomplete)})" if incomplete else ""
        raise ValueError(f"{workdir}: no checkpoints in {fs.join(workdir, 'checkpoints')}{also}")
    if step is None:
        newer = tuple(s for s in incomplete if s > steps[-1])
        return _newest_readable(_directory(workdir), tuple(steps), newer)
    if step not in steps:
        raise ValueError(f"{workdir}: no checkpoint at step {step} (have {steps})")
    return step


@functools.lru_cache(maxsize=None)
def _newest_readable(directory: str, steps: tuple[int, ...], incomplete: tuple[int, ...]) -> int:
    # Once per listing: a run read several times (config, then groups) reports once.
    if incomplete:
        _report(
            f"checkpoint steps {list(incomplete)} in {directory} are incomplete (a save in "
            f"progress or cut short: no commit file); reading step {steps[-1]} and older"
        )
    return restore_newest(directory, steps, functools.partial(_read_step, directory))[0]


def _step_dir(workdir: str, step: int | None) -> str:
    return fs.join(_directory(workdir), str(resolve_step(workdir, step)))


class _NoItemMetadataWarning(logging.Filter):
    """Orbax warns that an item directory (`<step>/state`) has no _CHECKPOINT_METADATA when
    it is read on its own; only the step directory has one, so the warning is always
    printed and says nothing (commands keep stderr to their one line)."""

    def filter(self, record):
        return not str(record.msg).startswith("Metadata file does not exist")


logging.getLogger("absl").addFilter(_NoItemMetadataWarning())


def _saved_tree(checkpointer, state_dir: str):
    """The structure of the tree saved in `state_dir` (leaves: placeholders), from its
    _METADATA file alone. orbax's public metadata() also opens every array's own metadata in
    the store, a second per thousand arrays, which restoring them does not need; it is the
    fallback should orbax's file or internals change."""
    try:
        internal = orbax_tree.InternalTreeMetadata.from_json(
            fs.read_json(fs.join(state_dir, "_METADATA"))
        )
        options = internal.pytree_metadata_options

        def leaf(entry):  # empty containers and None are entries of their own
            if orbax_empty.is_empty_typestr(entry.value_type):
                return orbax_empty.get_empty_value_from_typestr(entry.value_type, options)
            return entry

        return jax.tree.map(
            leaf,
            internal.as_nested_tree(),
            is_leaf=lambda x: isinstance(x, ValueMetadataEntry),
        )
    except Exception:  # noqa: BLE001 (the public path below reports what is wrong)
        metadata = checkpointer.metadata(state_dir)
        if metadata is None or metadata.item_metadata is None:
            raise ValueError("state/_METADATA is missing or unreadable") from None
        return metadata.item_metadata.tree


@functools.lru_cache(maxsize=1)
def _read_step(directory: str, step: int) -> dict:
    """What eval, export and sweeps read from one step: its config, frozen record and the
    saved params, EMA params and model state as host numpy arrays (not the optimizer state).
    Kept for the next call: choosing a step reads it whole, and the caller then uses it."""
    path = fs.join(directory, str(step))
    config = fs.read_json(fs.join(path, "config", "metadata"))
    frozen = _read_frozen(path)
    checkpointer = ocp.PyTreeCheckpointer()
    saved = _saved_tree(checkpointer, fs.join(path, "state"))
    wanted = {k: saved[k] for k in ("params", "ema_params", "model_state") if k in saved}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    state = checkpointer.restore(
        fs.join(path, "state"),
        args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True),
    )
    return {"config": config, "frozen": frozen, "state": state}


def _read(workdir: str, step: int | None) -> dict:
    directory = _directory(workdir)
    step = resolve_step(workdir, step)
    return restore_step(directory, step, functools.partial(_read_step, directory))


def run_config(workdir: str, step: int | None = None) -> dict:
    """The config a run saved with its checkpoint, as a plain dict (an old task name
    mapped to today's, see `weights.current_name`)."""
    config = fs.read_json(fs.join(_step_dir(workdir, step), "config", "metadata"))
    if isinstance(config, dict) and "task" in config:
        config["task"] = weights.current_name(config["task"])
    return config


def group_variables(workdir: str, group: str, step: int | None = None) -> dict:
    """{'params', maybe 'batch_stats', maybe 'online'} of one parameter group of a run: the
    EMA weights when the run keeps an EMA of the group, with the live ones as 'online'
    ({'params', maybe 'batch_stats'}, what a release's `model.*` copy holds), else the live
    (or frozen) ones.

    `group` may name a sub-tree, 'generator/model'."""
    read = _read(workdir, step)
    state = read["state"]
    name, *path = group.split("/")
    ema = (state.get("ema_params") or {}).get(name)
    live = state["params"].get(name)
    source = ema or live
    if source is None:
        source = _run_frozen(workdir, step, [name]).get(name)
    if source is None:
        groups = sorted(state["params"]) + sorted(read["frozen"])
        raise ValueError(f"{workdir}: no parameter group {name!r} (groups: {groups})")
    stats = (state.get("model_state") or {}).get("batch_stats", {}).get(name)
    stats = {"batch_stats": stats} if stats else {}
    variables = {"params": _subtree(source, name, path, workdir), **stats}
    if ema and live:
        variables["online"] = {"params": _subtree(live, name, path, workdir), **stats}
    return variables


def _subtree(tree, group: str, path: list[str], workdir: str):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            found = sorted(tree) if isinstance(tree, dict) else "a leaf"
            raise ValueError(f"{workdir}: group {group!r} has no {key!r} (has {found})")
        tree = tree[key]
    return tree


def eval_variables(workdir: str, step: int | None = None) -> dict:
    """{'params': every group, EMA over live as `TrainState.eval_params`, 'model_state'} of a
    run's checkpoint, as host numpy arrays (the optimizer state is not read); frozen groups
    come from their recorded source.

    Host arrays carry no device placement, so the caller chooses the mesh, whatever the run
    was saved on.
    """
    state = _read(workdir, step)["state"]
    return {
        "params": {
            **_run_frozen(workdir, step),
            **state["params"],
            **(state.get("ema_params") or {}),
        },
        "model_state": state.get("model_state") or {},
    }
