"""pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth, a plain
state_dict of torchvision Inception3 names with a 1008-way fc and no AuxLogits)
-> `jaxtalk.models.metric_nets.inception.FIDInceptionV3` variables.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.convert.torch_legacy import read_state_dict
from jaxtalk.models.metric_nets import inception

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "inception_fid",
        {},
        (),
        "pytorch-fid release pt_inception-2015-12-05-6726825d.pth",
        files=(
            ReleaseFile(
                "checkpoint",
                "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                "pt_inception-2015-12-05-6726825d.pth",
                95_628_359,
                "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
            ),
        ),
    ),
]


def _shapes():
    return mapping.variable_shapes(inception.FIDInceptionV3(), jnp.zeros((1, 299, 299, 3)))


def rules() -> list:
    return mapping.mirrored(_shapes(), linear_modules=("fc",))


def import_checkpoint(path) -> dict:
    state = read_state_dict(path)
    variables = mapping.import_variables(state, rules(), _shapes(), source=str(path))
    return {**variables, "model_config": {"net": "pytorch_fid_inception_v3"}}


def export_checkpoint(variables: dict, path) -> None:
    torch_pickle.save(mapping.export_state_dict(variables, rules()), path)
