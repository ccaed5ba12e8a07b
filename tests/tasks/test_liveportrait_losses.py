"""liveportrait's stage-1 losses beyond the tiny recipe's: the perceptual (VGG19 pyramid) and
ArcFace identity terms on random weights, the perceptual loss's minimum size as a config
error, logical axis names on every trained parameter, and a bf16 + remat train step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("jaxtalk.models.liveportrait.warping")

from configs import liveportrait as cfg_lib  # noqa: E402
from jaxtalk.convert import weights  # noqa: E402
from jaxtalk.losses.perceptual import LAYERS, MIN_SIZE  # noqa: E402
from jaxtalk.models.metric_nets import iresnet  # noqa: E402
from jaxtalk.models.param_hook import eval_shape_init  # noqa: E402
from jaxtalk.models.vgg import VGGFeatures  # noqa: E402
from jaxtalk.tasks import liveportrait as task_lib  # noqa: E402
from jaxtalk.train import state as state_lib  # noqa: E402
from jaxtalk.train.step import train_step  # noqa: E402
from tests.random_weights import random_variables  # noqa: E402
from tests.tasks import helpers  # noqa: E402

TINY_ARCFACE = (1, 1, 1, 1)


def tiny_config(**loss):
    c = helpers.shallow_liveportrait(cfg_lib.get_config("tiny"))
    c.loss.update(loss)
    return c


def random_batch(size: int, b: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        k: jnp.asarray(rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8))
        for k in ("source", "driving")
    }


def save_random_loss_nets(directory) -> tuple[str, str]:
    """Random VGG19 (up to relu5_1) and a one-block-per-stage ArcFace, as imported files."""
    vgg = VGGFeatures(config="vgg19", output_layers=LAYERS)
    vgg_params = random_variables(vgg.init, jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 3)))
    arc = iresnet.IResNet(TINY_ARCFACE)
    arc_vars = random_variables(arc.init, jax.random.PRNGKey(2), jnp.zeros((1, 112, 112, 3)))
    vgg_path, arc_path = str(directory / "vgg19.safetensors"), str(directory / "arc.safetensors")
    weights.save(vgg_params, vgg_path, release="vgg19")
    weights.save(arc_vars, arc_path, release="arcface_r100")
    return vgg_path, arc_path


# The GAN on (for the discriminator group) over the whole frame and the lip region.
STAGE1 = dict(adversarial=0.1, regions=("full", "lip"))


def stage1_task():
    return task_lib.build(tiny_config(**STAGE1))


@pytest.fixture(scope="module")
def stage1():
    """Random variables in the tiny stage 1's shapes (params, model state) for the tests
    below, which need weights, not the recipe's initialisation (not compiled)."""
    return random_variables(stage1_task().init, jax.random.PRNGKey(0), random_batch(64))


def test_perceptual_and_identity_terms_on_random_weights(stage1, tmp_path):
    """One generator loss with the perceptual loss on a face crop of its smallest size
    (128 px) and the identity loss: both finite, positive and in the loss's metrics."""
    vgg_path, arc_path = save_random_loss_nets(tmp_path)
    config = tiny_config(
        perceptual=1.0,
        identity=1.0,
        regions=("face",),
        region_sizes=dict(face=MIN_SIZE, lip=MIN_SIZE),
        vgg19_weights=vgg_path,
        arcface_weights=arc_path,
    )
    task = task_lib.build(config)
    params = {"generator": stage1[0]["generator"], **task.loss_networks()}
    assert iresnet.depths_of(params["arcface"]["params"]) == TINY_ARCFACE

    def loss(*args):
        out = task._generator_loss(*args)
        return out.loss, out.metrics

    total, metrics = jax.jit(loss)(params, stage1[1], random_batch(64), jax.random.PRNGKey(3))
    for term in ("perceptual_face", "identity"):
        value = float(metrics[term])
        assert np.isfinite(value) and value > 0, (term, value)
    assert np.isfinite(float(total))


