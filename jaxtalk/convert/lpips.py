"""lpips package weights -> `jaxtalk.models.metric_nets.lpips.LPIPS` params.

LPIPS needs two public files: the linear heads shipped inside the lpips package
(`lpips/weights/v0.1/alex.pth` or `vgg.pth`: keys `lin{i}.model.1.weight`, (1, C, 1, 1),
legacy torch.save format) and the torchvision ImageNet backbone it was trained on
(`alexnet-owt-7be5be79.pth` or `vgg16-397923af.pth`: `features.N.*`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle, torchvision_vgg
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models.metric_nets import alexnet
from jaxtalk.models.metric_nets import lpips as lpips_metric

# The public files this converter imports (`jaxtalk import --release=NAME`).
# The linear heads as the lpips package ships them (richzhang/PerceptualSimilarity, v0.1).
LPIPS_WEIGHTS = (
    "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1"
)
ALEX_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"
VGG_HEADS_SHA256 = "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"

RELEASES = [
    Release(
        "lpips_alex",
        {"net": "alex"},
        ("backbone",),
        "lpips package file lpips/weights/v0.1/alex.pth (pip install lpips) + torchvision "
        "alexnet-owt-7be5be79.pth as --backbone",
        files=(
            ReleaseFile("checkpoint", f"{LPIPS_WEIGHTS}/alex.pth", 6_009, ALEX_HEADS_SHA256),
            ReleaseFile(
                "backbone",
                "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                244_408_911,
                "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            ),
        ),
    ),
    Release(
        "lpips_vgg",
        {"net": "vgg"},
        ("backbone",),
        "lpips package file lpips/weights/v0.1/vgg.pth + torchvision vgg16-397923af.pth "
        "as --backbone",
        files=(
            ReleaseFile("checkpoint", f"{LPIPS_WEIGHTS}/vgg.pth", 7_289, VGG_HEADS_SHA256),
            dataclasses.replace(torchvision_vgg.VGG16_FILE, option="backbone"),
        ),
    ),
]

NETS = tuple(lpips_metric.BACKBONE_LAYERS)


def head_rules(net: str) -> list[mapping.Rule]:
    return [
        mapping.Rule(f"lin{i}.model.1.weight", f"lin{i}/kernel", mapping.CONV2D)
        for i in range(len(lpips_metric.BACKBONE_LAYERS[net]))
    ]


def backbone_rules(net: str) -> list[mapping.Rule]:
    if net == "alex":
        return [
            rule
            for name, (*_, index) in alexnet.CONVS.items()
            for rule in (
                mapping.Rule(f"features.{index}.weight", f"backbone/{name}/kernel", mapping.CONV2D),
                mapping.Rule(f"features.{index}.bias", f"backbone/{name}/bias"),
            )
        ]
    return torchvision_vgg.rules(
        "vgg16", lpips_metric.BACKBONE_LAYERS["vgg"], param_prefix="backbone/"
    )


def _backbone_unused(net: str):
    if net == "alex":  # only the classifier: every AlexNet conv is used
        return lambda key: key.startswith("classifier.")
    return torchvision_vgg.unused_keys("vgg16", lpips_metric.BACKBONE_LAYERS["vgg"])


def param_shapes(net: str):
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    return mapping.variable_shapes(lpips_metric.LPIPS(net), x, x)["params"]


def import_checkpoint(path, backbone=None, net: str = "alex") -> dict:
    """`path`: the lpips head file; `backbone`: the torchvision backbone state_dict file."""
    if net not in NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; known: {NETS}")
    if backbone is None:
        raise ValueError(
            f"LPIPS-{net} also needs the torchvision backbone weights "
            f"({'alexnet-owt-7be5be79.pth' if net == 'alex' else 'vgg16-397923af.pth'})"
        )
    heads = read_state_dict(path)
    trunk = read_state_dict(backbone)
    overlap = set(heads) & set(trunk)
    if overlap:
        raise ValueError(
            f"{path} and {backbone} share keys {sorted(overlap)[:3]}: "
            "pass the lpips head file and the torchvision backbone file"
        )
    ignore_backbone = _backbone_unused(net)
    params = mapping.to_params(
        {**heads, **trunk},
        head_rules(net) + backbone_rules(net),
        param_shapes(net),
        source=f"{path} + {backbone}",
        ignore=lambda key: key in trunk and ignore_backbone(key),
    )
    return {"params": params, "model_config": {"net": net, "version": "0.1"}}


def export_checkpoint(variables: dict, path, backbone_path=None, net: str = "alex") -> None:
    """Writes the heads (lpips layout) to `path` and, if given, the backbone to `backbone_path`."""
    torch_pickle.save(
        mapping.to_state_dict(
            {k: v for k, v in variables["params"].items() if k != "backbone"}, head_rules(net)
        ),
        path,
    )
    if backbone_path is not None:
        rules = [
            mapping.Rule(r.torch_key, r.param_path[len("backbone/") :], r.layout)
            for r in backbone_rules(net)
        ]
        torch_pickle.save(
            mapping.to_state_dict(variables["params"]["backbone"], rules), backbone_path
        )
