"""Hugging Face model folders and weights files (diffusers, transformers), read as
untrusted data and written back in the same form.

A folder holds `config.json` beside one weights file (`diffusion_pytorch_model.safetensors`
or `.bin` for diffusers, `model.safetensors` or `pytorch_model.bin` for transformers),
possibly in a subfolder of a pipeline folder (`vae/`, `image_encoder/`). Weights files are
read without PyTorch: safetensors through its own checked reader (numpy, no code), torch
zip archives through the restricted unpickler (`torch_pickle`). `Located` records which
file was read, so that an export writes the same layout back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_dtypes
import numpy as np

from jaxtalk import fs
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import ConversionError, Rule, to_params
from jaxtalk.errors import CheckpointError, one_line

CONFIG = "config.json"
SAFETENSORS = ".safetensors"


@dataclasses.dataclass(frozen=True)
class Located:
    """Where a model's files are: the weights file, its config.json (None for a bare
    weights file) and the subfolder of the given folder they were found in."""

    weights: str
    config: str | None
    subfolder: str = ""


def locate(path: str | os.PathLike, subfolders: Sequence[str], names: Sequence[str]) -> Located:
    """A weights file as given, or the first of `names` in the first of `subfolders`
    ("" = the folder itself) of a folder that holds one, with its config.json if present."""
    path = os.fspath(path)
    if not fs.isdir(path):
        if not fs.exists(path):
            raise CheckpointError(f"{path}: no such file or folder")
        return Located(path, None)
    for sub in subfolders:
        folder = fs.join(path, sub) if sub else path
        for name in names:
            weights = fs.join(folder, name)
            if fs.exists(weights):
                config = fs.join(folder, CONFIG)
                return Located(weights, config if fs.exists(config) else None, sub)
    where = " or ".join(f"{sub}/" if sub else "the folder itself" for sub in subfolders)
    raise CheckpointError(f"{path}: no {' or '.join(names)} in {where}")


def read_config(path: str) -> dict:
    """A config.json as a dict (a JSON object, or an error naming the file)."""
    try:
        config = json.loads(fs.read_bytes(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file ({one_line(e, 80)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(config).__name__}")
    return config


def config_value(config: Mapping, key: str, kind: type, default: Any, source: str) -> Any:
    """config[key] checked to be of `kind` (an int also passes for a float), else default."""
    if key not in config:
        return default
    value = config[key]
    kinds = (int, float) if kind is float else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and kind is not bool):
        raise CheckpointError(f"{source}: {key!r} must be a {kind.__name__}, not {value!r:.40}")
    return value


def read_state_dict(path: str) -> tuple[dict[str, np.ndarray], dict[str, str] | None]:
    """(tensors by key, the safetensors metadata or None for a torch archive)."""
    if not path.endswith(SAFETENSORS):
        return torch_pickle.load_state_dict(path), None
    from safetensors import safe_open

    try:  # the reader checks the header and every tensor's extent against the file size
        with fs.local_file(path) as local, safe_open(local, framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({one_line(f'{type(e).__name__}: {e}', 120)})"
        ) from None


def write_state_dict(
    state: Mapping[str, np.ndarray], path: str, metadata: Mapping[str, str] | None = None
) -> None:
    """safetensors (with `metadata`) for a .safetensors path, else a torch zip archive."""
    if path.endswith(SAFETENSORS):
        from safetensors.numpy import save_file

        with fs.local_output(path) as tmp:
            save_file(
                {k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, dict(metadata or {})
            )
    else:
        stem = os.path.basename(path).rsplit(".", 1)[0] or "archive"
        torch_pickle.save(dict(state), path, archive_name=stem)


def write_config(config: Mapping, path: str) -> None:
    fs.write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def float_dtype(state: Mapping[str, np.ndarray]) -> str | None:
    """The one floating dtype of a file's tensors (None if they have none or several):
    params are float32, and export casts back to it, so that an fp16 / bf16 file round
    trips bit for bit (float32 holds both exactly)."""
    kinds = {str(np.asarray(v).dtype) for v in state.values() if np.asarray(v).dtype.kind == "f"}
    kinds |= {"bfloat16" for v in state.values() if np.asarray(v).dtype.name == "bfloat16"}
    return kinds.pop() if len(kinds) == 1 else None


def write_layout(
    state: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    layout: Mapping[str, Any],
    extensions: Sequence[str],
    default_name: str,
    fallback_config: Mapping | None = None,
) -> None:
    """Writes `state` as an import read it (`layout`: weights_file, hf_config,
    safetensors_metadata, float_dtype): one weights file for a path ending in one of `extensions`, else
    a folder holding config.json (as read, else `fallback_config`, else none) and the
    weights file (named as read, else `default_name`)."""
    path = os.fspath(path)
    metadata = layout.get("safetensors_metadata") or {"format": "pt"}
    if layout.get("float_dtype"):
        dtype = np.dtype(
            ml_dtypes.bfloat16 if layout["float_dtype"] == "bfloat16" else layout["float_dtype"]
        )
        state = {
            k: v.astype(dtype) if np.asarray(v).dtype.kind == "f" else v for k, v in state.items()
        }
    if path.endswith(tuple(extensions)):
        write_state_dict(state, path, metadata)
        return
    fs.makedirs(path)
    write_state_dict(state, fs.join(path, layout.get("weights_file") or default_name), metadata)
    config = layout.get("hf_config") or fallback_config
    if config:
        write_config(config, fs.join(path, CONFIG))


def strict_params(
    state: Mapping[str, np.ndarray],
    rules: Iterable[Rule],
    shapes: Mapping,
    source: str,
    ignore: Callable[[str], bool] = lambda k: False,
) -> dict:
    """`mapping.to_params` with its list of problems on one line (file, count, keys)."""
    try:
        return to_params(state, rules, shapes, source=source, ignore=ignore)
    except ConversionError as e:
        raise ConversionError(one_line(e, 600)) from None


def split_prefixed(
    state: Mapping[str, np.ndarray], prefix: str, extra: Sequence[str], source: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the model's keys with `prefix` removed, the keys that start with one of the known
    `extra` prefixes, as read); any other key is an error naming it."""
    model, kept = {}, {}
    for key, value in state.items():
        if key.startswith(prefix):
            model[key[len(prefix) :]] = value
        elif key.startswith(tuple(extra)):
            kept[key] = value
        else:
            raise ConversionError(
                f"{source}: unexpected key {key[:100]!r} (neither {prefix}* nor one of "
                f"{', '.join(p + '*' for p in extra)})"
            )
    return model, kept