@pytest.mark.parametrize(
    "key, change",
    [
        ("loss.region_sizes.lip", dict(region_sizes=dict(face=256, lip=64))),
        ("loss.region_sizes.face", dict(region_sizes=dict(face=96, lip=128))),
    ],
)
def test_perceptual_loss_under_its_minimum_size_is_a_config_error(key, change):
    config = tiny_config(perceptual=1.0, **change)
    with pytest.raises(ValueError, match=rf"^{key} is \d+: .* at least 128 px") as err:
        task_lib.build(config)
    assert "\n" not in str(err.value)
    # stage 2 computes no perceptual loss: the same sizes are no error there
    stitching = cfg_lib.get_config("tiny_stitching")
    stitching.loss.update(dict(perceptual=1.0, **change))
    task_lib.build(stitching)


def test_perceptual_loss_needs_frames_of_its_minimum_size():
    config = tiny_config(perceptual=1.0, region_sizes=dict(face=128, lip=128))
    config.data.image_size = 64
    with pytest.raises(ValueError, match="data.image_size is 64"):
        task_lib.build(config)
    # the records' own size (image_size 0) is checked when the loss is traced
    config.data.image_size = 0
    config.loss.regions = ("full",)
    task = task_lib.build(config)
    params = {"generator": {}, "vgg": {}}
    with pytest.raises(ValueError, match=r"data.image_size \(the frames'\) is 64"):
        task._generator_loss(params, {}, random_batch(64), jax.random.PRNGKey(1))


def _unnamed_leaves(tree) -> list[str]:
    """Paths of the params (of an init) without logical axis names."""
    boxed = lambda x: isinstance(x, nn.LogicallyPartitioned)  # noqa: E731
    return [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree, is_leaf=boxed)
        if not boxed(leaf) or all(name is None for name in leaf.names)
    ]


def test_every_trained_parameter_carries_logical_axes():
    """F, M, W, G and the discriminator (stage 1); the stitching, lip and eye MLPs and the
    ratio regressor (stage 2): every parameter of every trained group is boxed with axis
    names, the sharding rules' input."""
    params, _ = eval_shape_init(stage1_task().init, jax.random.PRNGKey(0), random_batch(64))
    assert set(params) == {"generator", "discriminator"}
    assert set(params["generator"]) == set(task_lib.BASE)
    assert _unnamed_leaves(params) == []
    stage2 = task_lib.build(cfg_lib.get_config("tiny_stitching"))
    params, _ = eval_shape_init(stage2.init, jax.random.PRNGKey(0), random_batch(64))
    trained = {k: params[k] for k in ("stitching", "lip", "eye", "ratio")}
    assert _unnamed_leaves(trained) == []


def test_bf16_remat_train_step_is_finite(stage1):
    """The tiny generator in bfloat16 compute under full rematerialisation: one jitted
    train step (the whole frame only: the step's compile is this file's slowest part), its
    loss finite, the parameters updated."""
    config = tiny_config(regions=("full",))
    config.dtype, config.remat_policy = "bfloat16", "full"
    task = task_lib.build(config)
    params = {"generator": stage1[0]["generator"]}  # float32 whatever the compute
    model_state = {"batch_stats": {"generator": stage1[1]["batch_stats"]["generator"]}}
    losses = task.losses()
    optimizers = {"generator": optax.adam(1e-3)}
    state = state_lib.create(params, model_state, optimizers, {}, jax.random.PRNGKey(1))
    step = jax.jit(
        lambda s, b: train_step(
            s, b, losses=losses, optimizers=optimizers, ema_decays={}, remat=config.remat_policy
        )  # fmt: skip
    )
    new, metrics = step(state, random_batch(64))
    assert float(metrics["nonfinite"]) == 0.0
    for key in ("generator/loss", "generator/l1_full", "generator/equivariance"):
        assert np.isfinite(float(metrics[key])), key
    moved = [
        float(jnp.abs(a - b).max())
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(new.params))
    ]
    assert max(moved) > 0
    # the BatchNorm statistics were updated in bfloat16 compute and stayed finite
    stats = jax.tree.leaves(new.model_state["batch_stats"]["generator"])
    assert all(np.isfinite(np.asarray(a)).all() for a in stats)
