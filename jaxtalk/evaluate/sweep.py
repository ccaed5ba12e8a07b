"""Evaluating checkpoints on test sets: one cell, and a resumable grid of cells.

A cell is (run, step, test set, mode). Evaluating it restores the run's eval params (EMA
where kept), builds the run's task with its data dir and split replaced by the test set's,
runs the task's jitted `eval_outputs` over a fixed number of test batches in loader order
(no shuffle; the same examples for every checkpoint) and feeds the metrics.

    evaluator = Evaluator(metrics, batch_size=8, num_batches=4, mesh=local_mesh(8))
    rows = evaluator.evaluate("runs/s1", 400, eval_sets.parse("hdtf=data/hdtf"), ["self"])

`run_sweep` expands runs x steps x test sets x modes, gives process p the cells p, p+P,
..., skips what the results files already hold, appends new rows and renders the report.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Callable, Sequence

import jax
import ml_collections
from absl import logging

from jaxtalk import fs, progress
from jaxtalk.errors import InputError
from jaxtalk.evaluate import registry, report, results
from jaxtalk.evaluate.eval_sets import TestSet
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.train import checkpoints
from jaxtalk.train.data import to_global
from jaxtalk.train.sharding import activation_context, make_mesh, place
from jaxtalk.train.task import get_task


class SweepError(InputError):
    """A sweep or eval request that cannot run (bad run, metric, mode or test set)."""


# ----------------------------------------------------------------------------- devices


def local_mesh(batch_size: int, devices: Sequence[jax.Device] | None = None):
    """An fsdp mesh over as many of `devices` (default: this process's) as divide the
    batch, so any batch size runs: the batch splits over it as in training, and the params
    are sharded by the run's logical axis rules (not replicated)."""
    devices = list(devices if devices is not None else jax.local_devices())
    n = max(k for k in range(1, len(devices) + 1) if batch_size % k == 0)
    return make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices=devices[:n])


# ----------------------------------------------------------------------------- runs


