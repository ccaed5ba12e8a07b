"""The toy family's "released" PyTorch checkpoint (torch.nn.Sequential(Conv2d(6, 8, 3),
ReLU(), Conv2d(8, 3, 3)) state_dict) <-> params, with the shared mapping rules."""

import os

import jax.numpy as jnp

from jaxtalk.convert import mapping, torch_pickle
from jaxtalk.convert.releases import Release, ReleaseFile
from tests.toy_family.model import ToyPortrait


def _public_files() -> tuple:
    """Where tests/test_download.py serves the toy checkpoint, when it does."""
    if "TOY_RELEASE_URL" not in os.environ:
        return ()
    env = os.environ
    size, sha256 = int(env["TOY_RELEASE_SIZE"]), env["TOY_RELEASE_SHA256"]
    return (ReleaseFile("checkpoint", env["TOY_RELEASE_URL"], size, sha256),)


RELEASES = [
    Release("toy_portrait", {}, (), "made by tests/test_toy_family.py", files=_public_files())
]

RULES = mapping.conv("net.0", "net_0") + mapping.conv("net.2", "net_2")


def _reference():
    x = jnp.zeros((1, 8, 8, 3))
    return mapping.variable_shapes(ToyPortrait(), x, x)["params"]


def import_checkpoint(path):
    state = torch_pickle.load_state_dict(path)
    params = mapping.to_params(state, RULES, _reference(), source=str(path))
    return {"params": params, "model_config": {"kind": "toy_portrait", "features": 8}}


def export_checkpoint(variables, path):
    torch_pickle.save(mapping.to_state_dict(variables["params"], RULES), path)
