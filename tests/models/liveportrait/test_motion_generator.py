"""LivePortrait M (motion extractor), G (SPADE decoder), S (stitching / retargeting MLPs) and
the keypoint functions: released parameter counts and state_dict key lists (through the
converter rules, against reference/keys), forward shapes on tiny configs, the keypoint
algebra on hand-computed cases, torch-semantics spectral norm, and float64 end to end."""

import ast
import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import liveportrait as lp_convert
from jaxtalk.convert import mapping
from jaxtalk.models.layers.spade import resize_nearest
from jaxtalk.models.layers.spectral_norm import SpectralNormConv
from jaxtalk.models.liveportrait import keypoints as kpt
from jaxtalk.models.liveportrait.generator import SPADEDecoder, pixel_shuffle
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.retargeting import RELEASED, RetargetingMLP
from tests.models.test_float64 import not_float64

KEYS = os.path.join(
    os.path.dirname(__file__), *[".."] * 4, "shared", "reference", "keys",
    "liveportrait_state_dicts.txt",
)  # fmt: skip
IN_SIZE = {"stitching": 126, "lip": 65, "eye": 66}
TINY_M = dict(num_kp=4, num_bins=66, depths=(1, 2, 1, 1), dims=(8, 16, 16, 24))
TINY_G = dict(
    block_expansion=8,
    max_features=16,
    num_down_blocks=1,
    out_channels=8,
    num_middle_blocks=1,
    spade_hidden=8,
)  # fmt: skip  (16 feature channels)
F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def reference_blocks():
    """{'M': [(key, shape), ...], 'G': ..., 'S_eye': ...} and the header's counts."""
    if not os.path.exists(KEYS):
        pytest.skip("reference key list not available")
    blocks, counts = {}, {}
    for line in open(KEYS):
        if line.startswith("====="):
            _, name, _, nkeys, _, nparams = line.split()
            counts[name] = (int(nkeys), int(nparams))
            continue
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[2].startswith("("):
            blocks.setdefault(parts[0], []).append((parts[1], ast.literal_eval(parts[2])))
    return blocks, counts


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def released_networks():
    """(reference block name, variable shapes, rules) for M, G and the three MLPs."""
    spec = jax.ShapeDtypeStruct
    out = [
        ("M", MotionExtractor(), spec((1, 256, 256, 3), jnp.float32), lp_convert.motion_rules()),
        ("G", SPADEDecoder(), spec((1, 64, 64, 256), jnp.float32), lp_convert.generator_rules()),
    ]
    for role, cfg in RELEASED.items():
        rules = lp_convert.retargeting_rules(cfg["hidden_sizes"])
        out.append(
            (f"S_{role}", RetargetingMLP(**cfg), spec((1, IN_SIZE[role]), jnp.float32), rules)
        )
    return [(name, mapping.variable_shapes(m, x), rules) for name, m, x, rules in out]


@pytest.fixture(scope="module")
def released():
    return released_networks()


def test_released_parameter_counts(released):
    blocks, counts = reference_blocks()
    expected = {"M": 28_118_728, "G": 55_365_388, "S_stitching": 45_249, "S_lip": 37_311,
                "S_eye": 144_703}  # fmt: skip
    for name, shapes, _ in released:
        assert count(shapes["params"]) == expected[name] == counts[name][1], name
    g = dict((n, s) for n, s, _ in released)["G"]
    # u, v of the 18 spectral-norm convs (2 in each of 6 middle blocks, 3 in up_0 and up_1)
    # are state, not parameters.
    assert len(jax.tree_util.tree_leaves(g["batch_stats"])) == 2 * 18


def test_rules_give_the_released_key_lists_and_shapes(released):
    blocks, counts = reference_blocks()
    for name, shapes, rules in released:
        ref = blocks[name]
        assert [r.torch_key for r in rules] == [k for k, _ in ref], name  # same keys, same order
        assert len(rules) == counts[name][0]
        flat = mapping.flatten_params(shapes)
        assert {r.param_path for r in rules} == set(flat), name  # every variable, once
        for rule, (_, shape) in zip(rules, ref):
            assert rule.layout.to_flax(np.zeros(shape)).shape == flat[rule.param_path].shape, rule


