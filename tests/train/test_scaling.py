"""The scaling projection (jaxtalk/train/scaling.py): ring formulas, how collectives grow
with the mesh, and the real step compiled on 8 simulated devices."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from configs import toy_regression
from jaxtalk.train import communication, scaling, sharding
from jaxtalk.train.communication import Collective

H100 = scaling.CHIPS["h100"]


def test_ring_times_inside_one_domain_and_across_domains():
    gb = 1e9
    assert scaling.collective_seconds("all-reduce", gb, 8, 1, H100) == pytest.approx(
        2 * 7 / 8 * gb / 450e9
    )
    assert scaling.collective_seconds("all-gather", gb, 8, 1, H100) == pytest.approx(
        7 / 8 * gb / 450e9
    )
    # 64 GPUs: reduce-scatter + all-gather in the node, the nodes' ring on an eighth
    hierarchical = 2 * 7 / 8 * gb / 450e9 + 2 * 7 / 8 * (gb / 8) / 50e9
    assert scaling.collective_seconds("all-reduce", gb, 8, 8, H100) == pytest.approx(hierarchical)
    assert scaling.collective_seconds("all-reduce", gb, 1, 1, H100) == 0.0
    gloo = scaling.Chip("gloo", 0.0, 1e9, 1e9, 0, latency_s=4e-3)  # a fixed cost per array
    assert scaling.collective_seconds("all-reduce", gb, 2, 1, gloo, operands=10) == (
        pytest.approx(10 * 4e-3 + gb / 1e9)
    )
    with pytest.raises(ValueError, match="unknown collective"):
        scaling.collective_seconds("broadcast", gb, 8, 1, H100)


def test_groups_grow_with_the_axes_they_span():
    hybrid, target = scaling.COMPILED_MESHES["hybrid"], scaling.target_mesh("hybrid", 64)
    assert target == {"data": 8, "fsdp": 8}
    assert scaling.group_layout(2, hybrid, target) == (8, 8)  # data: one chip per node
    assert scaling.group_layout(8, hybrid, target) == (8, 1)  # fsdp: inside the node
    assert scaling.group_layout(16, hybrid, target) == (64, 1)
    assert scaling.group_layout(0, hybrid, target) == (64, 1)
    # a minibatch-deviation group of 4 stays 4 devices, spread over the grown data axis
    data = scaling.COMPILED_MESHES["data"]
    assert scaling.group_layout(4, data, scaling.target_mesh("data", 64)) == (4, 16)
    with pytest.raises(ValueError, match="ambiguous"):
        scaling.group_layout(4, {"data": 4, "fsdp": 4}, {"data": 4, "fsdp": 4})
    with pytest.raises(ValueError, match="multiple of 8"):
        scaling.target_mesh("hybrid", 12)


def test_domains_split_a_group_into_fast_and_slow_hops():
    assert scaling.split_by_domain(8, 1, 8) == (8, 1)
    assert scaling.split_by_domain(64, 1, 8) == (8, 8)
    assert scaling.split_by_domain(8, 8, 8) == (1, 8)  # one chip of each node
    assert scaling.split_by_domain(4, 16, 8) == (1, 4)
    assert scaling.split_by_domain(256, 1, 0) == (256, 1)  # a TPU slice: all ICI


def test_projection_bounds():
    ops = [Collective("all-reduce", int(1e9), 8)]
    p = scaling.project(1e13, ops, {"data": 8, "fsdp": 1}, "data", 64, H100, 0.5)
    assert p["compute_s"] == pytest.approx(1e13 / (989e12 * 0.5))
    assert p["comm_s"] == pytest.approx(scaling.collective_seconds("all-reduce", 1e9, 8, 8, H100))
    assert p["step_s_serial"] == pytest.approx(p["compute_s"] + p["comm_s"])
    assert p["efficiency_serial"] < p["efficiency_overlapped"] == 1.0
    alone = scaling.project(1e13, [], {"data": 8, "fsdp": 1}, "data", 64, H100, 0.5)
    assert alone["efficiency_serial"] == 1.0 and alone["comm_s"] == 0.0


def _toy_step(data: int, fsdp: int):
    config = toy_regression.get_config("tiny")
    config.batch_size = 8 * data * fsdp
    mesh = Mesh(np.array(jax.devices()[: data * fsdp]).reshape(data, fsdp, 1),
                ("data", "fsdp", "tensor"))  # fmt: skip
    rules = tuple(tuple(r) for r in config.logical_axis_rules)
    built = scaling.task_step(config, mesh, rules)
    with sharding.activation_context(mesh, rules):
        return built.step.lower(built.state, built.batch).compile(), built.state


def test_the_real_step_on_eight_devices_all_reduces_its_gradients_once():
    compiled, state = _toy_step(8, 1)
    groups = [state.params[g] for g in ("model", "critic")]  # not the frozen `projection`
    trained = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(groups))
    found = communication.collectives(compiled)
    # every trained parameter's gradient, plus a few scalars (losses, norms)
    assert trained <= found["all-reduce"]["bytes"] <= trained * 1.05
    # each group's gradients travel as one all-reduce carrying an array per parameter
    reductions = [o for o in communication.collective_ops(compiled) if o.kind == "all-reduce"]
    assert len(reductions) == 2
    assert sum(o.operands for o in reductions) >= len(jax.tree.leaves(groups))
    one_device, _ = _toy_step(1, 1)
    per_device = compiled.cost_analysis()["flops"]
    # the compiled SPMD program is one device's: its FLOPs at 8 per device equal those
    # of one device with 8 examples (the optimizer's per-parameter work included)
    assert per_device == pytest.approx(one_device.cost_analysis()["flops"], rel=0.05)
