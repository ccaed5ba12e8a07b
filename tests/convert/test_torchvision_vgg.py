"""torchvision VGG feature stacks and their converter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import mapping, torch_pickle, torchvision_vgg
from jaxtalk.models import vgg
from jaxtalk.train.grouped_init import grouped_initializers
from tests.evaluate import numpy_reference as ref


def torchvision_state_dict(config, rng, scale=0.05):
    """A random state_dict with every key of torchvision's vgg16/vgg19 (tiny classifier)."""
    sd, in_ch = {}, 3
    widths = vgg.conv_channels(config)
    for name, index in vgg.torchvision_index(config).items():
        if name.startswith("conv"):
            out_ch = widths[name]
            sd[f"features.{index}.weight"] = (
                rng.standard_normal((out_ch, in_ch, 3, 3)) * scale
            ).astype(np.float32)
            sd[f"features.{index}.bias"] = (rng.standard_normal(out_ch) * scale).astype(np.float32)
            in_ch = out_ch
    for i in (0, 3, 6):  # shapes are irrelevant: the classifier is skipped
        sd[f"classifier.{i}.weight"] = np.zeros((2, 2), np.float32)
        sd[f"classifier.{i}.bias"] = np.zeros(2, np.float32)
    return sd


@pytest.mark.parametrize("config,count", [("vgg16", 14_714_688), ("vgg19", 20_024_384)])
def test_full_feature_stack_parameter_count(config, count):
    last = vgg.layer_names(config)[-2]  # the last relu: every conv is built
    shapes = jax.eval_shape(
        vgg.VGGFeatures(config, (last,)).init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))
    )
    assert sum(x.size for x in jax.tree.leaves(shapes)) == count


def test_torchvision_indices():
    assert vgg.torchvision_index("vgg16")["relu5_3"] == 29
    assert vgg.torchvision_index("vgg19")["relu5_1"] == 29
    assert vgg.torchvision_index("vgg19")["relu4_1"] == 20
    assert vgg.torchvision_index("vgg16")["pool5"] == 30


def test_outputs_and_truncation():
    model = vgg.VGGFeatures("vgg19", ("relu1_1", "relu3_1"))
    x = jnp.zeros((2, 16, 16, 3))
    variables = jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), x)
    assert set(variables["params"]) == {"conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"}
    out = jax.jit(model.apply)(variables, x)
    assert out["relu1_1"].shape == (2, 16, 16, 64) and out["relu3_1"].shape == (2, 4, 4, 256)
    with pytest.raises(ValueError, match="relu9_9"):
        vgg.VGGFeatures("vgg16", ("relu9_9",)).init(jax.random.PRNGKey(0), x)


def test_import_matches_numpy_torch_layout_forward(tmp_path):
    rng = np.random.default_rng(0)
    sd = torchvision_state_dict("vgg16", rng)
    torch_pickle.save(sd, tmp_path / "vgg16.pth")
    layers = ("relu1_2", "relu2_1", "pool2")
    variables = torchvision_vgg.import_checkpoint(tmp_path / "vgg16.pth", "vgg16", layers)
    assert variables["model_config"]["output_layers"] == list(layers)

    x = rng.uniform(size=(1, 3, 10, 10)).astype(np.float32)
    h = ref.relu(ref.conv2d(x, sd["features.0.weight"], sd["features.0.bias"], padding=1))
    relu1_2 = ref.relu(ref.conv2d(h, sd["features.2.weight"], sd["features.2.bias"], padding=1))
    h = ref.max_pool2d(relu1_2, 2, 2)
    relu2_1 = ref.relu(ref.conv2d(h, sd["features.5.weight"], sd["features.5.bias"], padding=1))
    h = ref.relu(ref.conv2d(relu2_1, sd["features.7.weight"], sd["features.7.bias"], padding=1))
    pool2 = ref.max_pool2d(h, 2, 2)

    out = jax.jit(vgg.VGGFeatures("vgg16", layers).apply)(
        {"params": variables["params"]}, ref.nhwc(x)
    )
    for name, want in [("relu1_2", relu1_2), ("relu2_1", relu2_1), ("pool2", pool2)]:
        np.testing.assert_allclose(out[name], ref.nhwc(want), rtol=1e-4, atol=1e-5, err_msg=name)


def test_import_is_key_complete_and_exports_back(tmp_path):
    rng = np.random.default_rng(1)
    sd = torchvision_state_dict("vgg19", rng)
    torch_pickle.save(sd, tmp_path / "vgg19.pth")
    variables = torchvision_vgg.import_checkpoint(tmp_path / "vgg19.pth", "vgg19")
    assert len(variables["params"]) == 13  # conv1_1 .. conv5_1
    torchvision_vgg.export_checkpoint(variables, tmp_path / "out.pth", "vgg19")
    back = torch_pickle.load_state_dict(tmp_path / "out.pth")
    assert set(back) == {
        f"features.{i}.{p}"
        for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28)
        for p in ("weight", "bias")
    }
    for k, v in back.items():
        np.testing.assert_array_equal(v, sd[k])

    del sd["features.2.bias"]
    sd["features.2.extra"] = np.zeros(1, np.float32)
    torch_pickle.save(sd, tmp_path / "broken.pth")
    with pytest.raises(mapping.ConversionError, match="features.2.bias.*\n.*features.2.extra"):
        torchvision_vgg.import_checkpoint(tmp_path / "broken.pth", "vgg19")
