"""insightface arcface_torch IResNet checkpoints (e.g. ms1mv3_arcface_r100_fp16/backbone.pth)
-> `jaxtalk.models.metric_nets.iresnet.IResNet` variables.

Keys: conv1, bn1, prelu, layer{s}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,
downsample.1}, bn2, fc, features (BatchNorm1d). fp16 checkpoints are read as float32.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxtalk.convert import torch_pickle
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models.metric_nets import iresnet
from jaxtalk.convert import torch_rules as tr


def rules(arch: str | tuple[int, ...] = "iresnet100") -> list:
    """`arch`: a name in iresnet.DEPTHS or the blocks per stage."""
    depths = iresnet.DEPTHS[arch] if isinstance(arch, str) else tuple(arch)
    out = tr.conv("conv1", "conv1", bias=False) + tr.batch_norm("bn1", "bn1") + \
        tr.prelu("prelu", "prelu")
    for stage, depth in enumerate(depths, start=1):
        for i in range(depth):
            t, p = f"layer{stage}.{i}", f"layer{stage}_{i}"
            out += (tr.batch_norm(f"{t}.bn1", f"{p}/bn1") + tr.conv(f"{t}.conv1", f"{p}/conv1", False)
                    + tr.batch_norm(f"{t}.bn2", f"{p}/bn2") + tr.prelu(f"{t}.prelu", f"{p}/prelu")
                    + tr.conv(f"{t}.conv2", f"{p}/conv2", False) + tr.batch_norm(f"{t}.bn3", f"{p}/bn3"))
            if i == 0:
                out += (tr.conv(f"{t}.downsample.0", f"{p}/downsample_conv", False)
                        + tr.batch_norm(f"{t}.downsample.1", f"{p}/downsample_bn"))
    return out + tr.batch_norm("bn2", "bn2") + tr.linear("fc", "fc") + \
        tr.batch_norm("features", "features")


def import_checkpoint(path, arch: str = "iresnet100") -> dict:
    if arch not in iresnet.DEPTHS:
        raise ValueError(f"unknown arch {arch!r}; known: {sorted(iresnet.DEPTHS)}")
    return import_variables(path, iresnet.DEPTHS[arch]) | {"model_config": {"arch": arch}}


def import_variables(path, depths: tuple[int, ...]) -> dict:
    """{"params", "batch_stats"} of an IResNet with `depths` blocks per stage."""
    state = read_state_dict(path, strip_prefix="module.")
    shapes = tr.variable_shapes(iresnet.IResNet(depths), jnp.zeros((1, 112, 112, 3)))
    return tr.import_variables(state, rules(depths), shapes, source=str(path))


def export_checkpoint(variables: dict, path, arch: str = "iresnet100") -> None:
    torch_pickle.save(tr.export_state_dict(variables, rules(arch)), path)
