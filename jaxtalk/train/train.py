"""The one training loop. Every recipe runs through `train(config, workdir)`.

Read top to bottom: distributed setup, mesh, task, data, sharded state (fresh or resumed),
compiled step, then the loop with its logging, evaluation, samples and checkpoints.
"""

from __future__ import annotations

import functools
import time

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from jax.extend import core as jax_core

from jaxtalk import fs, lapack_threads
from jaxtalk.errors import InputError
from jaxtalk.train import checkpoints, distributed, optim, sharding
from jaxtalk.train import state as state_lib
from jaxtalk.train.data import DevicePrefetcher, to_global
from jaxtalk.train.grouped_init import grouped_initializers
from jaxtalk.train.logs import MetricWriter, compiled_flops
from jaxtalk.train.profile import StepProfiler
from jaxtalk.train.step import train_step
from jaxtalk.train.task import get_task


class NonFiniteError(RuntimeError):
    """Training stopped by the NaN guard (config.nan_policy=stop)."""


class ConfigError(InputError):
    """A config or environment the run cannot start with; the message says what to change."""


def check_workdir(workdir: str) -> None:
    """Every process can write the work directory (local or remote, see jaxtalk.fs)."""
    try:
        fs.makedirs(workdir)
        probe = fs.join(workdir, f".write_probe_{jax.process_index()}")
        fs.write_text(probe, "ok")
        fs.remove(probe)
    except fs.FileSystemError as e:
        raise ConfigError(f"workdir {workdir!r} is not writable ({e})") from None


# The least value of each numeric key that can work; where 0 is allowed it switches the
# thing off (`_at` never fires for 0) or, for total_steps, trains nothing.
_AT_LEAST = {
    "batch_size": 1,
    "grad_accum_steps": 1,
    "total_steps": 0,
    "log.every_steps": 1,
    "eval.every_steps": 0,
    "eval.num_batches": 0,
    "samples.every_steps": 0,
    "samples.num": 0,
    "checkpoint.every_steps": 0,
    "checkpoint.keep": 1,
    "checkpoint.keep_best": 1,
    "device_prefetch": 0,
    "profile.start_step": 0,
    "profile.num_steps": 1,
}
_ONE_OF = {
    "nan_policy": ("skip", "stop"),
    "remat_policy": ("none", "full", "dots"),
    "dtype": ("float32", "bfloat16"),
    "checkpoint.best_mode": ("min", "max"),
}


