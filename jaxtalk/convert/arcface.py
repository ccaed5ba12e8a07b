"""insightface arcface_torch IResNet checkpoints (e.g. ms1mv3_arcface_r100_fp16/backbone.pth)
-> `jaxtalk.models.metric_nets.iresnet.IResNet` variables.

Keys: conv1, bn1, prelu, layer{s}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,
downsample.1}, bn2, fc, features (BatchNorm1d). fp16 checkpoints are read as float32.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert.releases import Release
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models.metric_nets import iresnet

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "arcface_r100",
        {"arch": "iresnet100"},
        (),
        "insightface arcface_torch model zoo, e.g. ms1mv3_arcface_r100_fp16/backbone.pth",
    ),
]


def rules(arch: str | tuple[int, ...] = "iresnet100") -> list:
    """`arch`: a name in iresnet.DEPTHS or the blocks per stage."""
    depths = iresnet.DEPTHS[arch] if isinstance(arch, str) else tuple(arch)
    out = (
        mapping.conv("conv1", "params/conv1", bias=False)
        + mapping.batch_norm("bn1", "bn1")
        + mapping.prelu("prelu", "params/prelu")
    )
    for stage, depth in enumerate(depths, start=1):
        for i in range(depth):
            t, p = f"layer{stage}.{i}", f"layer{stage}_{i}"
            out += (
                mapping.batch_norm(f"{t}.bn1", f"{p}/bn1")
                + mapping.conv(f"{t}.conv1", f"params/{p}/conv1", False)
                + mapping.batch_norm(f"{t}.bn2", f"{p}/bn2")
                + mapping.prelu(f"{t}.prelu", f"params/{p}/prelu")
                + mapping.conv(f"{t}.conv2", f"params/{p}/conv2", False)
                + mapping.batch_norm(f"{t}.bn3", f"{p}/bn3")
            )
            if i == 0:
                out += mapping.conv(
                    f"{t}.downsample.0", f"params/{p}/downsample_conv", False
                ) + mapping.batch_norm(f"{t}.downsample.1", f"{p}/downsample_bn")
    return (
        out
        + mapping.batch_norm("bn2", "bn2")
        + mapping.linear("fc", "params/fc")
        + mapping.batch_norm("features", "features")
    )


def import_checkpoint(path, arch: str = "iresnet100") -> dict:
    if arch not in iresnet.DEPTHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(iresnet.DEPTHS)}")
    return import_variables(path, iresnet.DEPTHS[arch]) | {"model_config": {"arch": arch}}


def import_variables(path, depths: tuple[int, ...]) -> dict:
    """{"params", "batch_stats"} of an IResNet with `depths` blocks per stage."""
    state = read_state_dict(path, strip_prefix="module.")
    shapes = mapping.variable_shapes(iresnet.IResNet(depths), jnp.zeros((1, 112, 112, 3)))
    return mapping.import_variables(state, rules(depths), shapes, source=str(path))


def export_checkpoint(variables: dict, path, arch: str = "iresnet100") -> None:
    torch_pickle.save(mapping.export_state_dict(variables, rules(arch)), path)
