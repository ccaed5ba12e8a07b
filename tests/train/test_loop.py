"""The loop on 8 simulated devices: sharding, learning, accumulation, NaN guard."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxtalk.train import train as train_lib
from jaxtalk.train.profile import StepProfiler
from tests.train.helpers import checkpoint_steps, saved_state, toy_config


def test_data_fsdp_tensor_training_learns_with_the_rules_shardings(tmp_path):
    config = toy_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    out = train_lib.train(config, str(tmp_path))
    losses = [h["model/loss"] for h in out["history"]]
    assert losses[-1] < 0.6 * losses[0], losses
    state = out["state"]
    params, adam_mu = state.params, state.opt_state["model"][1][0].mu
    assert len(jax.devices()) == 8
    # (embed, mlp) -> (fsdp, tensor); (mlp, embed) -> (tensor, fsdp); the critic's 1-wide
    # output cannot be split over fsdp=2 and stays replicated on that dimension.
    assert params["model"]["hidden_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert params["model"]["out_0"]["kernel"].sharding.spec == P("tensor", "fsdp")
    assert params["model"]["hidden_0"]["bias"].sharding.spec == P("tensor")
    assert params["projection"]["Dense_0"]["kernel"].sharding.spec == P(None, "fsdp")
    assert params["critic"]["out_0"]["kernel"].sharding.spec == P("tensor", None)
    assert adam_mu["hidden_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert state.ema_params["model"]["hidden_0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    # The frozen group has no optimizer and never moves.
    assert set(state.opt_state) == {"model", "critic"}


def test_frozen_group_is_unchanged_and_ema_lags(tmp_path):
    config = toy_config(total_steps=10, **{"checkpoint.every_steps": 10})
    train_lib.train(config, str(tmp_path))
    first = toy_config(total_steps=1, **{"checkpoint.every_steps": 1})
    train_lib.train(first, str(tmp_path / "one"))
    a, b = saved_state(tmp_path, 10), saved_state(tmp_path / "one", 1)
    np.testing.assert_array_equal(
        a["params/projection/Dense_0/kernel"], b["params/projection/Dense_0/kernel"]
    )
    live, ema = a["params/model/hidden_0/kernel"], a["ema_params/model/hidden_0/kernel"]
    assert not np.allclose(live, ema)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    base = dict(
        total_steps=5,
        **{
            "checkpoint.every_steps": 5,
            "toy.critic": False,
            "optimizers.model.name": "sgd",
            "optimizers.model.b1": 0.0,
            "optimizers.model.clip_norm": 0.0,
        },
    )
    train_lib.train(toy_config(**base), str(tmp_path / "full"))
    train_lib.train(toy_config(grad_accum_steps=4, **base), str(tmp_path / "accum"))
    full, accum = saved_state(tmp_path / "full", 5), saved_state(tmp_path / "accum", 5)
    for k in full:
        if k.startswith("params/"):
            np.testing.assert_allclose(accum[k], full[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_nan_is_skipped_and_never_checkpointed(tmp_path):
    config = toy_config(total_steps=12, **{"toy.nan_at_batches": (4,), "checkpoint.every_steps": 2})
    out = train_lib.train(config, str(tmp_path))
    assert int(out["state"].skipped_steps) == 1
    assert out["history"][0]["nonfinite"] > 0  # the step-5 update was counted as dropped
    for step in checkpoint_steps(tmp_path):
        for name, value in saved_state(tmp_path, step).items():
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), (step, name)


def test_nan_stops_with_a_message_and_keeps_the_last_finite_checkpoint(tmp_path):
    config = toy_config(
        total_steps=20,
        nan_policy="stop",
        **{"toy.nan_at_batches": (6,), "checkpoint.every_steps": 2},
    )
    with pytest.raises(train_lib.NonFiniteError, match="non-finite loss or gradient"):
        train_lib.train(config, str(tmp_path))
    # Batch 6 is step 7: checkpoints 2, 4, 6 exist and nothing after the NaN.
    assert checkpoint_steps(tmp_path) == [2, 4, 6]
    for value in saved_state(tmp_path, 6).values():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all()


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(train_lib.ConfigError, match="not divisible by config.grad_accum_steps"):
        train_lib.train(toy_config(grad_accum_steps=3), str(tmp_path))
    with pytest.raises(train_lib.ConfigError, match="unknown task 'nope'"):
        train_lib.train(toy_config(task="nope"), str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(train_lib.ConfigError, match="not writable"):
        train_lib.train(toy_config(), str(tmp_path / "file" / "run"))


def test_a_run_on_some_of_the_devices_places_everything_on_them(tmp_path):
    devices = jax.devices()[2:4]
    config = toy_config(total_steps=2, **{"mesh.data": 1, "mesh.fsdp": 2})
    state = train_lib.train(config, str(tmp_path / "two"), devices=devices)["state"]
    for leaf in jax.tree.leaves(state):
        if isinstance(leaf, jax.Array):
            assert leaf.sharding.device_set == set(devices)
    with pytest.raises(train_lib.ConfigError, match="needs 4 devices but there are 2"):
        train_lib.train(toy_config(**{"mesh.data": 4}), str(tmp_path / "four"), devices=devices)


def test_frozen_subtree_regex_keeps_those_params(tmp_path):
    config = toy_config(
        total_steps=4, frozen=("model/hidden_0/.*",), **{"checkpoint.every_steps": 4}
    )
    train_lib.train(config, str(tmp_path / "frozen"))
    train_lib.train(
        toy_config(total_steps=4, **{"checkpoint.every_steps": 4}), str(tmp_path / "free")
    )
    frozen, free = saved_state(tmp_path / "frozen", 4), saved_state(tmp_path / "free", 4)
    # A frozen param stays at its init, and so does its EMA, bit for bit (what evaluation
    # and a later stage read); a trained one moves away from its EMA, and the same param
    # trained freely ends elsewhere.
    kernel = "model/hidden_0/kernel"
    np.testing.assert_array_equal(frozen[f"params/{kernel}"], frozen[f"ema_params/{kernel}"])
    assert np.abs(free[f"params/{kernel}"] - frozen[f"params/{kernel}"]).max() > 1e-4
    out = "model/out_0/kernel"
    assert np.abs(frozen[f"params/{out}"] - frozen[f"ema_params/{out}"]).max() > 1e-4


def test_remat_and_bf16_compute_train(tmp_path):
    base = dict(total_steps=5, **{"checkpoint.every_steps": 5, "log.every_steps": 5})
    plain = train_lib.train(toy_config(**base), str(tmp_path / "plain"))
    remat = train_lib.train(toy_config(remat_policy="full", **base), str(tmp_path / "remat"))
    np.testing.assert_allclose(remat["model/loss"], plain["model/loss"], rtol=1e-5)
    bf16 = train_lib.train(toy_config(dtype="bfloat16", **base), str(tmp_path / "bf16"))
    assert np.isfinite(bf16["model/loss"])
    assert abs(bf16["model/loss"] - plain["model/loss"]) < 0.05 * plain["model/loss"] + 1e-3


def test_mfu_uses_the_peak_table_and_is_na_on_cpu():
    from types import SimpleNamespace

    from jaxtalk.train import logs

    h100 = SimpleNamespace(device_kind="NVIDIA H100 80GB HBM3")
    assert logs.peak_flops(h100) == 989e12
    assert logs.peak_flops(SimpleNamespace(device_kind="TPU v5 lite")) == 197e12
    assert logs.mfu(989e12, 0.5, [h100, h100]) == 0.25
    assert logs.mfu(1e12, 1.0, jax.devices()) is None  # CPU: n/a


def test_profile_traces_the_configured_steps_under_the_run(tmp_path):
    import gzip
    import json

    overrides = {"profile.start_step": 3, "profile.num_steps": 2, "checkpoint.every_steps": 0}
    train_lib.train(toy_config(total_steps=5, **overrides), str(tmp_path))
    traces = list((tmp_path / "profile" / "process_0").glob("plugins/profile/*/*"))
    assert {p.name.split(".", 1)[1] for p in traces} >= {"xplane.pb", "trace.json.gz"}
    perfetto = next(p for p in traces if p.name == "perfetto_trace.json.gz")
    events = json.load(gzip.open(perfetto))["traceEvents"]
    steps = sorted(int(e["args"]["step_num"]) for e in events if e.get("name") == "train")
    assert steps == [3, 4]  # the configured steps, each annotated once
    # no Python function calls ("$file:line name" events) unless profile.python is set
    assert not any(e.get("name", "").startswith("$") for e in events)
    assert StepProfiler(str(tmp_path), 3, 2).options.python_tracer_level == 0
    assert StepProfiler(str(tmp_path), 3, 2, python=True).options.python_tracer_level == 1
