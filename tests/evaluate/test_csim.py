"""ArcFace IResNet: structure, importer, a numpy forward, and CSIM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import arcface, mapping, torch_pickle
from jaxtalk.evaluate import csim
from jaxtalk.models.metric_nets import iresnet
from tests.evaluate import numpy_reference as ref
from tests.evaluate.torch_layout import param_count, random_state_dict

TINY = (1, 1, 1, 1)


def tiny_checkpoint(tmp_path, rng):
    shapes = mapping.variable_shapes(iresnet.IResNet(TINY), jnp.zeros((1, 112, 112, 3)))
    sd = random_state_dict(arcface.rules(TINY), shapes, rng)
    sd = {f"module.{k}": v for k, v in sd.items()}  # DataParallel prefix, stripped on import
    torch_pickle.save(sd, tmp_path / "backbone.pth")
    return {k[len("module.") :]: v for k, v in sd.items()}


def test_iresnet100_structure_and_key_list():
    shapes = mapping.variable_shapes(iresnet.IResNet(), jnp.zeros((1, 112, 112, 3)))
    assert param_count(shapes["params"]) == 65_156_160  # as torch's iresnet100
    keys = {r.torch_key for r in arcface.rules("iresnet100")}
    # 49 blocks: 8 tensors each (3 BN x 4 + 2 convs + prelu = 15), 4 downsamples (1 + 4).
    assert len(keys) == 49 * 15 + 4 * 5 + 1 + 4 + 1 + 4 + 2 + 4
    for key in (
        "layer3.29.bn3.running_var",
        "layer4.0.downsample.1.weight",
        "fc.weight",
        "features.running_mean",
        "prelu.weight",
        "layer2.12.prelu.weight",
    ):
        assert key in keys, key


def numpy_iresnet(sd, x, depths):
    def bn(h, p):
        shape = (1, -1, 1, 1) if h.ndim == 4 else (1, -1)
        return (h - sd[p + ".running_mean"].reshape(shape)) / np.sqrt(
            sd[p + ".running_var"].reshape(shape) + 1e-5
        ) * sd[p + ".weight"].reshape(shape) + sd[p + ".bias"].reshape(shape)

    def prelu(h, p):
        a = sd[p + ".weight"].reshape(1, -1, 1, 1)
        return np.where(h >= 0, h, a * h)

    h = prelu(bn(ref.conv2d(x, sd["conv1.weight"], padding=1), "bn1"), "prelu")
    for s, depth in enumerate(depths, start=1):
        for i in range(depth):
            p = f"layer{s}.{i}"
            y = bn(h, p + ".bn1")
            y = prelu(
                bn(ref.conv2d(y, sd[p + ".conv1.weight"], padding=1), p + ".bn2"), p + ".prelu"
            )
            y = bn(
                ref.conv2d(y, sd[p + ".conv2.weight"], stride=2 if i == 0 else 1, padding=1),
                p + ".bn3",
            )
            if i == 0:
                h = bn(ref.conv2d(h, sd[p + ".downsample.0.weight"], stride=2), p + ".downsample.1")
            h = y + h
    h = bn(h, "bn2").reshape(len(x), -1)
    return bn(h @ sd["fc.weight"].T + sd["fc.bias"], "features")


def test_tiny_iresnet_matches_numpy(tmp_path):
    rng = np.random.default_rng(0)
    sd = tiny_checkpoint(tmp_path, rng)
    variables = arcface.import_variables(tmp_path / "backbone.pth", TINY)
    x = rng.uniform(-1, 1, (1, 3, 112, 112)).astype(np.float32)
    want = numpy_iresnet(sd, x.astype(np.float64), TINY)
    got = jax.jit(iresnet.IResNet(TINY).apply)(variables, ref.nhwc(x))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.abs(want).max())


def test_import_errors_and_export(tmp_path):
    rng = np.random.default_rng(1)
    sd = tiny_checkpoint(tmp_path, rng)
    variables = arcface.import_variables(tmp_path / "backbone.pth", TINY)
    assert set(variables) == {"params", "batch_stats"}
    back = mapping.export_state_dict(variables, arcface.rules(TINY))
    assert set(back) == set(sd)
    for k, v in back.items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v, sd[k], err_msg=k)
    del sd["layer2.0.prelu.weight"]
    sd["layer2.0.prelu.alpha"] = np.zeros(128, np.float32)
    torch_pickle.save(sd, tmp_path / "bad.pth")
    with pytest.raises(mapping.ConversionError, match="layer2.0.prelu.weight.*\n.*prelu.alpha"):
        arcface.import_variables(tmp_path / "bad.pth", TINY)
    with pytest.raises(ValueError, match="unknown arch"):
        arcface.import_checkpoint(tmp_path / "bad.pth", arch="iresnet7")


def test_csim_is_cosine_of_unit_embeddings(tmp_path):
    rng = np.random.default_rng(2)
    tiny_checkpoint(tmp_path, rng)
    variables = arcface.import_variables(tmp_path / "backbone.pth", TINY)
    faces = rng.uniform(size=(3, 112, 112, 3)).astype(np.float32)
    other = rng.uniform(size=(3, 112, 112, 3)).astype(np.float32)
    embed = csim.embed(variables, jnp.concatenate([faces, other]), arch=TINY)
    np.testing.assert_allclose(np.linalg.norm(embed, axis=-1), 1.0, rtol=1e-5)
    got = csim.csim(variables, faces, other, arch=TINY)
    np.testing.assert_allclose(got, np.sum(embed[:3] * embed[3:], -1), rtol=1e-5)
    np.testing.assert_allclose(csim.csim(variables, faces, faces, arch=TINY), 1.0, rtol=1e-5)
    # Other sizes are resized to 112x112 first.
    big = np.repeat(np.repeat(faces, 2, 1), 2, 2)
    assert csim.csim(variables, big, faces, arch=TINY).shape == (3,)
