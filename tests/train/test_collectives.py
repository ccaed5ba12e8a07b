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


def test_each_collective_knows_how_many_devices_it_spans():
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
    x = jax.ShapeDtypeStruct((8, 1024), jnp.float32)

    def ops(spec):
        jitted = jax.jit(
            lambda a: a.sum(0),
            in_shardings=NamedSharding(mesh, spec),
            out_shardings=NamedSharding(mesh, P()),
        )
        return communication.collective_ops(jitted.lower(x).compile())

    assert [(o.kind, o.group_size) for o in ops(P("fsdp"))] == [("all-reduce", 4)]
    assert [(o.kind, o.group_size) for o in ops(P("data"))] == [("all-reduce", 2)]
    assert [(o.kind, o.group_size) for o in ops(P(("data", "fsdp")))] == [("all-reduce", 8)]


def test_group_sizes_in_the_iota_and_listed_forms():
    assert communication._group_size("all-reduce(x), replica_groups=[2,4]<=[8], to_apply=f") == 4
    assert communication._group_size("all-gather(x), replica_groups={{0,2},{1,3}}, dims={0}") == 2
    assert communication._group_size("all-reduce(x), replica_groups={}, to_apply=f") == 0


def test_joined_batches_stay_on_their_devices_where_a_concatenation_moves_them():
    from jaxtalk.models.layers.sharding import join_batches, split_batches

    def per_example(x):
        return jnp.tanh(x * 2.0)

    def concatenated(a, b):
        both = per_example(jnp.concatenate([a, b]))
        return jnp.sum((both[:8] - both[8:]) ** 2)

    def joined(a, b):
        first, second = split_batches(per_example(join_batches(a, b)), 2)
        return jnp.sum((first - second) ** 2)

    x = jax.ShapeDtypeStruct((8, 256), jnp.float32)
    moved = communication.collectives(compiled(concatenated, P("data"), P(), x, x))
    kept = communication.collectives(compiled(joined, P("data"), P(), x, x))
    activations = 8 * 256 * 4
    assert sum(v["bytes"] for k, v in moved.items() if k != "all-reduce") >= activations
    assert set(kept) == {"all-reduce"} and kept["all-reduce"]["bytes"] <= 16  # the loss
    a, b = np.arange(12.0).reshape(3, 4), -np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(join_batches(a, b)[1], b[0])
    first, second = split_batches({"x": join_batches(a, b)}, 2)
    np.testing.assert_array_equal(first["x"], a)
    np.testing.assert_array_equal(second["x"], b)
