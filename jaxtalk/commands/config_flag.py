"""The `--config` flag shared by commands that run a recipe, with clear error messages.

ml_collections reports a bad override or a missing file as a traceback; users get one line
naming the flag, the file or the key instead (an InputError, which `jaxtalk/cli.py` prints).
"""

from __future__ import annotations

import os
import re

from absl import flags
from ml_collections import config_flags

import configs
from jaxtalk.errors import InputError

FLAGS = flags.FLAGS
QUOTES = "'\""  # KeyError's repr wraps ml_collections' quoted key: "'init_from'"


def define():
    return config_flags.DEFINE_config_file(
        "config",
        None,
        "recipe config: configs/<recipe>.py:<variant> (or <recipe>:<variant>); "
        "override keys with --config.<key>=<value>",
        lock_config=True,
    )


def _config_path(value: str) -> str:
    """`recipe:variant` -> the installed configs/recipe.py when no such file is given."""
    path, sep, variant = value.partition(":")
    if os.path.exists(path) or "/" in path or path.endswith(".py"):
        return value
    installed = os.path.join(os.path.dirname(configs.__file__), f"{path}.py")
    return f"{installed}{sep}{variant}" if os.path.exists(installed) else value


def _resolve(argv: list[str]) -> list[str]:
    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            arg = "--config=" + _config_path(arg[len("--config=") :])
        elif i > 0 and argv[i - 1] == "--config":
            arg = _config_path(arg)
        out.append(arg)
    return out


def _clean(e: BaseException) -> str:
    """One line: the final `XxxError: message` of an embedded traceback, quotes unescaped."""
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    if "Traceback" in text:
        errors = re.findall(r"^\s*(\w+(?:Error|Exception): .*)$", text, flags=re.M)
        text = errors[-1] if errors else text
    return " ".join(text.split())


def parse(argv: list[str], required: tuple[str, ...] = ()) -> list[str]:
    """Parses a command's flags with one-line errors (`jaxtalk <cmd> --help` is the CLI's)."""
    command = argv[0]
    config_given = [a for a in argv[1:] if a == "--config" or a.startswith("--config=")]
    path = next((a.split("=", 1)[1] for a in config_given if "=" in a), None)
    if path is not None and not os.path.exists(_config_path(path).partition(":")[0]):
        raise InputError(
            f"--config: config file {path.partition(':')[0]!r} does not exist "
            f"(recipes: {', '.join(available_recipes())})"
        )
    try:
        rest = FLAGS(_resolve(argv))
    except flags.Error as e:
        raise InputError(f"{_clean(e)} (see {command} --help)")
    except (AttributeError, KeyError) as e:
        raise InputError(f"unknown config key in an override: {_clean(e).strip(QUOTES)}")
    except Exception as e:  # a config file that raises, e.g. an unknown variant
        raise InputError(f"--config={path}: {_clean(e)}")
    if not config_given:
        raise InputError("--config is required, e.g. --config=configs/toy_regression.py:tiny")
    for name in required:
        if FLAGS[name].value in (None, ""):
            raise InputError(f"--{name} is required")
    return rest


def reject_positional(argv: list[str]) -> None:
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")


def available_recipes() -> list[str]:
    here = os.path.dirname(configs.__file__)
    return sorted(
        f[:-3]
        for f in os.listdir(here)
        if f.endswith(".py") and f not in ("__init__.py", "common.py")
    )
