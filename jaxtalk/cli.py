"""`jaxtalk <command> [flags]`: one entry point, one module per command.

Each command lives in `jaxtalk/commands/<command>.py`, defines its own absl flags and a
`main(argv)`. Only the chosen command's module is imported, so `--help` lists that
command's flags and a slow import (TensorFlow datasets, say) costs only its command.
"""

from __future__ import annotations

import importlib
import os
import sys

from jaxtalk import lapack_threads
from jaxtalk.errors import InputError

COMMANDS = {
    "train": "train a recipe: jaxtalk train --config=configs/<recipe>.py:<variant> --workdir=DIR",
    "prepare": "turn raw datasets (or the built-in synthetic set) into training records",
    "import": "convert a released PyTorch checkpoint into jaxtalk parameters",
    "export": "write trained parameters as a PyTorch checkpoint, safetensors or a jax.export function",
    "eval": "evaluate one checkpoint on one test set",
    "sweep": "evaluate a grid of checkpoints x test sets x metrics",
    "animate": "animate a portrait from a driving video or speech",
    "download": "fetch a release's public files (resumable, checksummed) and import them",
    "app": "a web page (Gradio) to animate portraits: upload, pick options, download the mp4",
}

# Flags every command takes, shown at the end of each command's --help.
VERBOSITY_HELP = """\
  -v,--verbosity: log level: -1 warnings and errors only, 0 also info (per-shard
    and per-cell lines, library logs), 1 debug
    (default: '-1')
    (an integer)"""


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when run from one."""
    from importlib import metadata

    try:
        return metadata.version("jaxtalk")
    except metadata.PackageNotFoundError:
        import jaxtalk

        return jaxtalk.__version__


def _available() -> dict[str, str]:
    here = os.path.join(os.path.dirname(__file__), "commands")
    return {c: h for c, h in COMMANDS.items() if os.path.exists(os.path.join(here, f"{c}.py"))}


def usage() -> str:
    lines = [
        "usage: jaxtalk <command> [--flags]   (jaxtalk <command> --help for its flags)",
        "       jaxtalk --version",
        "",
        "commands:",
    ]
    lines += [f"  {c:<9} {h}" for c, h in _available().items()]
    return "\n".join(lines)


def print_help(module) -> None:
    """The command's docstring, its flags and the common ones (absl's own usage names the
    console script and lists absl's dozen logging flags)."""
    from absl import flags

    print((module.__doc__ or "").strip() + "\n\nflags:")
    for name in (module.__name__, "jaxtalk.commands.config_flag"):
        if name == module.__name__ or name in sys.modules:
            print(_flags_of(flags.FLAGS.module_help(name), name))
    print("\ncommon flags:\n" + _flags_of(flags.FLAGS.module_help("jaxtalk.progress"), ""))
    print(VERBOSITY_HELP)


def _flags_of(text: str, module_name: str) -> str:
    """absl's help of one module without its heading line (the module's name)."""
    text = text.lstrip("\n")
    return text.split("\n", 1)[1] if text.startswith(module_name) else text


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    commands = _available()
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    if argv[1] == "--version":
        print(f"jaxtalk {version()}")
        sys.exit(0)
    command = argv[1]
    if command not in commands:
        print(f"jaxtalk: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    import jaxtalk.progress  # noqa: F401  (defines --progress, which every command takes)

    module = importlib.import_module(f"jaxtalk.commands.{command}")
    from absl import app

    if any(a in ("-h", "--help", "--helpshort") for a in argv[2:]):
        try:
            print_help(module)
        except BrokenPipeError:  # `jaxtalk train --help | head`
            pass
        sys.exit(0)
    quiet = not any(a.startswith(("--verbosity", "-v")) for a in argv[2:])

    def run(args):
        lapack_threads.single_thread()  # jaxlib's LAPACK calls run inside XLA's own threads
        from jaxtalk import compile_cache  # imports jax: not for --help / --version

        compile_cache.configure()
        # Library INFO logs (orbax writes several per checkpoint) only with --verbosity=0.
        if quiet:
            from absl import logging

            logging.set_verbosity(logging.WARNING)
        return module.main(args)

    try:
        app.run(
            run,
            argv=[f"jaxtalk {command}"] + argv[2:],
            flags_parser=getattr(module, "parse_flags", app.parse_flags_with_usage),
        )
    except InputError as e:  # the one CLI error idiom: commands raise, this prints one line
        print(f"jaxtalk {command}: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