def _get(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _validate(config) -> None:
    for key, least in _AT_LEAST.items():
        value = _get(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise ConfigError(f"config.{key}={value!r}: must be an integer >= {least}")
    for key, allowed in _ONE_OF.items():
        if _get(config, key) not in allowed:
            raise ConfigError(f"config.{key}={_get(config, key)!r}: one of {', '.join(allowed)}")
    if config.batch_size % jax.process_count():
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by the "
            f"{jax.process_count()} processes"
        )
    if config.batch_size % config.grad_accum_steps:
        raise ConfigError(
            f"config.batch_size={config.batch_size} is not divisible by "
            f"config.grad_accum_steps={config.grad_accum_steps}"
        )


def state_initializer(task, optimizers: dict, ema_decays: dict):
    """init_state(init_rng, state_rng, batch) -> the fresh TrainState (boxed), to be traced.

    The keys and the batch are arguments, not closed-over constants: XLA would otherwise
    constant-fold the whole initialisation (every initializer's random numbers, the forward
    pass flax runs to shape the variables) at compile time, which takes minutes on a CPU.
    Each kind of random initializer is compiled once for all the parameters it initialises
    (grouped_init: the same values; a tiny MegActor's init traced, lowered and compiled in
    6.8 s instead of 15.5 s)."""

    def init_state(init_rng, state_rng, batch):
        params, model_state = grouped_initializers(task.init)(init_rng, batch)
        return state_lib.create(params, model_state, optimizers, ema_decays, state_rng)

    return init_state


def task_optimizers(config, losses, mesh) -> dict:
    """The optax transformation of every group the task's losses train (config.optimizers,
    with config.frozen and config.lr_multipliers applied)."""
    missing = [g for g, _ in losses if g not in config.optimizers]
    if missing:
        raise ConfigError(
            f"task {config.task!r} trains groups {missing} that have no entry "
            f"in config.optimizers (has {sorted(config.optimizers)})"
        )
    sharded = {a: mesh.shape[a] for a in ("fsdp", "tensor") if mesh.shape[a] > 1}
    flat = [g for g, _ in losses if optim.flattened(config.optimizers[g])]
    if flat and sharded:
        raise ConfigError(
            f"config.optimizers.{flat[0]}.flatten keeps the optimizer state as one unsharded "
            f"vector: not on a mesh that shards params ({sharded}); set it to False"
        )
    try:
        lr_rules = optim.parse_lr_multipliers(config.lr_multipliers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return {
        g: optim.scale_learning_rate(
            optim.freeze(
                optim.optimizer(config.optimizers[g], config.total_steps), g, tuple(config.frozen)
            ),
            g,
            lr_rules,
        )
        for g, _ in losses
    }


def check_optimizer_layout(config, workdir: str, steps) -> None:
    """A run resumes only with the optimizer-state layout it saved (`optimizers.G.flatten`):
    a changed setting is named here in one line, instead of every checkpoint failing to
    restore."""
    if not steps:
        return
    try:
        saved = checkpoints.run_config(workdir, max(steps))["optimizers"]
        was = {g: optim.flattened(o) for g, o in saved.items()}
    except Exception:  # noqa: BLE001  a damaged or foreign step: the restore reports it
        return
    for g, opt in config.optimizers.items():
        now = optim.flattened(opt)
        if g in was and was[g] != now:
            raise ConfigError(
                f"the run in {workdir} saved optimizers.{g} with flatten={was[g]} (the "
                f"optimizer state's layout); resume it with --config.optimizers.{g}.flatten="
                f"{was[g]}"
            )


def jit_train_step(config, losses, optimizers, state_shardings, batch_shardings):
    """The jitted step (jaxtalk/train/step.py) with the state donated."""
    return jax.jit(
        functools.partial(
            train_step,
            losses=losses,
            optimizers=optimizers,
            ema_decays=dict(config.ema),
            accum=config.grad_accum_steps,
            remat=config.remat_policy,
            flat_groups=frozenset(g for g in optimizers if optim.flattened(config.optimizers[g])),
        ),
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, None),
        donate_argnums=0,
    )


def train(config, workdir: str, devices=None) -> dict:
    """Trains until config.total_steps, or until preempted (SIGTERM): then every process saves
    a checkpoint at the same step and this returns with `preempted` true. Returns the last
    logged and evaluated metrics. `devices`: what config.mesh spans (default: all of
    jax.devices()); e.g. one device of a host that has several, for a small run."""
    lapack_threads.single_thread()  # for callers of train() outside the CLI as well
    try:
        distributed.maybe_initialize(config.distributed)
    except ValueError as e:
        raise ConfigError(f"config.distributed: {e}") from None
    with distributed.Preemption() as preemption:  # from here: startup included
        return _train(config, workdir, preemption, devices)


def _train(config, workdir: str, preemption: distributed.Preemption, devices) -> dict:
    # ------------------------------------------------------------------ setup
    _validate(config)
    check_workdir(workdir)
    is_main = jax.process_index() == 0
    try:
        mesh = sharding.make_mesh(config.mesh, config.dcn_mesh, devices)
    except ValueError as e:
        raise ConfigError(f"config.mesh: {e}") from None
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    try:
        task = get_task(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    losses = task.losses()
    optimizers = task_optimizers(config, losses, mesh)
    ema_decays = dict(config.ema)
    logging.info(
        "mesh %s on %d devices, %d processes",
        dict(mesh.shape),
        mesh.devices.size,
        jax.process_count(),
    )

    # ------------------------------------------------------------------ data
    def make_data(split, seed):
        return task.data(
            split,
            global_batch_size=config.batch_size,
            seed=seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )

    host_iter = make_data("train", config.seed)

    # ------------------------------------------------------------------ sharded state
    first_batch = to_global(next(make_data("train", config.seed)), mesh, rules)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))

    init_state = state_initializer(task, optimizers, ema_decays)
    init_args = (init_rng, state_rng, first_batch)
    # Traced once (flax's init of a large model takes seconds to trace): the jaxpr gives the
    # abstract state here and is what the real initialisation below compiles.
    init_jaxpr, boxed = jax.make_jaxpr(init_state, return_shape=True)(*init_args)
    state_shardings = sharding.shardings_for(boxed, mesh, rules)
    abstract = nn.unbox(boxed)
    ckpt = checkpoints.Checkpointer(workdir, config)

    def restore(step):
        frozen = checkpoints.frozen_record(workdir, step)
        saved, data_state = ckpt.restore(
            step,
            checkpoints.abstract_with_shardings(
                checkpoints.without_groups(abstract, frozen),
                checkpoints.without_groups(state_shardings, frozen),
            ),
        )
        return frozen, saved, data_state

    agree = distributed.all_processes if jax.process_count() > 1 else None
    check_optimizer_layout(config, workdir, ckpt.manager.all_steps())
    resumed = ckpt.restore_newest(restore, agree=agree)  # CheckpointError when none restores
    # Frozen groups rebuilt from their source (a stage-1 run, a weights file) instead of
    # saved: the record of where they come from goes into every checkpoint.
    if resumed is None:
        try:
            sources = task.frozen_sources()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        frozen = {g: {"source": s} for g, s in sources.items()}
    else:
        start_step, (frozen, saved, data_state) = resumed
    trained_frozen = sorted(set(frozen) & (set(optimizers) | set(ema_decays)))
    if trained_frozen:
        raise ConfigError(
            f"task {config.task!r} declares groups {trained_frozen} frozen "
            "(rebuilt from their source) but trains or averages them"
        )
    frozen_params = checkpoints.load_frozen_groups(task, frozen)
    for g, params in frozen_params.items():
        missing = sorted(set(abstract.params.get(g, {})) - set(params))
        if g not in abstract.params or missing:
            raise ConfigError(
                f"frozen group {g!r} from {frozen[g]['source']} does not fit the "
                f"model (missing {missing or 'the whole group'})"
            )
        # Checked before the task measures anything with it (task.pretrained() below).
        problems = [p for k in params for p in _misfits(abstract.params[g].get(k), params[k])]
        if problems:
            raise ConfigError(
                f"frozen group {g!r} from {frozen[g]['source']} does not fit the model "
                f"(does the config describe its architecture?): " + "; ".join(problems[:10])
            )
        frozen[g]["fingerprint"] = checkpoints.fingerprint(params)
    if resumed is None:
        pretrained = {**frozen_params, **task.pretrained()}

        def traced_init_state(*args):  # init_state, from its jaxpr
            flat = jax_core.jaxpr_as_fun(init_jaxpr)(*jax.tree.leaves(args))
            return jax.tree.unflatten(jax.tree.structure(boxed), flat)

        # What the given weights replace is not initialised: XLA drops its random
        # initialisers (most of a stage-2 state's init, in compile time and in memory).
        init_jit = jax.jit(
            lambda *a: _without_subtrees(nn.unbox(traced_init_state(*a)), pretrained),
            out_shardings=_without_subtrees(state_shardings, pretrained),
        )
        state = init_jit.lower(*init_args).compile(_init_compiler_options(mesh))(*init_args)
        state = _with_placeholders(state, abstract, pretrained)
        if pretrained:
            state = load_pretrained(state, pretrained, state_shardings)
        start_step = 0
    else:
        # Placeholders that load_pretrained checks against and replaces.
        state = saved.replace(params={**saved.params, **{g: abstract.params[g] for g in frozen}})
        state = load_pretrained(state, frozen_params, state_shardings)
        host_iter.set_state(data_state)
        logging.info("resumed from step %d in %s", start_step, ckpt.directory)
    # The sync point is the step after the fastest process's last reported one; report the
    # first step now, so a notice during compilation stops at start_step + 1 (not at 1).
    preemption.reached(start_step)
    del frozen_params  # host copies (HuBERT-large: 1.2 GB); the state holds them on device

    # ------------------------------------------------------------------ compiled steps
    batch_shardings = jax.tree.map(
        lambda x: sharding.batch_sharding(mesh, rules, x.ndim), first_batch
    )
    step_fn = jit_train_step(config, losses, optimizers, state_shardings, batch_shardings)
    eval_fn = jax.jit(lambda s, b, r: task.eval_step(s.eval_params(), s.model_state, b, r))
    samples_fn = jax.jit(lambda s, b, r: task.samples(s.eval_params(), s.model_state, b, r))

    writer = MetricWriter(
        workdir,
        config,
        config.total_steps,
        start_step,
        config.batch_size,
        is_main,
        mesh.devices.flat,
    )
    with sharding.activation_context(mesh, rules):  # compiled once, FLOPs known
        step_fn = step_fn.lower(state, first_batch).compile()
    writer.flops_per_step = compiled_flops(step_fn)
    writer.print(
        f"training {config.task} from step {start_step} to {config.total_steps}: "
        f"mesh {dict(mesh.shape)}, global batch {config.batch_size}, "
        f"{_count(state.params)} params, "
        f"{'n/a' if writer.flops_per_step is None else f'{writer.flops_per_step:.3g}'}"
        " FLOPs/step"
    )

    def evaluate(step):
        it = make_data(config.eval.split, config.seed)
        sums, n = {}, 0
        for i in range(config.eval.num_batches):
            try:
                batch = to_global(next(it), mesh, rules)
            except StopIteration:
                break
            with sharding.activation_context(mesh, rules):
                out = jax.device_get(eval_fn(state, batch, jax.random.PRNGKey(i)))
            sums = {k: sums.get(k, 0.0) + float(v) for k, v in out.items()}
            n += 1
        result = {f"eval/{k}": v / max(n, 1) for k, v in sums.items()}
        writer.print(
            f"eval at step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items())
        )
        writer.scalars(step, result)
        return result

    save_block_seconds = []

    def save(step, metrics=None):
        skipped = int(jax.device_get(state.skipped_steps))  # waits for the step to finish
        start = time.perf_counter()
        if skipped and config.nan_policy == "stop":
            return  # the guard kept the last finite state; the loop raises below
        ckpt.save(
            step, checkpoints.without_groups(state, frozen), prefetch.state, metrics, frozen=frozen
        )
        save_block_seconds.append(time.perf_counter() - start)  # async: the copy to host only

    # ------------------------------------------------------------------ loop
    prefetch = DevicePrefetcher(host_iter, mesh, rules, depth=config.device_prefetch)
    pending, last_log, last_eval, history = [], {}, {}, []
    step = start_step
    preempted = False
    profiler = StepProfiler(
        workdir,
        config.profile.start_step,
        config.profile.num_steps,
        jax.process_index(),
        python=config.profile.python,
    )
    loop_start = time.perf_counter()
    try:
        while step < config.total_steps:
            batch = next(prefetch)
            with profiler.step(step + 1):
                state, metrics = step_fn(state, batch)
            step += 1
            traced = profiler.finished(step, state)
            if traced:
                writer.print(f"profiler trace of steps {profiler.first}-{step}: {traced}")
            pending.append(metrics)
            writer.advance(step)
            # Every process, every step (the sync point needs each step); logged, so the
            # metrics since the last log are not lost, and NaN-checked as a log step is.
            preempted = preemption.reached(step) and step < config.total_steps
            log_now = step % config.log.every_steps == 0 or step == config.total_steps
            log_now = log_now or preempted
            if log_now:
                fetched = jax.device_get(pending)
                means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                skipped = int(jax.device_get(state.skipped_steps))
                means["skipped_steps"] = skipped
                last_log = writer.train_line(step, means, prefetch.wait_seconds)
                history.append({"step": step, **last_log})
                prefetch.wait_seconds.clear()
                pending.clear()
            if config.nan_policy == "stop" and (
                log_now or _at(step, config.checkpoint.every_steps)
            ):
                skipped = int(jax.device_get(state.skipped_steps))
                if skipped:
                    raise NonFiniteError(
                        f"non-finite loss or gradient at or before step {step} "
                        f"({skipped} update(s) dropped); the state was not updated and the "
                        f"last checkpoint in {ckpt.directory} is finite. Lower the learning "
                        "rate, check the data, or set --config.nan_policy=skip"
                    )
            if preempted:
                save(step)
                break
            evaluated = _at(step, config.eval.every_steps)
            if evaluated:
                last_eval = evaluate(step)
            if _at(step, config.samples.every_steps):  # all processes compute, main writes
                batch_s = jax.tree.map(lambda x: x[: max(config.samples.num, 1)], batch)
                with sharding.activation_context(mesh, rules):
                    media = samples_fn(state, batch_s, jax.random.PRNGKey(step))
                writer.media(step, media)
            if _at(step, config.checkpoint.every_steps) or step == config.total_steps:
                save(step, last_eval if evaluated and config.checkpoint.best_metric else None)
        loop_seconds = time.perf_counter() - loop_start
        ckpt.wait()
        if preempted:
            line = f"preempted at step {step}: checkpoint saved"
            writer.print(line) if is_main else print(line, flush=True)
    finally:
        profiler.stop()
        prefetch.close()
        ckpt.close()
        writer.close()
    return {
        "step": step,
        "preempted": preempted,
        "state": state,
        "history": history,
        "loop_seconds": loop_seconds,
        "checkpoint_block_seconds": save_block_seconds,
        **last_log,
        **last_eval,
    }


