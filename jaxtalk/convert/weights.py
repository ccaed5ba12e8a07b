"""Imported weights on disk: one safetensors file per release.

`jaxtalk import --release=<name> --checkpoint=<file>` converts the public PyTorch file once
(`jaxtalk.convert.releases.import_release`) and writes `<weights dir>/<name>.safetensors`;
metrics, fine-tuning and comparisons load it from there (`load`). Arrays are stored flat under "params/...", "batch_stats/..." keys and the
converter's model_config travels as JSON metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

WEIGHTS_DIR_ENV = "JAXTALK_WEIGHTS_DIR"
COLLECTIONS = ("params", "batch_stats")


def default_weights_dir() -> Path:
    """$JAXTALK_WEIGHTS_DIR, else ~/.cache/jaxtalk/weights."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or Path.home() / ".cache" / "jaxtalk" / "weights")


def weights_path(release: str, weights_dir: str | os.PathLike | None = None) -> Path:
    return Path(weights_dir or default_weights_dir()) / f"{release}.safetensors"


def save(variables: Mapping[str, Any], path: str | os.PathLike, release: str = "") -> Path:
    flat = {}
    for collection in COLLECTIONS:
        for keys, value in traverse_util.flatten_dict(dict(variables.get(collection, {}))).items():
            flat["/".join((collection,) + keys)] = np.ascontiguousarray(np.asarray(value))
    metadata = {"model_config": json.dumps(variables.get("model_config", {})),
                "release": release}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(flat, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> dict:
    """{"params", maybe "batch_stats", "model_config", "release"} from `save`'s file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file")
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata() or {}
    tree = traverse_util.unflatten_dict(
        {tuple(k.split("/")): v for k, v in load_file(str(path)).items()})
    out = {k: tree[k] for k in COLLECTIONS if k in tree}
    out["model_config"] = json.loads(metadata.get("model_config", "{}"))
    out["release"] = metadata.get("release", "")
    return out
