"""Serialized `jax.export` functions that run without jaxtalk's model code.

File format (`.jaxfn`, a zip archive):
- `function.bin`: `jax.export.Exported.serialize()` of `f(weights, *inputs)`, where
  `weights` is the list of weight arrays in manifest order;
- `weights.safetensors`: those arrays under their '/'-joined parameter names;
- `manifest.json`: format tag, weight names in argument order, input/output names with
  shapes (symbolic dims as strings, e.g. "T") and dtypes, platforms, free metadata.

Weights are passed as arguments rather than baked in as constants: the StableHLO stays
small and fast to (de)serialize, the same function file can be re-weighted, and the
weights are inspectable with any safetensors reader. `load_function(path)` needs only
jax, numpy and safetensors (it imports nothing else from jaxtalk), and returns a callable
`fn(*inputs) -> outputs` with the weights bound; `run_standalone.py`-style code that does
not import jaxtalk at all can do the same in ~10 lines (see `load_function`).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxtalk import fs
from jaxtalk.errors import CheckpointError

FORMAT = "jaxtalk.jax_function/1"


def _flat_weights(params: Mapping) -> tuple[list[str], list[np.ndarray]]:
    import jax

    from jaxtalk.export.safetensors_io import flatten

    flat = flatten(jax.device_get(dict(params)))
    names = sorted(flat)
    return names, [flat[n] for n in names]


def _spec_json(spec) -> dict:
    return {
        "shape": [d if isinstance(d, int) else str(d) for d in spec.shape],
        "dtype": str(np.dtype(spec.dtype)),
    }


def export_function(
    fn: Callable,
    params: Mapping,
    input_specs: Sequence[Any],
    path: str | os.PathLike,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
    platforms: Sequence[str] = ("cpu",),
    metadata: Mapping[str, Any] | None = None,
) -> dict:
    """Exports `fn(params, *inputs)` with `params` bound as weight arguments.

    `input_specs`: `jax.ShapeDtypeStruct`s; shapes may hold symbolic dimensions from
    `jax.export.symbolic_shape` (e.g. a frame count). Returns the manifest.
    """
    import jax
    from jax import export as jexport
    from safetensors.numpy import save

    names, arrays = _flat_weights(params)

    def flat_fn(weights, *inputs):
        from jaxtalk.export.safetensors_io import unflatten

        tree = unflatten(dict(zip(names, weights)))
        return fn(tree, *inputs)

    weight_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays]
    exported = jexport.export(jax.jit(flat_fn), platforms=tuple(platforms))(
        weight_specs, *input_specs
    )
    out_specs = exported.out_avals
    manifest = {
        "format": FORMAT,
        "weights": names,
        "inputs": [
            dict(
                _spec_json(s),
                name=(input_names or [f"input_{i}" for i in range(len(input_specs))])[i],
            )
            for i, s in enumerate(input_specs)
        ],
        "outputs": [
            dict(
                _spec_json(s),
                name=(output_names or [f"output_{i}" for i in range(len(out_specs))])[i],
            )
            for i, s in enumerate(out_specs)
        ],
        "platforms": list(platforms),
        "metadata": dict(metadata or {}),
    }
    path = os.fspath(path)
    with fs.local_output(path) as tmp, zipfile.ZipFile(tmp, "w") as z:
        z.writestr("function.bin", bytes(exported.serialize()))
        z.writestr("weights.safetensors", save(dict(zip(names, arrays))))
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
    return manifest


_MEMBER_RATIO = 8


def _read_member(z: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A member's bytes, refused before inflating when it declares more than `limit`."""
    info = z.getinfo(name)
    if info.file_size > limit:
        raise ValueError(f"member {name} declares {info.file_size:,} bytes, over {limit:,}")
    with z.open(info) as f:
        return f.read(info.file_size)


def load_function(path: str | os.PathLike) -> tuple[Callable, dict]:
    """-> (fn(*inputs) -> tuple of outputs, manifest). Needs jax, numpy, safetensors only."""
    with fs.local_file(path) as local:
        return _load_local(local)


def _load_local(path: str) -> tuple[Callable, dict]:
    from jax import export as jexport
    from safetensors.numpy import load

    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a jaxtalk exported function (expected a zip archive)")
    try:
        with zipfile.ZipFile(path) as z:
            limit = _MEMBER_RATIO * os.path.getsize(path) + (1 << 20)  # no zip bombs
            manifest = json.loads(_read_member(z, "manifest.json", limit))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise ValueError(f"manifest.json is not a {FORMAT} manifest")
            names = manifest.get("weights")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("manifest 'weights' must be a list of names")
            exported = jexport.deserialize(bytearray(_read_member(z, "function.bin", limit)))
            weights_by_name = load(_read_member(z, "weights.safetensors", limit))
        weights = [weights_by_name[n] for n in names]
    except Exception as e:  # noqa: BLE001 - a malformed file, reported on one line
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise CheckpointError(
            f"{path}: not a readable jaxtalk exported function ({reason})"
        ) from None

    def fn(*inputs):
        out = exported.call(weights, *inputs)
        return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    return fn, manifest
