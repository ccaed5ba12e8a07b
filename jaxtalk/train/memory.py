"""Per-device memory of a sharded training state and step, from compiled programs only.

Nothing here allocates a full-size array: states are abstract (`jax.eval_shape` of an init,
boxed with logical names), steps are lowered and compiled but never executed, and the
figures are XLA's `memory_analysis()` of the per-device SPMD program next to the bytes the
shardings imply. Benchmarks (benchmarks/latent_diffusion_memory.py) and the FSDP tests use
it to check that FSDP divides parameters and optimizer state by the mesh.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.train import sharding


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def state_bytes(abstract, shardings) -> dict[str, int]:
    """Total bytes of an abstract tree and the largest per-device share its shardings give
    (device 0's shard shapes; FSDP shards are even, so every device holds the same)."""
    total = per_device = 0
    by_path = dict((jax.tree_util.keystr(p), s) for p, s in _leaves(shardings))
    for path, leaf in _leaves(abstract):
        size = jnp.dtype(leaf.dtype).itemsize
        total += math.prod(leaf.shape) * size
        shard = by_path[jax.tree_util.keystr(path)].shard_shape(leaf.shape)
        per_device += math.prod(shard) * size
    return {"total_bytes": total, "per_device_bytes": per_device}


def replicated_kernels(boxed_params, shardings, min_dim: int = 320) -> list[str]:
    """Paths of kernels (>= 2 dims) with a dimension >= min_dim that no mesh axis shards."""
    by_path = dict((jax.tree_util.keystr(p), s) for p, s in _leaves(shardings))
    out = []
    for path, leaf in _leaves(nn.unbox(boxed_params)):
        spec = by_path[jax.tree_util.keystr(path)].spec
        if leaf.ndim >= 2 and max(leaf.shape) >= min_dim and all(a is None for a in spec):
            out.append(jax.tree_util.keystr(path))
    return out


def analysis(compiled) -> dict[str, int]:
    """The per-device figures of a compiled program's memory_analysis()."""
    m = compiled.memory_analysis()
    return {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "generated_code_bytes": int(m.generated_code_size_in_bytes),
    }


def abstract_state(model, tx, rng, *init_args):
    """The boxed abstract (params, AdamW state) of `model` and `tx`: eval_shape only."""

    def init(rng, *args):
        params = model.init(rng, *args)["params"]
        return {"params": params, "opt": tx.init(params)}

    return eval_shape_init(init, rng, *init_args)


def compile_placement(boxed_state, mesh, rules):
    """The state placed on its shardings: an identity program whose arguments are the state
    as the rules shard it (memory_analysis' argument bytes = the state per device)."""
    shardings = sharding.shardings_for(boxed_state, mesh, rules)
    abstract = nn.unbox(boxed_state)
    start = time.perf_counter()
    compiled = (
        jax.jit(lambda s: s, in_shardings=(shardings,), out_shardings=shardings, donate_argnums=0)
        .lower(abstract)
        .compile()
    )
    return compiled, time.perf_counter() - start


def diffusion_loss(model):
    """Epsilon-prediction MSE of `model.apply(params, noisy, t, context)` against `noise`."""

    def loss(params, batch):
        pred = model.apply({"params": params}, batch["noisy"], batch["t"], batch["context"])
        return jnp.mean(jnp.square(pred.astype(jnp.float32) - batch["noise"]))

    return loss


def compile_train_step(loss, tx, boxed_state, batch, mesh, rules, compiler_options=None):
    """One step (loss, gradient, optimizer update) jitted with explicit in/out shardings and
    the state donated, traced under the rules' activation constraints, lowered on abstract
    inputs and compiled (`compiler_options`, e.g. {"xla_backend_optimization_level": 0}
    to compile faster where only buffer sizes matter); returns (compiled, seconds to lower + compile)."""
    state_shardings = sharding.shardings_for(boxed_state, mesh, rules)
    batch_shardings = jax.tree.map(lambda x: sharding.batch_sharding(mesh, rules, x.ndim), batch)

    def step(state, batch):
        value, grads = jax.value_and_grad(loss)(state["params"], batch)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, value

    jitted = jax.jit(
        step,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, NamedSharding(mesh, P())),
        donate_argnums=0,
    )
    abstract = nn.unbox(boxed_state)  # outside the rules' context: no constraint on shapes
    start = time.perf_counter()
    with sharding.activation_context(mesh, rules):
        lowered = jitted.lower(abstract, batch)
    compiled = lowered.compile(compiler_options)
    return compiled, time.perf_counter() - start
