"""The mesh and the shardings of every array the loop holds.

Three layers, as in maxtext: mesh axes (`data`, `fsdp`, `tensor`) from config; logical
axis rules in config map the names models put on their kernels to mesh axes; this module
turns both into a `NamedSharding` per leaf. A dimension that its mesh axes do not divide
is replicated instead of failing, so an RGB input conv or a 20-d motion head is fine.
"""

from __future__ import annotations

import contextlib
import math

import jax
import numpy as np
from flax import linen as nn
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
# The logical name of the batch (leading) dimension of inputs and activations; the config's
# logical_axis_rules map it to the mesh axes that carry data (data and fsdp), as maxtext does.
BATCH = "activation_batch"


def _fill(shape: dict[str, int], total: int, what: str) -> list[int]:
    sizes = [shape[a] for a in AXES]
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1:
        raise ValueError(f"{what}: at most one axis may be -1, got {shape}")
    if -1 in sizes:
        if total % known:
            raise ValueError(f"{what}: {total} devices are not divisible by {known}")
        sizes[sizes.index(-1)] = total // known
    if math.prod(sizes) != total:
        raise ValueError(
            f"{what} {dict(zip(AXES, sizes))} needs {math.prod(sizes)} "
            f"devices but there are {total}"
        )
    return sizes


def make_mesh(mesh_config, dcn_config=None, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh; a hybrid ICI x DCN mesh when dcn_config spans slices."""
    devices = list(devices if devices is not None else jax.devices())
    dcn = [1, 1, 1] if dcn_config is None else [dcn_config[a] for a in AXES]
    num_slices = math.prod(dcn)
    ici = _fill(dict(mesh_config), len(devices) // num_slices, "mesh (per slice)")
    if num_slices > 1:
        arr = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices)
    else:
        try:
            arr = mesh_utils.create_device_mesh(ici, devices=devices)
        except (ValueError, NotImplementedError, AssertionError):
            arr = np.asarray(devices).reshape(ici)  # e.g. CPU or uneven topologies
    return Mesh(arr, AXES)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes from dims they do not divide (those dims stay replicated)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        kept = []
        for name in names:
            if dim % (mesh.shape[name] * math.prod(mesh.shape[k] for k in kept)) == 0:
                kept.append(name)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def shardings_for(boxed_abstract, mesh: Mesh, rules) -> object:
    """A NamedSharding per leaf of a (possibly nn.Partitioned-boxed) abstract pytree.

    The result has the structure of the unboxed tree; leaves without logical names (step
    counters, rng keys) are replicated.
    """

    def leaf_sharding(x):
        if isinstance(x, nn.Partitioned):
            if not hasattr(x.value, "shape"):
                return x.value  # an empty placeholder such as optax's MaskedNode
            spec = nn.logical_to_mesh_axes(x.names, rules)
            return NamedSharding(mesh, _fit(spec, x.value.shape, mesh))
        return NamedSharding(mesh, P())

    return jax.tree.map(
        leaf_sharding, boxed_abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned)
    )


def batch_sharding(mesh: Mesh, rules, ndim: int = 1, names=None) -> NamedSharding:
    """The NamedSharding of a batch leaf of `ndim` dims: dim 0 by the rules' BATCH entry,
    the others by their logical `names` (names[0] is the batch dim's) or replicated."""
    if names is None:  # runs saved before BATCH had a rule name their batch dim "batch"
        names = (BATCH if any(r[0] == BATCH for r in rules) else "batch",)
    names = tuple(names)
    if len(names) > max(ndim, 1):
        raise ValueError(f"{len(names)} logical names {names} for a {ndim}-d batch leaf")
    spec = nn.logical_to_mesh_axes(names, rules)
    while len(spec) and spec[-1] is None:  # trailing replicated dims: the shortest spec
        spec = P(*spec[:-1])
    return NamedSharding(mesh, P(*spec))


def place(tree, boxed_abstract, mesh: Mesh, rules):
    """`tree` (host or device arrays) on the rules' shardings of `boxed_abstract`, matched
    leaf by leaf on key paths; leaves the abstract lacks (e.g. a frozen group rebuilt from
    its source and absent from an init) are replicated."""
    by_path = {
        jax.tree_util.keystr(p): s
        for p, s in jax.tree_util.tree_leaves_with_path(shardings_for(boxed_abstract, mesh, rules))
    }
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map_with_path(
        lambda p, x: jax.device_put(x, by_path.get(jax.tree_util.keystr(p), replicated)), tree
    )


@contextlib.contextmanager
def activation_context(mesh: Mesh, rules):
    """The context to trace a step or an evaluation in: the mesh (abstract, so nothing is
    placed) and the logical axis rules, which turn the models' `constrain` calls at block
    boundaries (jaxtalk/models/layers/sharding.py) into sharding constraints."""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
        yield
