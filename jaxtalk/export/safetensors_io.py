"""Params trees <-> safetensors files ('/'-joined names, string metadata).

`save_params(params, path, metadata)` flattens a nested dict of arrays (Flax params,
boxed or not) to `{"enc/fc_0/kernel": array, ...}` and writes it with `safetensors`;
metadata values that are not strings are stored as JSON. `load_params(path)` returns the
nested numpy tree and the metadata (JSON values decoded). Any family can use it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxtalk import fs
from jaxtalk.errors import CheckpointError, one_line

SEP = "/"


def flatten(tree: Mapping, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        if SEP in str(key):
            raise ValueError(f"parameter name {key!r} contains {SEP!r}")
        name = f"{prefix}{SEP}{key}" if prefix else str(key)
        value = getattr(value, "value", value)  # flax LogicallyPartitioned boxes
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            # asarray(order="C") keeps 0-d tensors 0-d (ascontiguousarray makes them 1-d)
            out[name] = np.asarray(value, order="C")
    return out


def unflatten(flat: Mapping[str, Any], source: str = "params") -> dict:
    """The nested tree of '/'-joined names; a name that is both a leaf and a parent of
    another, or has an empty part, is an error naming `source`."""
    tree: dict = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split(SEP)
        if not all((*parents, leaf)):
            raise CheckpointError(f"{source}: malformed parameter name {name[:80]!r}")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"{source}: {name[:80]!r} lies under another parameter")
        if leaf in node:
            raise CheckpointError(f"{source}: {name[:80]!r} is both a parameter and a group")
        node[leaf] = value
    return tree


def save_params(
    params: Mapping, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> None:
    """Writes `params` (nested dict of arrays) to `path` as safetensors."""
    import jax

    flat = flatten(jax.device_get(dict(params)))
    meta = {
        str(k): v if isinstance(v, str) else json.dumps(v) for k, v in dict(metadata or {}).items()
    }
    meta.setdefault("format", "jaxtalk.params")
    with fs.local_output(path) as tmp:
        save_file(flat, tmp, metadata=meta)


def load_params(path: str | os.PathLike) -> tuple[dict, dict[str, Any]]:
    """-> (nested numpy params, metadata with JSON values decoded)."""
    with fs.local_file(path) as local:
        return _load_local(local)


def _load_local(path: str) -> tuple[dict, dict[str, Any]]:
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    try:  # the safetensors reader checks the header and every tensor against the file size
        with safe_open(path, framework="numpy") as f:
            raw_meta = f.metadata() or {}
            flat = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({one_line(f'{type(e).__name__}: {e}')})"
        ) from None
    meta = {}
    for k, v in raw_meta.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError, RecursionError):
            meta[k] = v
    return unflatten(flat, path), meta
