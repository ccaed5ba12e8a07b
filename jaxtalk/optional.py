"""Optional dependencies: imported where a feature needs them, named with their pip extra.

A plain `pip install jaxtalk` leaves out what only some features use (tensorflow-datasets
for the tfds builders, ~200 MB with its dependencies); a feature that needs one asks for it
here and the user gets one line saying what to install instead of a ModuleNotFoundError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxtalk.errors import InputError


class MissingDependencyError(InputError):
    """A feature was asked for whose optional dependency is not installed."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`import module`, or a MissingDependencyError naming `feature` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and module.split(".")[0] != e.name.split(".")[0]:
            raise  # the module is there but something it imports is broken: not ours to hide
        raise MissingDependencyError(
            f"{feature} needs {module.split('.')[0]}: pip install 'jaxtalk[{extra}]'"
        ) from None


def tfds(feature: str = "tfds datasets") -> ModuleType:
    """tensorflow_datasets (the `tfds` extra)."""
    return require("tensorflow_datasets", "tfds", feature)
