"""LivePortrait F (appearance feature extractor) and W (warping module): released
parameter counts and state_dict keys, shapes at the released and a tiny size, the
depth/channel folding as torch's `view` does it, and the dense motion's geometry.
Numerical parity with the official code: tests/convert/test_liveportrait_parity_volume.py."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import liveportrait, mapping
from jaxtalk.models.liveportrait.appearance import (
    AppearanceFeatureExtractor,
    fold_depth,
    unfold_depth,
)
from jaxtalk.models.liveportrait.blocks import Hourglass
from jaxtalk.models.liveportrait.warping import (
    WarpingNetwork,
    coordinate_grid,
    gaussian_heatmaps,
    sparse_motions,
)
from tests.evaluate.torch_layout import random_state_dict

KEYS = Path("/work/shared/reference/keys/liveportrait_state_dicts.txt")
TINY_F = dict(
    block_expansion=8,
    num_down_blocks=2,
    max_features=32,
    reshape_channel=4,
    reshape_depth=8,
    num_resblocks=2,
)
TINY_W = dict(
    num_kp=4,
    block_expansion=8,
    max_features=32,
    num_down_blocks=2,
    reshape_channel=4,
    reshape_depth=8,
    dense_block_expansion=4,
    dense_max_features=16,
    dense_num_blocks=3,
    compress=2,
)


def spec(size=256, channels=3, dtype=jnp.float32):
    return jax.ShapeDtypeStruct((1, size, size, channels), dtype)


def w_inputs(depth=16, side=64, channels=32, num_kp=21):
    return (
        jax.ShapeDtypeStruct((1, depth, side, side, channels), jnp.float32),
        jax.ShapeDtypeStruct((1, num_kp, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, num_kp, 3), jnp.float32),
    )


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def reference_block(name):
    """[(key, shape)] of one network's block in the reference key file, in its order
    (checked against the block's `nkeys` header)."""
    lines = iter(KEYS.read_text().splitlines())
    header = next(line for line in lines if line.startswith(f"===== {name} nkeys "))
    out = []
    for line in lines:
        if not line.startswith(f"{name} "):  # the next block, or the notes after the last
            break
        key, shape = line[len(name) + 1 :].split(" ", 1)
        out.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    assert len(out) == int(header.split()[3])
    return out


@pytest.fixture(scope="module")
def released_shapes():
    return {
        "F": mapping.variable_shapes(AppearanceFeatureExtractor(), spec()),
        "W": mapping.variable_shapes(WarpingNetwork(), *w_inputs()),
    }


def test_released_parameter_counts(released_shapes):
    assert count(released_shapes["F"]["params"]) == 836_224
    assert count(released_shapes["W"]["params"]) == 45_529_829


# Released state_dict sizes and ends (reference/keys/liveportrait_state_dicts.txt); the
# whole lists are compared where that file is at hand.
RELEASED_KEYS = {
    "F": (107, "first.conv.weight", "resblocks_3d.3dr5.norm2.num_batches_tracked"),
    "W": (
        97,
        "dense_motion_network.hourglass.encoder.down_blocks.0.conv.weight",
        "fourth.bias",
    ),
}


@pytest.mark.parametrize(
    "name, rules", [("F", liveportrait.appearance_rules), ("W", liveportrait.warping_rules)]
)
def test_rules_give_the_released_state_dict(released_shapes, name, rules):
    """Export of zero variables through the rules = the release's keys, shapes and order
    (num_batches_tracked included), and import takes that state_dict back."""
    shapes = released_shapes[name]
    zeros = jax.tree.map(lambda s: np.broadcast_to(np.float32(0), s.shape), shapes)  # no memory
    state = mapping.export_state_dict(zeros, rules())
    keys = list(state)
    assert (len(keys), keys[0], keys[-1]) == RELEASED_KEYS[name]
    if KEYS.exists():
        assert [(k, tuple(v.shape)) for k, v in state.items()] == reference_block(name)
    back = mapping.import_variables(state, rules(), shapes, source=name)
    assert jax.tree.map(np.shape, back) == jax.tree.map(lambda s: s.shape, shapes)


def test_released_output_shapes():
    f_out = jax.eval_shape(
        lambda x: AppearanceFeatureExtractor().init_with_output(jax.random.PRNGKey(0), x)[0],
        spec(),
    )
    assert f_out.shape == (1, 16, 64, 64, 32)
    w_out = jax.eval_shape(
        lambda *a: WarpingNetwork().init_with_output(jax.random.PRNGKey(0), *a)[0], *w_inputs()
    )
    assert w_out["out"].shape == (1, 64, 64, 256)
    assert w_out["occlusion_map"].shape == (1, 64, 64, 1)
    assert w_out["deformation"].shape == (1, 16, 64, 64, 3)


@pytest.fixture(scope="module")
def tiny():
    """Tiny F and W on a 64x64 image (16x16 features, 3-level hourglass), with random
    released-layout state_dicts imported through the rules (no init compile)."""
    rng = np.random.default_rng(0)
    f = AppearanceFeatureExtractor(**TINY_F)
    w = WarpingNetwork(**TINY_W)
    image = jnp.asarray(rng.random((2, 64, 64, 3)), jnp.float32)
    kp = jnp.asarray(rng.uniform(-0.7, 0.7, (2, TINY_W["num_kp"], 3)), jnp.float32)
    out = dict(f=f, w=w, kp=kp)
    f_shapes = mapping.variable_shapes(f, image)
    w_shapes = mapping.variable_shapes(w, *w_inputs(8, 16, 4, TINY_W["num_kp"]))
    for name, shapes, rules in (
        ("f", f_shapes, liveportrait.appearance_rules(**TINY_F)),
        ("w", w_shapes, liveportrait.warping_rules(**TINY_W)),
    ):
        state = random_state_dict(rules, shapes, rng)
        out[f"{name}_state"] = state
        out[f"{name}_vars"] = mapping.import_variables(state, rules, shapes, source=name)
    out["feature"] = jax.jit(f.apply)(out["f_vars"], image)
    out["apply"] = jax.jit(w.apply, static_argnames=("train", "mutable"))
    return out


def test_tiny_shapes_and_training_mode(tiny):
    assert tiny["feature"].shape == (2, 8, 16, 16, 4)
    kp_driving = tiny["kp"] + 0.1
    out = tiny["apply"](tiny["w_vars"], tiny["feature"], kp_driving, tiny["kp"])
    assert out["out"].shape == (2, 16, 16, 32)
    assert out["occlusion_map"].shape == (2, 16, 16, 1)
    assert out["deformation"].shape == (2, 8, 16, 16, 3)
    occlusion = np.asarray(out["occlusion_map"])
    assert np.all((occlusion > 0) & (occlusion < 1))
    # train=True normalises with batch statistics and updates every running statistic.
    _, updated = tiny["apply"](
        tiny["w_vars"],
        tiny["feature"],
        kp_driving,
        tiny["kp"],
        train=True,
        mutable=("batch_stats",),
    )
    before = mapping.flatten_params(tiny["w_vars"]["batch_stats"])
    after = mapping.flatten_params(updated["batch_stats"])
    assert before.keys() == after.keys()
    assert all(not np.allclose(before[k], after[k]) for k in before)


def test_tiny_round_trip_through_the_rules(tiny):
    """Export gives back the imported file key for key (counters kept as read), and a
    state_dict missing a key is refused."""
    for name, rules in (
        ("f", liveportrait.appearance_rules(**TINY_F)),
        ("w", liveportrait.warping_rules(**TINY_W)),
    ):
        state = tiny[f"{name}_state"]
        kept = {k: v for k, v in state.items() if mapping.is_batch_counter(k)}
        back = mapping.overlay(mapping.export_state_dict(tiny[f"{name}_vars"], rules), kept)
        assert list(back) == list(state)
        assert all(np.array_equal(back[k], state[k]) for k in state)
        truncated = dict(list(state.items())[1:])
        shapes = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tiny[f"{name}_vars"]
        )
        with pytest.raises(mapping.ConversionError, match="missing key"):
            mapping.import_variables(truncated, rules, shapes, source="truncated")


