"""Imported weights on disk: one safetensors file per release.

`jaxtalk import --release=<name> --checkpoint=<file>` converts the public PyTorch file once
(`jaxtalk.convert.releases.import_release`) and writes `<weights dir>/<name>.safetensors`;
metrics, fine-tuning and comparisons load it from there (`load`). The file is an
`export/safetensors_io` params file whose top level holds the "params" / "batch_stats"
collections; the converter's model_config and the release name travel as metadata.

What the model does not use but the release file has travels too, so that `jaxtalk export`
writes back the file that was imported, bit for bit: "online" / "ema" (the other copy,
{"params", "batch_stats"}, of a file holding both, e.g. AniTalker stage 2's `model.*`
beside the `ema_model.*` that "params" holds) and "buffers" (tensors by their key in the
release file, exactly as read: `x_T`, `num_batches_tracked`, blur kernels, ...); and, for
a file that holds more than a model's state_dict (a LIA training file's discriminator,
optimizer states and arguments, a Lightning file's counters), "rest" (its tensors) with the
metadata "layout" (the rest of its structure, `jaxtalk.convert.release_file`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from jaxtalk import fs
from jaxtalk.errors import CheckpointError
from jaxtalk.export.safetensors_io import load_params, save_params

WEIGHTS_DIR_ENV = "JAXTALK_WEIGHTS_DIR"
COLLECTIONS = ("params", "batch_stats", "online", "ema", "buffers", "rest")


def default_weights_dir() -> str:
    """$JAXTALK_WEIGHTS_DIR (a local directory or a URL), else ~/.cache/jaxtalk/weights."""
    return fs.absolute(os.environ.get(WEIGHTS_DIR_ENV) or "~/.cache/jaxtalk/weights")


def weights_path(release: str, weights_dir: str | os.PathLike | None = None) -> str:
    return fs.join(fs.absolute(weights_dir or default_weights_dir()), f"{release}.safetensors")


def save(variables: Mapping[str, Any], path: str | os.PathLike, release: str = "") -> str:
    tree = {c: variables[c] for c in COLLECTIONS if variables.get(c)}
    save_params(
        tree,
        path,
        metadata={
            "model_config": variables.get("model_config") or {},
            "release": release,
            **({"layout": variables["layout"]} if variables.get("layout") is not None else {}),
        },
    )
    return os.fspath(path)


# Model names before they were unified (task / config.task, model_config "kind"). Weights
# files and run configs written then still carry them, so reading maps them to today's
# names here, the one place that knows them (weights.load, checkpoints.run_config); nothing
# writes them any more.
_RENAMED = {"anitalker_motion": "anitalker_stage1", "anitalker_audio2motion": "anitalker_stage2"}


def current_name(name: Any) -> Any:
    """Today's name of a task or model kind read from a file (old names mapped)."""
    return _RENAMED.get(name, name) if isinstance(name, str) else name


def load(path: str | os.PathLike) -> dict:
    """{"params", "model_config", "release"} and whichever of the other collections and
    "layout" `save` wrote."""
    tree, metadata = load_params(path)
    out = {k: tree[k] for k in COLLECTIONS if k in tree}
    if not isinstance(out.get("params"), dict):
        raise CheckpointError(f"{path}: no 'params' collection (not a jaxtalk weights file)")
    leaves = [k for k, v in out.items() if not isinstance(v, dict)]
    if leaves:
        raise CheckpointError(f"{path}: {leaves[0]!r} is a tensor, not a collection")
    config, release = metadata.get("model_config") or {}, metadata.get("release") or ""
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise CheckpointError(
            f"{path}: metadata 'model_config' must be a JSON object, not {type(config).__name__}"
        )
    if not isinstance(release, str):
        raise CheckpointError(
            f"{path}: metadata 'release' must be a string, not {type(release).__name__}"
        )
    if "kind" in config:
        config = dict(config, kind=current_name(config["kind"]))
    out["model_config"], out["release"] = config, release
    if "layout" in metadata:
        out["layout"] = metadata["layout"]
    return out


_FIELD_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_SEQUENCE_FIELDS = ("Sequence[int]", "tuple[int, ...]")


def _option_ok(kind: Any, value: Any) -> bool | None:
    """Whether `value` fits a field annotated `kind`; None for fields that are not options."""
    if kind in _FIELD_TYPES:  # bool is an int in Python, but not a size
        return isinstance(value, _FIELD_TYPES[kind]) and (
            kind == "bool" or not isinstance(value, bool)
        )
    if kind in _SEQUENCE_FIELDS:
        return isinstance(value, (list, tuple)) and all(type(v) is int for v in value)
    return None


def module_options(
    module_cls, config: Mapping[str, Any], source: str, keys: tuple[str, ...] | None = None
) -> dict:
    """The constructor options of `module_cls` that `config` (weights metadata) gives,
    type-checked against the module's field annotations; `keys` limits which are taken.

    Metadata comes from the file, so a value of the wrong JSON type, or a key that is not
    a plain option of the module (`parent`, `dtype`, ...), is a CheckpointError naming
    `source` instead of a traceback from inside the model."""
    fields = {f.name: f.type for f in dataclasses.fields(module_cls)}
    out = {}
    for key, value in config.items():
        if keys is not None and key not in keys:
            continue
        kind = fields.get(key)
        ok = _option_ok(kind, value)
        if ok is None:
            raise CheckpointError(
                f"{source}: model_config has {key[:60]!r}, not an option of {module_cls.__name__}"
            )
        if not ok:
            raise CheckpointError(
                f"{source}: model_config {key!r} must be {kind}, not {type(value).__name__}"
            )
        out[key] = tuple(value) if kind in _SEQUENCE_FIELDS else value
    return out
