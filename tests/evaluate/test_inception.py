"""The FID InceptionV3: structure, importer, pooling quirks against numpy, features API."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import inception as convert_inception
from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.evaluate import fid
from jaxtalk.models.layers import torch_nn
from jaxtalk.models.metric_nets import inception
from tests.evaluate import numpy_reference as ref
from tests.evaluate.torch_layout import param_count, random_state_dict

# A few keys and shapes of pytorch-fid's pt_inception-2015-12-05 state_dict.
KNOWN = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_3.conv.weight": (192, 192, 7, 1),
    "Mixed_7c.branch3x3dbl_3b.bn.weight": (384,),
    "fc.weight": (1008, 2048),
}


@pytest.fixture(scope="module")
def shapes():
    return mapping.variable_shapes(inception.FIDInceptionV3(), jnp.zeros((1, 299, 299, 3)))


def test_structure_and_key_list(shapes):
    assert param_count(shapes["params"]) == 23_850_960
    rules = convert_inception.rules()
    sd_shapes = {
        r.torch_key: r.layout.to_torch(
            np.zeros(mapping.flatten_params(shapes)[r.param_path].shape)
        ).shape
        for r in rules
    }
    for key, shape in KNOWN.items():
        assert sd_shapes[key] == shape, key
    # 94 BasicConv2d (conv + 4 BN tensors) + fc weight and bias; +94 num_batches_tracked.
    assert len(rules) == 94 * 5 + 2


def test_importer_is_key_complete(tmp_path, shapes):
    rng = np.random.default_rng(0)
    sd = random_state_dict(convert_inception.rules(), shapes, rng)
    assert len(sd) == 566
    torch_pickle.save(sd, tmp_path / "pt_inception.pth")
    variables = convert_inception.import_checkpoint(tmp_path / "pt_inception.pth")
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)
    np.testing.assert_array_equal(
        variables["batch_stats"]["Mixed_6b"]["branch7x7_2"]["bn"]["var"],
        sd["Mixed_6b.branch7x7_2.bn.running_var"],
    )
    np.testing.assert_array_equal(
        variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
        sd["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0),
    )
    del sd["Mixed_7c.branch_pool.bn.running_mean"]
    torch_pickle.save(sd, tmp_path / "bad.pth")
    with pytest.raises(mapping.ConversionError, match="Mixed_7c.branch_pool.bn.running_mean"):
        convert_inception.import_checkpoint(tmp_path / "bad.pth")


def test_pools_match_torch_definitions():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    # avg_pool2d(3, 1, padding=1, count_include_pad=False)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    counts = np.pad(np.ones((7, 6)), 1)
    want = np.zeros_like(x)
    for i in range(7):
        for j in range(6):
            want[:, :, i, j] = (
                padded[:, :, i : i + 3, j : j + 3].sum((2, 3)) / counts[i : i + 3, j : j + 3].sum()
            )
    np.testing.assert_allclose(
        inception.avg_pool_3x3_excluding_padding(ref.nhwc(x)), ref.nhwc(want), rtol=1e-6, atol=1e-6
    )
    for args in [(3, 2, 0, False), (3, 1, 1, False), (3, 2, 0, True), (2, 2, 1, True)]:
        np.testing.assert_array_equal(
            torch_nn.max_pool(ref.nhwc(x), *args),
            ref.nhwc(ref.max_pool2d(x, *args)),
            err_msg=str(args),
        )


def test_basic_conv_matches_numpy():
    rng = np.random.default_rng(2)
    module = inception.BasicConv2d(5, (1, 3), padding=(0, 1), stride=2)
    x = rng.standard_normal((1, 9, 8, 3)).astype(np.float32)
    shapes = mapping.variable_shapes(module, x)
    rules = mapping.mirrored(shapes)
    sd = random_state_dict(rules, shapes, rng, include_batch_counters=False)
    variables = mapping.to_params(sd, rules, shapes)
    h = ref.conv2d(ref.nchw(x), sd["conv.weight"], stride=2, padding=(0, 1))
    h = (h - sd["bn.running_mean"].reshape(1, -1, 1, 1)) / np.sqrt(
        sd["bn.running_var"].reshape(1, -1, 1, 1) + 1e-3
    ) * sd["bn.weight"].reshape(1, -1, 1, 1) + sd["bn.bias"].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(
        module.apply(variables, x), ref.nhwc(ref.relu(h)), rtol=1e-5, atol=1e-5
    )


def test_features_resize_like_torch_bilinear(monkeypatch):
    # jax.image.resize without antialiasing = F.interpolate(bilinear, align_corners=False).
    x = np.arange(2 * 4 * 6 * 1, dtype=np.float32).reshape(2, 4, 6, 1)
    out = np.asarray(jax.image.resize(x, (2, 3, 4, 1), "bilinear", antialias=False))

    # torch: src = (dst + 0.5) * in/out - 0.5, clamped at 0
    def src(n_in, n_out):
        s = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        lo = np.floor(s).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), s - lo

    (y0, y1, wy), (x0, x1, wx) = src(4, 3), src(6, 4)
    img = x[..., 0]
    want = (1 - wy)[:, None] * ((1 - wx) * img[:, y0][:, :, x0] + wx * img[:, y0][:, :, x1]) + wy[
        :, None
    ] * ((1 - wx) * img[:, y1][:, :, x0] + wx * img[:, y1][:, :, x1])
    np.testing.assert_allclose(out[..., 0], want, rtol=1e-6)
    monkeypatch.setattr(inception, "INPUT_SIZE", 75)  # small input keeps the test fast
    fid._inception_features.clear_cache()
    shapes_small = mapping.variable_shapes(inception.FIDInceptionV3(), jnp.zeros((1, 75, 75, 3)))
    variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), shapes_small)
    feats = fid.inception_features(variables, np.random.default_rng(3).uniform(size=(2, 64, 64, 3)))
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    fid._inception_features.clear_cache()
