"""Projected step time of a recipe on pods it has not run on: compute from XLA's FLOP count,
communication from the collectives of the compiled step and ring formulas.

The method (benchmarks/scaling_projection.py runs it, the README shows its table):
1. Compile the recipe's real training step (the loop's own `jit_train_step`, the task's real
   batch at the recipe's shapes) on simulated CPU devices, once per mesh: data=8, fsdp=8 and
   the hybrid data=2 x fsdp=8. The per-device program gives the FLOPs per device and every
   collective with its bytes (the full tensor) and the mesh axes its device group spans
   (jaxtalk/train/communication.py).
2. Weak scaling: the per-device batch stays that of the 8-chip run, so the FLOPs per device
   and the bytes of each collective stay too; only the groups grow. On n chips the data mesh
   is data=n, fsdp is fsdp=n, hybrid is fsdp=8 (one host's chips) x data=n/8.
3. Each collective's time from the ring algorithm on the links its group crosses: chips are
   numbered fsdp-minor and a chip's `domain` of neighbours shares the fast links (a whole
   TPU slice's ICI; an 8-GPU NVLink node); a group crossing domains runs hierarchically
   (reduce-scatter inside the domain, the domains' ring over the slow links on a 1/inner
   shard, all-gather inside). An all-reduce moves 2(g-1)/g of its bytes, an all-gather or
   reduce-scatter (g-1)/g.
4. Compute time is FLOPs / (peak x an assumed MFU). The step time lies between full overlap
   of communication with compute (max) and none (sum); both are reported.

What it leaves out: latency terms (small at these tensor sizes), the topology of small TPU
slices (a 2x2x2 v5p has no wraparound links), the data loader, and one CPU artefact: XLA's CPU
pipeline forms no reduce-scatter, so FSDP gradients appear as all-reduces (twice the bytes
of the reduce-scatter a GPU/TPU compile emits): the fsdp rows are upper bounds on
communication.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Callable

import jax
from flax import linen as nn

from jaxtalk.train import communication, sharding
from jaxtalk.train.data import to_global
from jaxtalk.train.task import get_task
from jaxtalk.train.train import jit_train_step, state_initializer, task_optimizers


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # dense bf16 per chip
    fast_bytes_per_s: float  # per chip, one direction, inside its domain
    slow_bytes_per_s: float  # per chip, one direction, between domains
    domain: int  # chips sharing the fast links (0: every chip of the pod)
    # Fixed cost of each array a collective carries: the projections leave it out (0; the
    # GPU/TPU libraries send a collective's arrays as one); gloo pays it per array.
    latency_s: float = 0.0


# Nominal rates from the vendors' data sheets; collective libraries reach 70-90% of them.
CHIPS = {
    # TPU v5p: 459 TFLOP/s bf16, 4,800 Gbps of ICI per chip (3-D torus) within a slice.
    "v5p": Chip("TPU v5p", 459e12, 600e9, 600e9, 0),
    # H100 SXM: 989 TFLOP/s dense bf16; NVLink 4 900 GB/s both ways inside an 8-GPU node;
    # one 400 Gb/s NDR InfiniBand link per GPU between nodes.
    "h100": Chip("H100 SXM", 989e12, 450e9, 50e9, 8),
}

# The meshes compiled and how each grows: mesh axis sizes on n chips (weak scaling).
COMPILED_MESHES = {
    "data": {"data": 8, "fsdp": 1},
    "fsdp": {"data": 1, "fsdp": 8},
    "hybrid": {"data": 2, "fsdp": 8},
}
HYBRID_FSDP = 8


def target_mesh(kind: str, chips: int) -> dict[str, int]:
    if kind == "data":
        return {"data": chips, "fsdp": 1}
    if kind == "fsdp":
        return {"data": 1, "fsdp": chips}
    if kind == "hybrid":
        if chips % HYBRID_FSDP:
            raise ValueError(f"a hybrid mesh needs a multiple of {HYBRID_FSDP} chips, not {chips}")
        return {"data": chips // HYBRID_FSDP, "fsdp": HYBRID_FSDP}
    raise ValueError(f"unknown mesh kind {kind!r} (data, fsdp, hybrid)")


def group_layout(group_size: int, compiled: dict[str, int], target: dict[str, int]):
    """(devices, stride) on the `target` mesh of a collective compiled on the `compiled`
    one, chips numbered fsdp-minor. A group spanning whole mesh axes (told apart by its
    size: the compiled meshes give each combination of axes another size) grows with them;
    a smaller group (a StyleGAN2 discriminator's minibatch-deviation groups of 4 examples)
    keeps its size and spreads over the axes it lies in. 0 means every device."""
    size = group_size or math.prod(compiled.values())
    names = [a for a in ("data", "fsdp") if compiled.get(a, 1) > 1]
    combos = [c for r in (1, 2) for c in itertools.combinations(names, r)]
    exact = [c for c in combos if math.prod(compiled[a] for a in c) == size]
    if len(exact) > 1:
        raise ValueError(f"a group of {size} devices on mesh {compiled} is ambiguous: {exact}")
    within = exact or [c for c in combos if math.prod(compiled[a] for a in c) % size == 0][:1]
    if not within:
        raise ValueError(f"a group of {size} devices does not fit mesh {compiled}")
    axes = within[0]
    span = math.prod(target[a] for a in axes)
    stride = 1 if "fsdp" in axes or target["fsdp"] == 1 else target["fsdp"]
    if exact:
        return span, stride
    return size, stride * max(1, span // size)


def split_by_domain(group: int, stride: int, domain: int) -> tuple[int, int]:
    """(inner, outer): a group of `group` chips `stride` apart has `inner` chips in each of
    `outer` domains of `domain` consecutive chips (0: one domain holds every chip)."""
    if domain == 0:
        return group, 1
    inner = max(1, min(group, domain // stride))
    return inner, group // inner


def collective_seconds(
    kind: str, nbytes: float, inner: int, outer: int, chip: Chip, operands: int = 1
) -> float:
    """Ring time of one collective over `inner` x `outer` chips (hierarchical across domains),
    plus the chip's fixed cost per array carried."""
    if inner * outer == 1:
        return 0.0
    fixed = chip.latency_s * operands
    passes = {"all-reduce": 2, "all-gather": 1, "reduce-scatter": 1, "all-to-all": 1}.get(kind)
    if kind == "collective-permute":
        return fixed + nbytes / (chip.fast_bytes_per_s if outer == 1 else chip.slow_bytes_per_s)
    if passes is None:
        raise ValueError(f"unknown collective {kind!r}")
    within = passes * (inner - 1) / inner * nbytes / chip.fast_bytes_per_s
    between = passes * (outer - 1) / outer * (nbytes / inner) / chip.slow_bytes_per_s
    return fixed + within + between


def project(
    flops_per_device: float,
    ops: list[communication.Collective],
    compiled_mesh: dict[str, int],
    kind: str,
    chips: int,
    chip: Chip,
    mfu: float,
) -> dict:
    """Step time on `chips` chips of `chip`, a mesh of `kind`, from one compiled step."""
    mesh = target_mesh(kind, chips)
    comm = 0.0
    for op in ops:
        inner, outer = split_by_domain(
            *group_layout(op.group_size, compiled_mesh, mesh), chip.domain
        )
        comm += collective_seconds(op.kind, op.bytes, inner, outer, chip, op.operands)
    compute = flops_per_device / (chip.peak_flops * mfu)
    return {
        "compute_s": compute,
        "comm_s": comm,
        "step_s_overlapped": max(compute, comm),
        "step_s_serial": compute + comm,
        "efficiency_overlapped": compute / max(compute, comm),
        "efficiency_serial": compute / (compute + comm),
    }


@dataclasses.dataclass
class TaskStep:
    step: Callable  # the loop's jitted step
    state: Any  # abstract arrays carrying their shardings (nothing allocated)
    batch: Any  # the task's first real batch, a global array
    init: Callable[[], Any]  # a fresh state, placed: for running the step


def task_step(config, mesh, rules) -> TaskStep:
    """The recipe's training step as the loop builds it, with its arguments."""
    task = get_task(config)
    losses = task.losses()
    optimizers = task_optimizers(config, losses, mesh)
    processes = sorted({d.process_index for d in mesh.devices.flat})  # the mesh's own
    data = task.data(
        "train",
        global_batch_size=config.batch_size,
        seed=config.seed,
        process_index=processes.index(jax.process_index()),
        process_count=len(processes),
    )
    batch = to_global(next(data), mesh, rules, process_count=len(processes))

    init_state = state_initializer(task, optimizers, dict(config.ema))
    rng = jax.random.PRNGKey(config.seed)
    boxed = jax.eval_shape(init_state, rng, rng, batch)
    shardings = sharding.shardings_for(boxed, mesh, rules)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), nn.unbox(boxed), shardings
    )
    batch_shardings = jax.tree.map(lambda x: sharding.batch_sharding(mesh, rules, x.ndim), batch)
    step = jit_train_step(config, losses, optimizers, shardings, batch_shardings)
    init = jax.jit(lambda *a: nn.unbox(init_state(*a)), out_shardings=shardings)
    return TaskStep(step, abstract, batch, lambda: init(rng, rng, batch))