def test_identical_keypoints_give_the_identity_deformation(tiny):
    """Every sparse motion is the coordinate grid when source = driving, and the mask is a
    softmax, so the deformation is the grid whatever the weights; a warp by it is the
    release's align_corners=False resampling of the volume."""
    out = tiny["apply"](tiny["w_vars"], tiny["feature"], tiny["kp"], tiny["kp"])
    grid = np.asarray(coordinate_grid(8, 16, 16))
    np.testing.assert_allclose(
        out["deformation"], np.broadcast_to(grid, (2,) + grid.shape), atol=1e-6
    )


def test_coordinate_grid_and_motions():
    grid = np.asarray(coordinate_grid(2, 3, 5))
    assert grid.shape == (2, 3, 5, 3)
    np.testing.assert_allclose(grid[0, 0, :, 0], [-1, -0.5, 0, 0.5, 1])  # x along W
    np.testing.assert_allclose(grid[0, :, 0, 1], [-1, 0, 1])  # y along H
    np.testing.assert_allclose(grid[:, 0, 0, 2], [-1, 1])  # z along D
    kp_driving = jnp.asarray([[[0.1, -0.2, 0.3], [0.5, 0.5, -0.5]]])
    shift = jnp.asarray([0.25, -0.5, 0.125])
    motions = np.asarray(sparse_motions(jnp.asarray(grid), kp_driving, kp_driving + shift))
    assert motions.shape == (1, 3, 2, 3, 5, 3)
    np.testing.assert_allclose(motions[0, 0], grid)  # background: the identity
    np.testing.assert_allclose(
        motions[0, 1:], np.broadcast_to(grid + shift, (2,) + grid.shape), atol=1e-6
    )
    heat = np.asarray(gaussian_heatmaps(jnp.asarray([[[0.5, 0.0, 1.0]]]), jnp.asarray(grid)))
    assert heat.shape == (1, 1, 2, 3, 5)
    assert heat[0, 0, 1, 1, 3] == 1.0  # (x, y, z) = (0.5, 0, 1) is that grid point
    np.testing.assert_allclose(heat[0, 0, 1, 1, 4], np.exp(-0.5 * 0.25 / 0.01))


