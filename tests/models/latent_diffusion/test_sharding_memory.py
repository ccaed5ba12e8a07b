"""FSDP divides the inflated UNet's parameters and AdamW state by the mesh, measured on the
compiled programs of 8 simulated devices (tests/conftest.py), at a reduced size whose
widths (320) the full model has: a 1-level UNet with one layer per block and the family's
MotionModule in every slot. The full size is benchmarks/latent_diffusion_memory.py."""

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from configs.common import LOGICAL_AXIS_RULES
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.latent_diffusion.motion_module import MotionModule
from jaxtalk.train import communication, memory, sharding

REDUCED = dataclasses.replace(
    ld.SD15,
    block_out_channels=(320,),
    layers_per_block=1,
    cross_attention=(True,),
    cross_attention_dim=320,
)
# Buffer sizes do not depend on LLVM's optimisation level; compiling without it is faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
BATCH, FRAMES, SIDE, TOKENS = 8, 2, 8, 4


def batch_inputs():
    latent = jax.ShapeDtypeStruct((BATCH, FRAMES, SIDE, SIDE, 4), jnp.float32)
    return {
        "noisy": latent,
        "t": jax.ShapeDtypeStruct((BATCH,), jnp.float32),
        "context": jax.ShapeDtypeStruct((BATCH, TOKENS, REDUCED.cross_attention_dim), jnp.float32),
        "noise": latent,
    }


def test_fsdp_divides_state_and_the_train_step_holds_only_its_shard():
    assert len(jax.devices()) == 8
    model = ld.UNet3DConditionModel(REDUCED, motion_module=MotionModule, motion_mid=True)
    tx = optax.adamw(1e-4, weight_decay=1e-2)
    batch = batch_inputs()
    boxed = memory.abstract_state(
        model, tx, jax.random.PRNGKey(0), batch["noisy"], batch["t"], batch["context"]
    )
    abstract = nn.unbox(boxed)

    for mesh_shape, fsdp in (({"data": 2, "fsdp": 4, "tensor": 1}, 4), ({"fsdp": 8}, 8)):
        mesh = sharding.make_mesh({"data": 1, "tensor": 1, **mesh_shape})
        shardings = sharding.shardings_for(boxed, mesh, LOGICAL_AXIS_RULES)
        state = memory.state_bytes(abstract, shardings)
        assert state["per_device_bytes"] <= 1.05 * state["total_bytes"] / fsdp, (mesh_shape, state)
    assert state["total_bytes"] > 100 * 2**20  # params x 3 copies: not a toy

    assert memory.replicated_kernels(boxed["params"], shardings["params"]) == []
    placed, _ = memory.compile_placement(boxed, mesh, LOGICAL_AXIS_RULES)
    assert memory.analysis(placed)["argument_bytes"] == state["per_device_bytes"]

    step, _ = memory.compile_train_step(
        memory.diffusion_loss(model), tx, boxed, batch, mesh, LOGICAL_AXIS_RULES, FAST_COMPILE
    )
    batch_shardings = jax.tree.map(
        lambda x: sharding.batch_sharding(mesh, LOGICAL_AXIS_RULES, x.ndim), batch
    )
    batch_bytes = memory.state_bytes(batch, batch_shardings)["per_device_bytes"]
    figures = memory.analysis(step)
    assert figures["argument_bytes"] == state["per_device_bytes"] + batch_bytes, figures
    # The donated state comes back in place: the outputs alias the state's shard.
    assert figures["alias_bytes"] >= state["per_device_bytes"] - 64, figures
    # The step's communication (jaxtalk/train/communication.py): each sharded weight
    # gathered for the forward pass and at most once more for the backward, each gradient
    # reduced once (on CPU as an all-reduce: XLA's CPU pipeline makes no reduce-scatter;
    # 1.27x / 0.94x the parameter bytes with jax 0.10.2).
    params = state["total_bytes"] / 3  # params, AdamW mu and nu
    moved = {k: v["bytes"] / params for k, v in communication.collectives(step).items()}
    assert 1.0 <= moved["all-gather"] <= 2.0, moved
    assert 0.9 <= moved["all-reduce"] + moved.get("reduce-scatter", 0.0) <= 1.05, moved