def test_released_state_dict_round_trips_through_the_rules():
    """A random state_dict in the released layout -> variables -> the same state_dict."""
    model = SPADEDecoder(**TINY_G)
    rules = lp_convert.generator_rules(**TINY_G)
    shapes = mapping.variable_shapes(model, jnp.zeros((1, 4, 4, 16)))
    rng = np.random.default_rng(0)
    state = {
        r.torch_key: rng.standard_normal(
            r.layout.to_torch(np.zeros(mapping.flatten_params(shapes)[r.param_path].shape)).shape
        ).astype(np.float32)
        for r in rules
    }
    variables = mapping.import_variables(state, rules, shapes, source="tiny G")
    assert set(variables) == {"params", "batch_stats"}
    back = mapping.export_state_dict(variables, rules)
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    # 1 middle block (conv_0, conv_1) + up_0 and up_1 with learned shortcuts (conv_s too).
    assert sum(k.endswith("weight_u") for k in state) == 2 + 3 + 3


def test_tiny_forward_shapes():
    x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    m = MotionExtractor(**TINY_M)
    out = jax.eval_shape(m.apply, mapping.variable_shapes(m, x), x)
    assert {k: v.shape for k, v in out.items()} == {
        "kp": (2, 12), "pitch": (2, 66), "yaw": (2, 66), "roll": (2, 66), "t": (2, 3),
        "exp": (2, 12), "scale": (2, 1),
    }  # fmt: skip
    feature = jax.ShapeDtypeStruct((2, 4, 4, 16), jnp.float32)
    g = SPADEDecoder(upscale=1, **TINY_G)
    assert jax.eval_shape(g.apply, mapping.variable_shapes(g, feature), feature).shape == (
        2, 16, 16, 3,
    )  # fmt: skip
    with pytest.raises(ValueError, match="feature channels"):
        jax.eval_shape(
            g.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((2, 4, 4, 8), jnp.float32)
        )