def resolve_steps(run: str, steps: str = "last") -> list[int]:
    """'all', 'last' or 'N,M,...' against the run's saved checkpoints."""
    saved = checkpoints.saved_steps(run)
    if not saved:
        raise SweepError(
            f"{run}: not a training run (no checkpoints under {fs.join(run, 'checkpoints')})"
        )
    if steps == "all":
        return saved
    if steps == "last":  # the newest that can be read: an older one after a damaged one
        return [checkpoints.resolve_step(run)]
    try:
        wanted = [int(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--steps={steps!r}: 'all', 'last' or step numbers N,M") from None
    missing = sorted(set(wanted) - set(saved))
    if missing:
        raise SweepError(f"{run}: no checkpoints at steps {missing} (saved: {saved})")
    return wanted


def check_metric_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in registry.METRICS]
    if unknown:
        raise SweepError(f"unknown metrics {unknown}; known: {registry.names()}")


# ----------------------------------------------------------------------------- one cell


@dataclasses.dataclass
class _TaskEntry:
    task: object
    config: ml_collections.ConfigDict
    jitted: dict  # mode -> jitted eval_outputs
    boxed: object = None  # the abstract (params, model_state) of task.init, with axis names

    @property
    def rules(self):
        return tuple(tuple(r) for r in self.config.logical_axis_rules)


class Evaluator:
    """Evaluates cells with one set of metric instances (reset per cell), caching the
    built task and its compiled eval function per (run config, test set)."""

    def __init__(
        self,
        metrics: dict,
        *,
        batch_size: int,
        num_batches: int | None,
        mesh,
        process_index: int = 0,
        process_count: int = 1,
        seed: int = 0,
        workers: int = 0,
        log: Callable[[str], None] = logging.info,
        batch_bar: bool = False,
    ):
        self.metrics, self.batch_size, self.num_batches = metrics, batch_size, num_batches
        self.mesh, self.seed, self.workers, self.log = mesh, seed, workers, log
        self.batch_bar = batch_bar  # a progress bar over each cell's batches (`jaxtalk eval`)
        self.process_index, self.process_count = process_index, process_count
        self._tasks: dict[tuple, _TaskEntry] = {}
        self._variables: tuple[tuple, object] | None = None

    def _entry(self, run: str, step: int, test_set: TestSet) -> _TaskEntry:
        saved = checkpoints.run_config(run, step)
        key = (json.dumps(saved, sort_keys=True), test_set)
        if key not in self._tasks:
            config = ml_collections.ConfigDict(saved)
            config.data.data_dir = test_set.data_dir
            if "worker_count" in config.data:
                config.data.worker_count = self.workers
            task = get_task(config)
            if not task.EVAL_MODES:
                raise SweepError(
                    f"{run}: task {config.task!r} has no eval_outputs (no evaluation protocol)"
                )
            self._tasks[key] = _TaskEntry(task, config, {})
        return self._tasks[key]

    def modes(self, run: str, step: int, test_set: TestSet) -> tuple[str, ...]:
        return tuple(self._entry(run, step, test_set).task.EVAL_MODES)

    def _params(self, run: str, step: int, entry: _TaskEntry, batch):
        # Cells come grouped by checkpoint: keep the last one's params on the devices,
        # sharded by the run's logical axis rules as in training.
        key = (fs.absolute(run), step)
        if self._variables is None or self._variables[0] != key:
            if entry.boxed is None:
                entry.boxed = eval_shape_init(entry.task.init, jax.random.PRNGKey(0), batch)
            params, model_state = entry.boxed
            variables = checkpoints.eval_variables(run, step)
            self._variables = (
                key,
                {
                    "params": place(variables["params"], params, self.mesh, entry.rules),
                    "model_state": place(
                        variables["model_state"], model_state, self.mesh, entry.rules
                    ),
                },
            )
        return self._variables[1]

    def _num_batches(self, entry: _TaskEntry, test_set: TestSet) -> int:
        if self.num_batches:
            return self.num_batches
        examples = test_set.num_examples(entry.config.data.get("samples_per_clip", 1))
        if examples < self.batch_size:
            raise SweepError(
                f"test set {test_set.spec()} has {examples} examples, fewer than "
                f"one batch of {self.batch_size}"
            )
        return examples // self.batch_size

    def _applicable(self, metrics: dict, mode: str, outputs: dict) -> dict:
        """The metrics whose inputs the mode produces: PSNR needs a target, which
        cross-reenactment has not, so it is not defined there."""
        applicable = {k: m for k, m in metrics.items() if set(m.inputs) <= set(outputs)}
        for name in sorted(set(metrics) - set(applicable)):
            self.log(
                f"  {name} is not defined for mode {mode!r} (needs "
                f"{list(metrics[name].inputs)}, {mode} gives {sorted(outputs)})"
            )
        return applicable

    def evaluate(
        self, run: str, step: int, test_set: TestSet, mode: str, metric_names: Sequence[str]
    ) -> dict:
        """One row: the cell's keys, the metrics' columns and `n_examples`."""
        start = time.perf_counter()
        entry = self._entry(run, step, test_set)
        modes = self.modes(run, step, test_set)
        if mode not in modes:
            raise SweepError(
                f"task {entry.config.task!r} has no eval mode {mode!r} (modes: {list(modes)})"
            )
        if mode not in entry.jitted:
            entry.jitted[mode] = jax.jit(functools.partial(entry.task.eval_outputs, mode=mode))
        metrics = {n: self.metrics[n] for n in metric_names}
        for metric in metrics.values():
            metric.reset()
        num_batches = self._num_batches(entry, test_set)
        data = entry.task.data(
            test_set.split,
            global_batch_size=self.batch_size,
            seed=self.seed,
            process_index=self.process_index,
            process_count=self.process_count,
        )
        rng = jax.random.key(self.seed)
        applicable, n = {}, 0
        with progress.bar(
            num_batches, f"{test_set.name} {mode}", "batch", show=self.batch_bar
        ) as bar:
            for i in range(num_batches):
                try:
                    batch = to_global(next(data), self.mesh, entry.rules, self.process_count)
                except StopIteration:
                    break
                variables = self._params(run, step, entry, batch)
                args = (
                    variables["params"],
                    variables["model_state"],
                    batch,
                    jax.random.fold_in(rng, i),
                )
                if i == 0:
                    with activation_context(self.mesh, entry.rules):
                        shapes = jax.eval_shape(entry.jitted[mode], *args)
                    applicable = self._applicable(metrics, mode, shapes)
                    if not applicable:
                        break
                with activation_context(self.mesh, entry.rules):
                    outputs = entry.jitted[mode](*args)
                for metric in applicable.values():
                    metric.update(outputs)
                n += next(iter(outputs.values())).shape[0]
                bar.update(1)
        row = {
            "run": fs.absolute(run),
            "run_name": fs.basename(run),
            "step": int(step),
            "test_set": test_set.name,
            "split": test_set.split,
            "data_dir": test_set.data_dir,
            "mode": mode,
            "metrics": sorted(metrics),
            "n_examples": n,
            "batch_size": self.batch_size,
        }
        for metric in applicable.values():
            row.update({k: float(v) for k, v in metric.compute().items()})
        row["seconds"] = round(time.perf_counter() - start, 3)
        return row


# ----------------------------------------------------------------------------- the grid


@dataclasses.dataclass(frozen=True)
class Cell:
    run: str
    step: int
    test_set: TestSet
    mode: str

    def key(self) -> tuple:
        return results.cell_key(
            self.run, self.step, self.test_set.name, self.test_set.split, self.mode
        )

    def describe(self) -> str:
        return (
            f"{fs.basename(self.run)} step {self.step} "
            f"{self.test_set.name}:{self.test_set.split} {self.mode}"
        )


@dataclasses.dataclass
class SweepSummary:
    cells: int = 0  # cells this process owns
    computed: int = 0  # cells it evaluated now
    skipped_metrics: dict = dataclasses.field(default_factory=dict)  # name -> why
    rows: list = dataclasses.field(default_factory=list)  # merged, all processes
    outputs: list = dataclasses.field(default_factory=list)  # files written


def grid(
    evaluator: Evaluator,
    runs: Sequence[str],
    steps: str,
    test_sets: Sequence[TestSet],
    modes: Sequence[str] | None,
) -> list[Cell]:
    """Every cell, in a fixed order (so every process assigns them alike)."""
    cells = []
    for run in runs:
        for step in resolve_steps(run, steps):
            for test_set in test_sets:
                task_modes = evaluator.modes(run, step, test_set)
                bad = [m for m in modes or () if m not in task_modes]
                if bad:
                    raise SweepError(
                        f"{run}: the task has no eval modes {bad} (modes: {list(task_modes)})"
                    )
                cells += [Cell(fs.absolute(run), step, test_set, m) for m in (modes or task_modes)]
    return cells


def run_sweep(
    runs: Sequence[str],
    test_sets: Sequence[TestSet],
    metric_names: Sequence[str],
    out_dir: str,
    *,
    steps: str = "all",
    modes: Sequence[str] | None = None,
    batch_size: int = 8,
    num_batches: int | None = None,
    weights_dir: str | None = None,
    metric_options: dict | None = None,
    process_index: int = 0,
    process_count: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = logging.info,
) -> SweepSummary:
    """Evaluates this process's cells not yet in `out_dir`'s results, then renders them.

    `log` gets the skipped metrics and the count of cells to compute; a progress bar (on a
    terminal) counts the cells, and each cell's values go to the absl log.
    """
    check_metric_names(metric_names)
    if not 0 <= process_index < process_count:
        raise SweepError(f"process index {process_index} outside 0..{process_count - 1}")
    fs.makedirs(out_dir)
    summary = SweepSummary()
    metrics, summary.skipped_metrics = registry.create_many(
        list(metric_names), weights_dir, metric_options
    )
    for name, why in summary.skipped_metrics.items():
        log(f"skipping metric {name}: {why}")
    evaluator = Evaluator(
        metrics,
        batch_size=batch_size,
        num_batches=num_batches,
        mesh=local_mesh(batch_size),
        seed=seed,
        log=log,
    )
    mine = grid(evaluator, runs, steps, test_sets, modes)[process_index::process_count]
    summary.cells = len(mine)
    done = results.done_metrics(results.read(out_dir))
    todo = [(cell, sorted(set(metrics) - done.get(cell.key(), set()))) for cell in mine]
    todo = [(cell, names) for cell, names in todo if names]
    log(
        f"{len(todo)} cells to compute ({len(mine) - len(todo)} of this process's "
        f"{len(mine)} already in {out_dir})"
    )
    path = results.results_path(out_dir, process_index, process_count)
    with progress.bar(len(todo), "sweep", unit="cell") as bar:
        for i, (cell, names) in enumerate(todo, 1):
            row = evaluator.evaluate(cell.run, cell.step, cell.test_set, cell.mode, names)
            row["process"] = process_index
            results.append(path, row)
            summary.computed += 1
            values = " ".join(f"{k}={row[k]:.4f}" for k in results.metric_columns([row]))
            logging.info(
                "[%d/%d] %s: %s (%d examples, %.1fs)", i, len(todo), cell.describe(),
                values or "no applicable metric", row["n_examples"], row["seconds"],
            )  # fmt: skip
            bar.update(1)
    summary.rows, summary.outputs = render(out_dir, summary.skipped_metrics)
    return summary


def render(out_dir: str, skipped_metrics: dict | None = None) -> tuple[list[dict], list[str]]:
    """results.csv, results.md and the plots from every process's results file."""
    rows = results.merged(results.read(out_dir))
    notes = [f"skipped {name}: {why}" for name, why in sorted((skipped_metrics or {}).items())]
    csv_path, md_path = fs.join(out_dir, "results.csv"), fs.join(out_dir, "results.md")
    report.write_csv(rows, csv_path)
    report.write_markdown(rows, md_path, notes)
    return rows, [csv_path, md_path] + report.plot_metrics(rows, out_dir)


def process_identity(index: int | None, count: int | None) -> tuple[int, int]:
    """This process's (index, count): flags, else launch/local.py's environment, else JAX.

    Sweep cells are independent, so processes never communicate and the sweep does not
    join a jax.distributed cluster: each evaluates its own cells on its own devices.
    """
    if index is not None or count is not None:
        if index is None or count is None:
            raise SweepError("give both --process_index and --process_count")
        return index, count
    env_index = os.environ.get("JAXTALK_PROCESS_ID")
    env_count = os.environ.get("JAXTALK_NUM_PROCESSES")
    if env_index is not None and env_count is not None:
        return int(env_index), int(env_count)
    return jax.process_index(), jax.process_count()
