"""The flags `jaxtalk eval` and `jaxtalk sweep` share, defined once for both.

Each command calls `define(__name__)` at import; the flags are registered under the
command's module so that its --help lists them.
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from jaxtalk.errors import InputError


@dataclasses.dataclass(frozen=True)
class Flags:
    metrics: flags.FlagHolder
    modes: flags.FlagHolder
    batch_size: flags.FlagHolder
    num_batches: flags.FlagHolder
    weights_dir: flags.FlagHolder
    metric_options: flags.FlagHolder
    data_root: flags.FlagHolder
    seed: flags.FlagHolder


def define(module_name: str) -> Flags:
    def d(kind, name, default, text):
        return getattr(flags, f"DEFINE_{kind}")(name, default, text, module_name=module_name)

    return Flags(
        metrics=d(
            "list",
            "metrics",
            ["psnr", "ssim", "lpips_alex", "csim"],
            "metrics by name (jaxtalk/evaluate/registry.py); those whose weights are "
            "missing are skipped with a message",
        ),
        modes=d("list", "modes", [], "eval modes, e.g. self,cross (default: all the task has)"),
        batch_size=d("integer", "batch_size", 8, "global eval batch size"),
        num_batches=d("integer", "num_batches", 0, "test batches per cell (0: the whole split)"),
        weights_dir=d(
            "string",
            "weights_dir",
            None,
            "imported metric weights (default: $JAXTALK_WEIGHTS_DIR or ~/.cache/jaxtalk/weights)",
        ),
        metric_options=d(
            "string",
            "metric_options",
            "",
            'JSON options per metric, e.g. \'{"fid": {"reference_statistics": "vox_test.npz"}}\'',
        ),
        data_root=d(
            "string",
            "data_root",
            None,
            "where a bare test-set name NAME is looked up, as DATA_ROOT/NAME",
        ),
        seed=d("integer", "seed", 0, "seed of the test batches' frame choice and eval rng"),
    )


def metric_options(text: str) -> dict:
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--metric_options is not JSON: {e}") from None
    if not isinstance(options, dict):
        raise ValueError("--metric_options must be a JSON object {metric: {option: value}}")
    return options


def check_args(argv: list[str], **required) -> None:
    """Refuses positional arguments and required flags (name=value) left empty."""
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    missing = [f"--{name}" for name, value in required.items() if not value]
    if missing:
        raise InputError(f"{', '.join(missing)} required")