def _init_compiler_options(mesh) -> dict | None:
    """XLA options for the one-off initialisation: on CPUs, without LLVM's optimisation
    passes, which take longer than the initialisation they speed up (the random initialisers'
    threefry code: the tiny AniTalker stage-1 state compiles in 6 s instead of 12 and runs
    in 0.1 s either way)."""
    if mesh.devices.flat[0].platform == "cpu":
        return {"xla_backend_optimization_level": 0}
    return None


def _without_subtrees(state, subtrees: dict):
    """The train state (or its abstract / shardings) without the params and EMA copies of the
    sub-trees that `subtrees` ({group: {key: ...}}) names."""

    def drop(tree):
        return {
            g: {k: v for k, v in t.items() if k not in subtrees[g]} if g in subtrees else t
            for g, t in tree.items()
        }

    return state.replace(params=drop(state.params), ema_params=drop(state.ema_params))


def _with_placeholders(state, abstract, subtrees: dict):
    """`state` from `_without_subtrees` with the abstract arrays of `abstract` back in place of
    the sub-trees it lacks, for load_pretrained to check and replace."""

    def fill(tree, full):
        return {g: {**full[g], **t} if g in subtrees else t for g, t in tree.items()}

    return state.replace(
        params=fill(state.params, abstract.params),
        ema_params=fill(state.ema_params, abstract.ema_params),
    )