def test_depth_folding_matches_torch_view():
    """torch: (B, C*D, H, W).view(B, C, D, H, W) and back; here channels-last."""
    nchw = np.random.default_rng(0).standard_normal((2, 3 * 4, 5, 6)).astype(np.float32)
    volume = np.asarray(unfold_depth(jnp.asarray(nchw.transpose(0, 2, 3, 1)), 4))
    np.testing.assert_array_equal(volume, nchw.reshape(2, 3, 4, 5, 6).transpose(0, 2, 3, 4, 1))
    folded = np.asarray(fold_depth(jnp.asarray(volume)))
    np.testing.assert_array_equal(folded, nchw.transpose(0, 2, 3, 1))


def test_bad_configs_and_shapes_are_refused(tiny):
    with pytest.raises(ValueError, match="divisible by 8"):
        Hourglass(block_expansion=4, num_blocks=3).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 2, 12, 12, 3))
        )
    with pytest.raises(ValueError, match="must equal max_features"):
        AppearanceFeatureExtractor(**dict(TINY_F, max_features=64)).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3))
        )
    with pytest.raises(ValueError, match="feature_3d must be"):
        tiny["w"].apply(tiny["w_vars"], tiny["feature"][:, :4], tiny["kp"], tiny["kp"])
    with pytest.raises(ValueError, match="keypoints must be"):
        tiny["w"].apply(tiny["w_vars"], tiny["feature"], tiny["kp"][:, :3], tiny["kp"][:, :3])
    with pytest.raises(TypeError):
        liveportrait.warping_rules(not_a_field=1)
