"""LPIPS (alex / vgg): the net against a numpy computation, and the importer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import lpips as convert_lpips
from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.evaluate import lpips
from jaxtalk.models.metric_nets import alexnet
from tests.convert.test_torch_legacy import write_legacy
from tests.convert.test_torchvision_vgg import torchvision_state_dict
from tests.evaluate import numpy_reference as ref

HEAD_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}


def alexnet_state_dict(rng):
    sd, in_ch = {}, 3
    for width, kernel, _, _, index in alexnet.CONVS.values():
        std = (2.0 / (in_ch * kernel * kernel)) ** 0.5
        sd[f"features.{index}.weight"] = (
            rng.standard_normal((width, in_ch, kernel, kernel)) * std
        ).astype(np.float32)
        sd[f"features.{index}.bias"] = (rng.standard_normal(width) * 0.1).astype(np.float32)
        in_ch = width
    sd["classifier.1.weight"] = np.zeros((2, 2), np.float32)  # skipped by the importer
    return sd


def write_lpips_files(tmp_path, net, rng):
    """The lpips package's head file (legacy format) and a torchvision backbone file."""
    heads = {
        f"lin{i}.model.1.weight": rng.uniform(0, 0.1, (1, c, 1, 1)).astype(np.float32)
        for i, c in enumerate(HEAD_CHANNELS[net])
    }
    write_legacy(
        tmp_path / f"{net}.pth", {k: ("FloatStorage", v) for k, v in heads.items()}, nest_under=None
    )
    backbone = alexnet_state_dict(rng) if net == "alex" else torchvision_state_dict("vgg16", rng)
    torch_pickle.save(backbone, tmp_path / f"{net}_backbone.pth")
    return heads, backbone


def numpy_lpips_alex(heads, backbone, a, b):
    """LPIPS-alex from its definition, NCHW numpy, images in [0, 1]."""
    shift = np.array([-0.030, -0.088, -0.188]).reshape(1, 3, 1, 1)
    scale = np.array([0.458, 0.448, 0.450]).reshape(1, 3, 1, 1)

    def features(x):
        h = (2 * x - 1 - shift) / scale
        out = []
        for i, (name, (_, _, stride, pad, index)) in enumerate(alexnet.CONVS.items()):
            if i in (1, 2):
                h = ref.max_pool2d(h, 3, 2)
            h = ref.relu(
                ref.conv2d(
                    h,
                    backbone[f"features.{index}.weight"],
                    backbone[f"features.{index}.bias"],
                    stride,
                    pad,
                )
            )
            out.append(h)
        return out

    total = 0.0
    for i, (f0, f1) in enumerate(zip(features(a), features(b))):
        n0 = f0 / (np.sqrt((f0**2).sum(1, keepdims=True)) + 1e-10)
        n1 = f1 / (np.sqrt((f1**2).sum(1, keepdims=True)) + 1e-10)
        weighted = ref.conv2d((n0 - n1) ** 2, heads[f"lin{i}.model.1.weight"])
        total = total + weighted.mean(axis=(1, 2, 3))
    return total


def test_lpips_alex_matches_numpy_definition(tmp_path):
    rng = np.random.default_rng(0)
    heads, backbone = write_lpips_files(tmp_path, "alex", rng)
    variables = convert_lpips.import_checkpoint(
        tmp_path / "alex.pth", tmp_path / "alex_backbone.pth"
    )
    a = rng.uniform(size=(2, 3, 67, 63))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    want = numpy_lpips_alex(heads, backbone, a, b)
    got = lpips.lpips(variables, ref.nhwc(a).astype(np.float32), ref.nhwc(b).astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(lpips.lpips(variables, ref.nhwc(a), ref.nhwc(a)), 0, atol=1e-7)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_importer_is_key_complete_and_exports(tmp_path, net):
    rng = np.random.default_rng(1)
    heads, backbone = write_lpips_files(tmp_path, net, rng)
    variables = convert_lpips.import_checkpoint(
        tmp_path / f"{net}.pth", tmp_path / f"{net}_backbone.pth", net=net
    )
    flat = mapping.flatten_params(variables["params"])
    assert len([k for k in flat if k.startswith("lin")]) == 5
    np.testing.assert_array_equal(
        flat["lin2/kernel"][0, 0, :, 0], heads["lin2.model.1.weight"][0, :, 0, 0]
    )
    convert_lpips.export_checkpoint(variables, tmp_path / "h.pth", tmp_path / "b.pth", net=net)
    assert torch_pickle.load_state_dict(tmp_path / "h.pth").keys() == heads.keys()
    back = torch_pickle.load_state_dict(tmp_path / "b.pth")
    for k, v in back.items():
        np.testing.assert_array_equal(v, backbone[k])

    with pytest.raises(ValueError, match="backbone"):
        convert_lpips.import_checkpoint(tmp_path / f"{net}.pth", net=net)
    del backbone[next(iter(backbone))]
    torch_pickle.save(backbone, tmp_path / "short.pth")
    with pytest.raises(mapping.ConversionError, match="missing key 'features.0.weight'"):
        convert_lpips.import_checkpoint(tmp_path / f"{net}.pth", tmp_path / "short.pth", net=net)


def test_alexnet_feature_parameter_count():
    shapes = jax.eval_shape(
        alexnet.AlexNetFeatures().init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3))
    )
    assert sum(x.size for x in jax.tree.leaves(shapes)) == 2_469_696


def test_lpips_runs_sharded_over_the_batch(tmp_path):
    rng = np.random.default_rng(2)
    write_lpips_files(tmp_path, "alex", rng)
    variables = convert_lpips.import_checkpoint(
        tmp_path / "alex.pth", tmp_path / "alex_backbone.pth"
    )
    mesh = jax.make_mesh((8,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    a, b = rng.uniform(size=(2, 8, 64, 64, 3)).astype(np.float32)
    out = lpips.lpips(variables, jax.device_put(a, sharding), jax.device_put(b, sharding))
    assert out.shape == (8,)
    np.testing.assert_allclose(out, lpips.lpips(variables, a, b), rtol=1e-5)
