"""Public PyTorch checkpoints jaxtalk imports, by release name.

    jaxtalk import --release=lpips_alex --checkpoint=alex.pth --backbone=alexnet-owt-7be5be79.pth

Each converter module (`jaxtalk/convert/<family>.py`, with `import_checkpoint(path,
**options)` and `export_checkpoint`) declares the releases it reads in a module-level
`RELEASES` list (jaxtalk/discovery.py): options, the extra files it needs and where users
get the file. A new family adds its converter module; nothing here changes.
`import_release` converts once and writes `<weights dir>/<release>.safetensors`.

A release may also list its public files (`ReleaseFile`: URL, size, SHA-256, taken from
the publisher's own listing); `jaxtalk download` (jaxtalk/convert/download.py) fetches and
checks them, then imports.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from typing import Callable

from jaxtalk import discovery
from jaxtalk.convert import weights as weights_store
from jaxtalk.errors import InputError


@dataclasses.dataclass(frozen=True)
class ReleaseFile:
    """One public file of a release: where it is and what it must hash to."""

    option: str  # the import option it fills: "checkpoint" or one of `extra_files`
    url: str
    size: int | None  # bytes; None where the publisher lists none
    # None where no published checksum could be verified: the download says so and
    # reports the digest it got instead of checking one.
    sha256: str | None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


@dataclasses.dataclass(frozen=True)
class Release:
    """A public PyTorch weights file and the converter that imports it."""

    name: str
    options: dict  # fixed options for the converter's import_checkpoint
    extra_files: tuple[str, ...]  # further file options the user must pass (e.g. backbone)
    source: str  # where the public file comes from (shown in errors and the README)
    # The module declaring it, with import_checkpoint(path, **options) and
    # export_checkpoint(variables, path, ...); `releases()` fills it in.
    converter: str = ""
    files: tuple[ReleaseFile, ...] = ()  # the public files, for `jaxtalk download`

    def command(self) -> str:
        extra = "".join(f" --{f}=<path>" for f in self.extra_files)
        return f"jaxtalk import --release={self.name} --checkpoint=<path>{extra}"


def releases() -> dict[str, Release]:
    """Every release, by name: the `RELEASES` lists of the converter modules in
    jaxtalk/convert/ (and in $JAXTALK_PLUGINS packages), each bound to its module."""
    found: dict[str, Release] = {}
    for module, declared in discovery.declarations("jaxtalk.convert", "RELEASES"):
        for release in declared:
            found[release.name] = dataclasses.replace(release, converter=module.__name__)
    return found


def find_release(name: str) -> Release:
    known = releases()
    if name not in known:
        raise InputError(f"unknown release {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def run_exporter(task: str) -> tuple[str, Callable[..., dict]] | None:
    """(converter module name, its function) for runs of `task` whose model spans several
    parameter groups: a converter declares `RUN_VARIABLES = {task: run_variables}`, with
    `run_variables(config, read_group, group, source)` giving the variables its releases'
    `export_checkpoint` writes (jaxtalk/convert/liveportrait.py). None for other tasks,
    whose runs export one parameter group."""
    for module, declared in discovery.declarations("jaxtalk.convert", "RUN_VARIABLES"):
        if task in declared:
            return module.__name__, declared[task]
    return None


def import_release(
    release: str,
    checkpoint: str | os.PathLike,
    output: str | None = None,
    weights_dir: str | None = None,
    **files: str,
) -> str:
    """Converts a public PyTorch file and writes `<weights dir>/<release>.safetensors`.

    What `jaxtalk import --release=R --checkpoint=P [--backbone=B] [--output=O]` calls.
    """
    spec = find_release(release)
    missing = [f for f in spec.extra_files if not files.get(f)]
    unknown = sorted(set(files) - set(spec.extra_files))
    if missing or unknown:
        raise ValueError(
            f"release {release!r} takes --checkpoint"
            + "".join(f" --{f}" for f in spec.extra_files)
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unknown}" if unknown else "")
        )
    converter = importlib.import_module(spec.converter)
    variables = converter.import_checkpoint(checkpoint, **spec.options, **files)
    target = output or weights_store.weights_path(release, weights_dir)
    return weights_store.save(variables, target, release=release)


def export_release(release: str, variables: dict, path: str | os.PathLike) -> None:
    """Writes `variables` (as `import_release` stored them) in the release's PyTorch layout."""
    spec = find_release(release)
    converter = importlib.import_module(spec.converter)
    options = {
        k: v
        for k, v in spec.options.items()
        if k in inspect.signature(converter.export_checkpoint).parameters
    }
    if "model_config" in inspect.signature(converter.export_checkpoint).parameters:
        options["model_config"] = variables.get("model_config") or None
    converter.export_checkpoint(variables, path, **options)
