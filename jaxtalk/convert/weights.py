"""Imported weights on disk: one safetensors file per release.

`jaxtalk import --release=<name> --checkpoint=<file>` converts the public PyTorch file once
(`jaxtalk.convert.releases.import_release`) and writes `<weights dir>/<name>.safetensors`;
metrics, fine-tuning and comparisons load it from there (`load`). The file is an
`export/safetensors_io` params file whose top level holds the "params" / "batch_stats"
collections; the converter's model_config and the release name travel as metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from jaxtalk.export.safetensors_io import load_params, save_params

WEIGHTS_DIR_ENV = "JAXTALK_WEIGHTS_DIR"
COLLECTIONS = ("params", "batch_stats")


def default_weights_dir() -> Path:
    """$JAXTALK_WEIGHTS_DIR, else ~/.cache/jaxtalk/weights."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or Path.home() / ".cache" / "jaxtalk" / "weights")


def weights_path(release: str, weights_dir: str | os.PathLike | None = None) -> Path:
    return Path(weights_dir or default_weights_dir()) / f"{release}.safetensors"


def save(variables: Mapping[str, Any], path: str | os.PathLike, release: str = "") -> Path:
    tree = {c: variables[c] for c in COLLECTIONS if variables.get(c)}
    save_params(tree, path, metadata={"model_config": variables.get("model_config") or {},
                                      "release": release})
    return Path(path)


def load(path: str | os.PathLike) -> dict:
    """{"params", maybe "batch_stats", "model_config", "release"} from `save`'s file."""
    tree, metadata = load_params(path)
    out = {k: tree[k] for k in COLLECTIONS if k in tree}
    out["model_config"] = metadata.get("model_config") or {}
    out["release"] = str(metadata.get("release") or "")
    return out
