"""SyncNet v2 (`syncnet_v2.model` from joonson/syncnet_python, a legacy-format state_dict)
-> `jaxtalk.models.metric_nets.syncnet.SyncNet` variables.

torch layout: netcnnaud / netcnnlip Sequentials (convs at 0, 4, 8, 11, 14, 18, each
followed by its BatchNorm), netfcaud / netfclip = Linear(0), BatchNorm1d(1), Linear(3).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models.metric_nets import syncnet

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "syncnet_v2",
        {},
        (),
        "joonson/syncnet_python download_model.sh: data/syncnet_v2.model",
        files=(
            ReleaseFile(
                "checkpoint",
                "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
                54_573_114,
                "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
            ),
        ),
    ),
]

CONV_INDICES = (0, 4, 8, 11, 14, 18)
STREAMS = {
    "audio": ("netcnnaud", "netfcaud", mapping.CONV2D),
    "video": ("netcnnlip", "netfclip", mapping.CONV3D),
}


def rules() -> list:
    out = []
    for stream, (cnn, fc, layout) in STREAMS.items():
        for i, index in enumerate(CONV_INDICES, start=1):
            out += mapping.conv(
                f"{cnn}.{index}", f"params/{stream}/{stream}_conv{i}", layout=layout
            )
            out += mapping.batch_norm(f"{cnn}.{index + 1}", f"{stream}/{stream}_bn{i}")
        out += mapping.linear(f"{fc}.0", f"params/{stream}/{stream}_fc1")
        out += mapping.batch_norm(f"{fc}.1", f"{stream}/{stream}_fc_bn")
        out += mapping.linear(f"{fc}.3", f"params/{stream}/{stream}_fc2")
    return out


def variable_shapes():
    return mapping.variable_shapes(
        syncnet.SyncNet(), jnp.zeros((1, 13, 20, 1)), jnp.zeros((1, 5, 224, 224, 3))
    )


def import_checkpoint(path) -> dict:
    state = read_state_dict(path)
    variables = mapping.import_variables(state, rules(), variable_shapes(), source=str(path))
    return {**variables, "model_config": {"net": "syncnet_v2", "embedding_dim": 1024}}


def export_checkpoint(variables: dict, path) -> None:
    torch_pickle.save(mapping.export_state_dict(variables, rules()), path)