def _misfits(target, new) -> list[str]:
    """What keeps the tree `new` from replacing `target` (arrays or abstract arrays): missing
    and unexpected leaves and differing shapes, by key path, sorted."""
    want = {
        jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(target)
    }
    got = {
        jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(new)
    }
    return sorted(
        [f"missing {k}" for k in want.keys() - got.keys()]
        + [f"unexpected {k}" for k in got.keys() - want.keys()]
        + [
            f"{k}: {got[k]} but the model has {want[k]}"
            for k in want.keys() & got.keys()
            if want[k] != got[k]
        ]
    )


def load_pretrained(state, pretrained: dict, shardings):
    """Replaces parameter sub-trees (and their EMA copies) by given weights, e.g. imported
    released ones: `pretrained` is {group: {subtree key: params}}; structures and shapes
    must match exactly."""
    params, ema = dict(state.params), dict(state.ema_params)
    for group, subtrees in pretrained.items():
        if group not in state.params:
            raise ConfigError(
                f"pretrained weights for group {group!r}, which the model does "
                f"not have (groups: {sorted(state.params)})"
            )
        for key, new in subtrees.items():
            target = state.params[group][key]
            where = f"pretrained weights for {group}/{key}"
            problems = _misfits(target, new)
            if problems:
                raise ConfigError(f"{where} do not fit the model: " + "; ".join(problems[:10]))
            host = jax.tree.map(np.asarray, new)
            params[group] = {
                **params[group],
                key: jax.device_put(host, shardings.params[group][key]),
            }
            if group in ema:  # its own buffers: the step donates both trees
                ema[group] = {
                    **ema[group],
                    key: jax.device_put(host, shardings.ema_params[group][key]),
                }
    return state.replace(params=params, ema_params=ema)


def _at(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def _count(tree) -> str:
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    return f"{n / 1e6:.2f}M" if n >= 1e5 else str(n)
