"""One progress bar for every long command (prepare, eval, sweep): count, rate and ETA.

A bar draws only on a terminal: piped or redirected output (CI logs, `> log.txt`, a batch
job) gets none, and `--noprogress` turns it off on a terminal too. Per-item detail goes to
the absl log (`--verbosity=0`), so a quiet run still has a record of what was done.
"""

from __future__ import annotations

import sys
from typing import IO

from absl import flags

PROGRESS = flags.DEFINE_bool(
    "progress",
    True,
    "progress bars with rate and ETA (only on a terminal; --noprogress: none)",
)


def enabled(stream: IO | None = None) -> bool:
    """Whether a bar should draw on `stream` (default stderr): a terminal and not --noprogress."""
    stream = sys.stderr if stream is None else stream
    wanted = PROGRESS.value if flags.FLAGS.is_parsed() else PROGRESS.default
    isatty = getattr(stream, "isatty", None)
    return bool(wanted) and bool(isatty and isatty())


def bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    *,
    show: bool = True,
    stream: IO | None = None,
    **kwargs,
):
    """A tqdm bar over `total` units (`bar.update(n)`, `bar.close()`, or `with bar(...)`);
    a silent one (same methods, draws nothing) where `show` is False or `enabled` says no."""
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    stream = sys.stderr if stream is None else stream
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        disable=not (show and enabled(stream)),
        dynamic_ncols=True,
        smoothing=0.1,
        **kwargs,
    )