def random_variables(shapes, seed=0):
    """Variables shaped like `shapes`: kernels ~ N(0, 1/fan_in), biases small, unit u, v."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name in ("u", "v"):
            a = rng.standard_normal(leaf.shape)
            return jnp.asarray(a / np.linalg.norm(a), leaf.dtype)
        fan_in = np.prod(leaf.shape[:-1]) if name == "kernel" else 100
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def test_tiny_decoder_runs_and_its_state_is_used():
    """A real forward pass: an image in [0, 1]; train mode changes u, v and eval mode reads
    them (other stored vectors give another image)."""
    feature = jax.random.normal(jax.random.PRNGKey(2), (1, 4, 4, 16))
    g = SPADEDecoder(**TINY_G)
    variables = random_variables(mapping.variable_shapes(g, feature))  # quicker than g.init
    image = g.apply(variables, feature)
    assert image.shape == (1, 32, 32, 3)
    assert float(image.min()) >= 0 and float(image.max()) <= 1 and float(image.std()) > 0
    _, updated = g.apply(variables, feature, train=True, mutable=["batch_stats"])
    before = jax.tree_util.tree_leaves(variables["batch_stats"])
    after = jax.tree_util.tree_leaves(updated["batch_stats"])
    assert len(before) == len(after) == 2 * 8  # 8 spectral-norm convs in TINY_G
    assert all(not np.allclose(a, b) for a, b in zip(before, after))
    other = g.apply({"params": variables["params"], **updated}, feature)
    assert not np.allclose(other, image)


def test_pixel_shuffle_channel_order():
    x = jnp.arange(2 * 3 * 5 * 12).reshape(2, 3, 5, 12)
    y = np.asarray(pixel_shuffle(x, 2))
    assert y.shape == (2, 6, 10, 3)
    for c, i, j in [(0, 0, 0), (1, 0, 1), (2, 1, 0), (2, 1, 1)]:
        assert np.array_equal(y[:, i::2, j::2, c], np.asarray(x[..., c * 4 + i * 2 + j]))


def test_resize_nearest_picks_floor_of_scaled_index():
    x = jnp.arange(3 * 4).reshape(1, 3, 4, 1)
    y = np.asarray(resize_nearest(x, (6, 2)))[0, :, :, 0]
    rows, cols = [0, 0, 1, 1, 2, 2], [0, 2]  # floor(i * 3 / 6), floor(j * 4 / 2)
    assert np.array_equal(y, np.asarray(x)[0, :, :, 0][np.ix_(rows, cols)])


# ----------------------------------------------------------------------------- keypoints


def one_hot_bins(index, batch=1, peak=80.0):
    return jnp.zeros((batch, 66)).at[:, index].set(peak)


def test_headpose_degrees():
    assert np.allclose(kpt.headpose_degrees(one_hot_bins(40)), 40 * 3 - 97.5, atol=1e-4)
    assert np.allclose(kpt.headpose_degrees(one_hot_bins(0)), -97.5, atol=1e-4)
    assert np.allclose(kpt.headpose_degrees(jnp.zeros((3, 66))), 0.0, atol=1e-5)  # mean 32.5
    two = jnp.full((1, 66), -1e9).at[0, 10].set(0.0).at[0, 12].set(0.0)
    assert np.allclose(kpt.headpose_degrees(two), 11 * 3 - 97.5, atol=1e-4)


def rot(pitch=0.0, yaw=0.0, roll=0.0):
    return np.asarray(kpt.rotation_matrix(jnp.array([pitch]), jnp.array([yaw]), jnp.array([roll])))[
        0
    ]


def test_rotation_matrix_cases():
    assert np.allclose(rot(), np.eye(3), atol=1e-7)
    assert np.allclose(rot(yaw=90), [[0, 0, -1], [0, 1, 0], [1, 0, 0]], atol=1e-6)
    ex, ey = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    assert np.allclose(ex @ rot(yaw=90), [0, 0, -1], atol=1e-6)
    assert np.allclose(ey @ rot(pitch=90), [0, 0, 1], atol=1e-6)
    assert np.allclose(ex @ rot(roll=90), [0, 1, 0], atol=1e-6)
    # Pitch is applied first, then yaw (the reverse order would give (0, 0, 1)).
    assert np.allclose(ey @ rot(pitch=90, yaw=90), [1, 0, 0], atol=1e-6)
    # Bins and degrees give the same matrix; (B, 1) degrees are accepted.
    from_bins = kpt.rotation_matrix(one_hot_bins(40), one_hot_bins(0), one_hot_bins(65))
    from_deg = kpt.rotation_matrix(jnp.array([[22.5]]), jnp.array([[-97.5]]), jnp.array([[97.5]]))
    assert np.allclose(from_bins, from_deg, atol=1e-4)
    r = rot(12.0, -30.0, 47.0)
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-6)


def info(kp, exp, scale, t, pitch=0.0, yaw=0.0, roll=0.0):
    k = len(kp)
    return dict(
        kp=jnp.asarray(kp, jnp.float32).reshape(1, 3 * k),
        exp=jnp.asarray(exp, jnp.float32).reshape(1, 3 * k),
        scale=jnp.array([[scale]]),
        t=jnp.asarray([t], jnp.float32),
        pitch=jnp.array([[pitch]]),
        yaw=jnp.array([[yaw]]),
        roll=jnp.array([[roll]]),
    )


def test_transform_keypoints_hand_case():
    kp = [[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]]
    exp = [[0.1, 0.2, 0.3], [0.0, -0.1, 0.0]]
    x = kpt.transform_keypoints(info(kp, exp, 2.0, [1.0, 2.0, 3.0], yaw=90))
    # yaw 90: (x, y, z) @ R = (z, y, -x); scale 2; t = (1, 2, 0) (t_z dropped).
    expected = 2 * (np.array([[0, 0, -1], [3, 2, 0]]) + np.array(exp)) + np.array([1, 2, 0])
    assert x.shape == (1, 2, 3)
    assert np.allclose(x[0], expected, atol=1e-5)


def test_relative_motion():
    kp = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.5, -0.5, 0.2]]
    source = info(kp, np.full((3, 3), 0.1), 2.0, [0.5, 0.5, 9.0], pitch=10, yaw=-20, roll=5)
    first = info(kp, np.full((3, 3), 0.2), 4.0, [1.0, 0.0, 7.0], pitch=3, yaw=4, roll=-8)
    # The first driving frame drives the source to itself.
    assert np.allclose(
        kpt.relative_motion(source, first, first), kpt.transform_keypoints(source), atol=1e-5
    )
    # Source and first frame frontal, driving yawed by 90: the source turns by 90, its
    # expression gains the driving change, its scale the driving ratio, t the driving shift.
    source = info(kp, np.full((3, 3), 0.1), 2.0, [0.5, 0.5, 9.0])
    first = info(kp, np.full((3, 3), 0.2), 4.0, [1.0, 0.0, 7.0])
    driving = info(kp, np.full((3, 3), 0.5), 6.0, [2.0, 1.0, 0.0], yaw=90)
    r = np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]])
    expected = 2.0 * (6.0 / 4.0) * (np.array(kp) @ r + 0.1 + (0.5 - 0.2)) + [1.5, 1.5, 0]
    assert np.allclose(kpt.relative_motion(source, driving, first)[0], expected, atol=1e-5)


def test_stitch_and_retarget_packing():
    rng = np.random.default_rng(0)
    kp_s = jnp.asarray(rng.standard_normal((2, 21, 3)), jnp.float32)
    kp_d = jnp.asarray(rng.standard_normal((2, 21, 3)), jnp.float32)
    seen = {}

    def fake(x):
        seen["x"] = x
        return jnp.arange(65, dtype=x.dtype)[None].repeat(2, 0) / 100

    out = kpt.stitch(fake, kp_s, kp_d)
    assert np.array_equal(seen["x"], np.concatenate([kp_s.reshape(2, -1), kp_d.reshape(2, -1)], 1))
    delta = np.arange(65) / 100
    expected = np.asarray(kp_d) + delta[:63].reshape(21, 3)
    expected[..., :2] += delta[63:65]
    assert np.allclose(out, expected, atol=1e-6)

    # With a network's params: the released stitching MLP applied to the same packing.
    mlp = RetargetingMLP(**RELEASED["stitching"])
    params = mlp.init(jax.random.PRNGKey(0), seen["x"])
    with_params = kpt.stitch(params, kp_s, kp_d)
    direct = mlp.apply(params, seen["x"])
    assert np.allclose(with_params - kp_d, np.asarray(direct[:, :63]).reshape(2, 21, 3)
                       + np.pad(np.asarray(direct[:, None, 63:]), ((0, 0), (0, 0), (0, 1))),
                       atol=1e-6)  # fmt: skip

    for fn, ratio, size in ((kpt.retarget_eye, 3, 66), (kpt.retarget_lip, 2, 65)):
        r = jnp.asarray(rng.uniform(size=(2, ratio)), jnp.float32)
        mlp = RetargetingMLP(**RELEASED["eye" if ratio == 3 else "lip"])
        params = mlp.init(jax.random.PRNGKey(1), jnp.zeros((1, size)))
        delta = fn(params, kp_s, r)
        packed = jnp.concatenate([kp_s.reshape(2, -1), r], 1)
        assert delta.shape == (2, 21, 3)
        assert np.allclose(delta, mlp.apply(params, packed).reshape(2, 21, 3), atol=1e-6)


# ----------------------------------------------------------------------------- spectral norm


def torch_layout_sigma(kernel, u, v):
    """u^T W v with W the (O, I*kh*kw) view of the OIHW weight."""
    w = np.asarray(kernel).transpose(3, 2, 0, 1).reshape(kernel.shape[-1], -1)
    return float(np.asarray(u) @ w @ np.asarray(v)), w


def conv_nhwc(x, kernel, bias):
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


def test_spectral_norm_eval_uses_stored_vectors_and_train_updates_them():
    conv = SpectralNormConv(5, 3, 1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 4))
    variables = nn.unbox(conv.init(jax.random.PRNGKey(1), x))
    params, stats = variables["params"], variables["batch_stats"]
    kernel = np.asarray(params["kernel"])
    bias = params["bias"]
    assert stats["u"].shape == (5,) and stats["v"].shape == (4 * 3 * 3,)
    assert np.isclose(np.linalg.norm(stats["u"]), 1) and np.isclose(np.linalg.norm(stats["v"]), 1)

    # Eval: sigma from the stored u, v, no power iteration, no state change.
    rng = np.random.default_rng(0)
    u = rng.standard_normal(5)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(36)
    v /= np.linalg.norm(v)
    stored = {"u": jnp.asarray(u, jnp.float32), "v": jnp.asarray(v, jnp.float32)}
    sigma, w = torch_layout_sigma(kernel, u, v)
    y, state = conv.apply({"params": params, "batch_stats": stored}, x, mutable=["batch_stats"])
    assert np.allclose(y, conv_nhwc(x, kernel / sigma, bias), rtol=1e-4, atol=1e-5)
    assert np.array_equal(state["batch_stats"]["v"], stored["v"])

    # Train: one power iteration from the stored u, v; sigma from the new ones.
    y, state = conv.apply(
        {"params": params, "batch_stats": stored}, x, train=True, mutable=["batch_stats"]
    )
    v1 = w.T @ u / np.linalg.norm(w.T @ u)
    u1 = w @ v1 / np.linalg.norm(w @ v1)
    assert np.allclose(state["batch_stats"]["v"], v1, atol=1e-6)
    assert np.allclose(state["batch_stats"]["u"], u1, atol=1e-6)
    assert not np.allclose(v1, v, atol=1e-2)
    assert np.allclose(y, conv_nhwc(x, kernel / float(u1 @ w @ v1), bias), rtol=1e-4, atol=1e-5)

    # Many training steps converge sigma to the largest singular value.
    for _ in range(50):
        _, state = conv.apply({"params": params, **state}, x, train=True, mutable=["batch_stats"])
    sigma, _ = torch_layout_sigma(kernel, state["batch_stats"]["u"], state["batch_stats"]["v"])
    assert np.isclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-4)

    # No gradient flows into u, v (torch computes them under no_grad), only into the kernel.
    def loss(p, s):
        out, _ = conv.apply({"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(out**2)

    g_params, g_stats = jax.grad(loss, argnums=(0, 1))(params, stored)
    assert float(jnp.abs(g_stats["u"]).max()) == 0 and float(jnp.abs(g_stats["v"]).max()) == 0
    assert float(jnp.abs(g_params["kernel"]).max()) > 0


# ----------------------------------------------------------------------------- float64


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_float64_has_no_float32_islands(x64):
    """Traced on abstract values (no compute): every floating value is float64."""
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float64)
    m = MotionExtractor(**TINY_M, **F64)
    mv = mapping.variable_shapes(m, image)
    assert not_float64(m.apply, mv, image) == []

    feature = jax.ShapeDtypeStruct((1, 4, 4, 16), jnp.float64)
    g = SPADEDecoder(**TINY_G, **F64)
    gv = mapping.variable_shapes(g, feature)
    assert {a.dtype for a in jax.tree_util.tree_leaves(gv)} == {jnp.dtype(jnp.float64)}
    assert not_float64(g.apply, gv, feature) == []
    train = functools.partial(g.apply, train=True, mutable=["batch_stats"])
    assert not_float64(train, gv, feature) == []

    motion = jax.eval_shape(m.apply, mv, image)
    assert not_float64(kpt.transform_keypoints, motion) == []
    assert not_float64(kpt.relative_motion, motion, motion, motion) == []
    mlp = RetargetingMLP(**RELEASED["stitching"], **F64)
    kp = jax.ShapeDtypeStruct((1, 21, 3), jnp.float64)
    params = mapping.variable_shapes(mlp, jax.ShapeDtypeStruct((1, 126), jnp.float64))
    assert not_float64(kpt.stitch, params, kp, kp) == []
