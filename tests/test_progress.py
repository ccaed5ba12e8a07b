"""One progress bar for the long commands: rate and ETA on a terminal, nothing elsewhere."""

import io
import re
import sys

from jaxtalk import progress
from tests.terminal import run_in_terminal
from tests.train.helpers import REPO, cli_env

# tqdm's right part: "n/total [elapsed<remaining, rate]".
BAR = r"(\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?(?:{unit}/s|s/{unit})\]"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_bar_draws_rate_and_eta_on_a_terminal_only():
    for stream, draws in ((_Terminal(), True), (io.StringIO(), False)):
        with progress.bar(3, "work", unit="clip", stream=stream) as bar:
            for _ in range(3):
                bar.update(1)
        assert bool(re.search(BAR.format(unit="clip"), stream.getvalue())) == draws
    shown = _Terminal()
    with progress.bar(3, "work", stream=shown, show=False) as bar:
        bar.update(3)
    assert shown.getvalue() == ""


TINY_PREPARE = (
    "--num_identities=2",
    "--videos_per_identity=1",
    "--utterances_per_video=2",
    "--utterance_seconds=1.2",
    "--raw_resolution=64",
    "--size=16",
    "--clips_per_shard=2",
)


def test_prepare_bar_counts_clips_on_a_terminal_and_not_with_noprogress(tmp_path):
    def prepare(out, *extra):
        args = [sys.executable, "-m", "jaxtalk.cli", "prepare", "synthetic", f"--out_dir={out}"]
        return run_in_terminal(args + list(TINY_PREPARE) + list(extra), env=cli_env(1), cwd=REPO)

    rc, text = prepare(tmp_path / "a")
    assert rc == 0, text
    done = re.findall(BAR.format(unit="clip"), text)
    assert done and done[-1] == ("4", "4"), text  # every clip counted
    assert "synthetic: 4 clips" in text  # the final report is still printed
    rc, text = prepare(tmp_path / "b", "--noprogress")
    assert rc == 0 and not re.search(BAR.format(unit="clip"), text), text
    assert "synthetic: 4 clips" in text
