"""How jaxtalk finds what a model family provides, so that adding a family adds files only.

A family is a set of modules, each declaring what it provides at module level:
`RELEASES = [Release(...)]` in a converter (jaxtalk/convert/<family>.py), `ANIMATORS =
{kind: AnimatorClass}` in an animator module (jaxtalk/inference/<family>.py), and
`build(config)` in a task module (jaxtalk/tasks/<recipe>.py, found by `config.task`).
`declarations(package, name)` collects one such attribute from every module of a jaxtalk
package and from every module of the packages listed in $JAXTALK_PLUGINS (comma-separated
import paths; how a family living outside jaxtalk, e.g. the tests' toy family, plugs in).

Only modules of jaxtalk and of the packages the user lists are ever imported: names read
from files (a weights file's `kind`) are looked up in what was declared, never imported.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType
from typing import Any, Iterator

PLUGINS_ENV = "JAXTALK_PLUGINS"


def _modules(package: str) -> Iterator[ModuleType]:
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.iter_modules(getattr(root, "__path__", []), prefix=f"{package}."):
        yield importlib.import_module(info.name)


def plugin_packages() -> list[str]:
    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def declarations(package: str, name: str) -> list[tuple[ModuleType, Any]]:
    """(module, value) for every module of `package` and of the plugin packages that
    defines `name` at module level."""
    found = []
    for root in (package, *plugin_packages()):
        for module in _modules(root):
            if name in vars(module):
                found.append((module, vars(module)[name]))
    return found
