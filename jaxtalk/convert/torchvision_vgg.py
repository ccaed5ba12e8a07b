"""torchvision VGG16 / VGG19 (`features.N.weight/bias`) <-> `jaxtalk.models.vgg.VGGFeatures`.

Public weights: torchvision's `vgg16-397923af.pth` and `vgg19-dcbb9e9d.pth` (legacy
torch.save format, read by `torch_legacy`). The classifier head and any conv deeper than
the module's last output layer are not used by the feature stack and are skipped.
"""

from __future__ import annotations

import re
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models import vgg

# The public files this converter imports (`jaxtalk import --release=NAME`).
# torchvision's file names carry the first digits of the file's SHA-256.
VGG16_FILE = ReleaseFile(
    "checkpoint",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    553_433_881,
    "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
)

RELEASES = [
    Release(
        "vgg16", {"config": "vgg16"}, (), "torchvision vgg16-397923af.pth", files=(VGG16_FILE,)
    ),
    Release(
        "vgg19",
        {"config": "vgg19"},
        (),
        "torchvision vgg19-dcbb9e9d.pth",
        files=(
            ReleaseFile(
                "checkpoint",
                "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                574_673_361,
                "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
            ),
        ),
    ),
]

DEFAULT_LAYERS = {
    "vgg16": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
    "vgg19": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
}


def rules(
    config: str, output_layers: Sequence[str], prefix: str = "features.", param_prefix: str = ""
) -> list[mapping.Rule]:
    """Rules for the convs the module builds (those up to its deepest output layer)."""
    index = vgg.torchvision_index(config)
    last = max(index[name] for name in output_layers)
    out = []
    for name in vgg.layer_names(config)[: last + 1]:
        if name.startswith("conv"):
            i = index[name]
            out += [
                mapping.Rule(f"{prefix}{i}.weight", f"{param_prefix}{name}/kernel", mapping.CONV2D),
                mapping.Rule(f"{prefix}{i}.bias", f"{param_prefix}{name}/bias"),
            ]
    return out


def unused_keys(config: str, output_layers: Sequence[str], prefix: str = "features."):
    """A predicate for keys of a full torchvision VGG that the feature stack does not use."""
    last = max(vgg.torchvision_index(config)[name] for name in output_layers)
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(weight|bias)$")

    def ignore(key: str) -> bool:
        if key.startswith("classifier."):
            return True
        match = pattern.match(key)
        return bool(match) and int(match.group(1)) > last

    return ignore


def param_shapes(config: str, output_layers: Sequence[str]):
    model = vgg.VGGFeatures(config=config, output_layers=tuple(output_layers))
    image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    return mapping.variable_shapes(model, image)["params"]


def import_checkpoint(
    path, config: str = "vgg16", output_layers: Sequence[str] | None = None
) -> dict:
    """A torchvision VGG state_dict file -> {"params", "model_config"}."""
    output_layers = tuple(output_layers or DEFAULT_LAYERS[config])
    state = read_state_dict(path)
    params = mapping.to_params(
        state,
        rules(config, output_layers),
        param_shapes(config, output_layers),
        source=str(path),
        ignore=unused_keys(config, output_layers),
    )
    return {
        "params": params,
        "model_config": {"config": config, "output_layers": list(output_layers)},
    }


def export_checkpoint(
    variables: dict, path, config: str = "vgg16", output_layers: Sequence[str] | None = None
) -> None:
    """Writes the convs back as torchvision `features.N.*` keys (no classifier)."""
    output_layers = tuple(output_layers or DEFAULT_LAYERS[config])
    torch_pickle.save(
        mapping.to_state_dict(variables["params"], rules(config, output_layers)), path
    )
