"""Communication read from compiled SPMD programs on 8 simulated devices
(jaxtalk/train/communication.py): exact bytes on programs whose collectives are known."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxtalk.train import communication


def compiled(fn, in_spec, out_spec, *args):
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    jitted = jax.jit(
        fn,
        in_shardings=NamedSharding(mesh, in_spec),
        out_shardings=NamedSharding(mesh, out_spec),
    )
    return jitted.lower(*args).compile()


def test_gathering_a_sharded_array_moves_the_whole_array():
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32)
    found = communication.collectives(compiled(lambda a: a * 2, P("data"), P(), x))
    assert found == {"all-gather": {"count": 1, "bytes": 8 * 1024 * 4}}


def test_a_sum_over_the_sharded_axis_all_reduces_the_partial_sums():
    x = jax.ShapeDtypeStruct((8, 1024), jnp.bfloat16)
    found = communication.collectives(compiled(lambda a: a.sum(0), P("data"), P(), x))
    assert set(found) == {"all-reduce"} and found["all-reduce"]["count"] == 1
    assert found["all-reduce"]["bytes"] in (1024 * 2, 1024 * 4)  # bf16, or accumulated in f32


def test_a_replicated_program_communicates_nothing():
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32)
    assert communication.collectives(compiled(lambda a: a + 1, P(), P(), x)) == {}


def test_a_reduce_scatter_counts_the_unreduced_operand():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    scatter = jax.shard_map(
        lambda a: jax.lax.psum_scatter(a, "data", tiled=True),
        mesh=mesh,
        in_specs=P(),
        out_specs=P("data"),
    )
    x = jax.ShapeDtypeStruct((1024,), jnp.float32)
    found = communication.collectives(jax.jit(scatter).lower(x).compile())
    # each device reduces its whole 1,024-float operand and keeps a 128-float shard
    assert found == {"reduce-scatter": {"count": 1, "bytes": 1024 * 4}}
