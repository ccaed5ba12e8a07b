"""Prepares, on this machine, what the suite's GPU run needs to take along, and prints the
device tool's `run` call that does the whole run (benchmarks/gpu/run.sh) there.

  python benchmarks/gpu/prepare.py --lia=/path/to/LIA --liveportrait=/path/to/LivePortrait

The GPU machine (one H200; python3 3.12 with torch, jax with its CUDA plugin, flax, optax,
orbax-checkpoint, numpy, scipy, opencv, pillow, ...) reaches no network. What jaxtalk and
the suite's benchmarks import and its image lacks (CARRIED) travels as wheels, downloaded
here for CPython 3.12 on manylinux x86-64 at the versions this environment runs, into the
ignored folder .whl/ (one version each: stale ones are removed). The official code the
torch sides run travels as source in the ignored folder .refs/: LIA's networks/ and
LivePortrait's src/ (Python files and their licences; no weights, no media). Both are
named in the call's `carry`; jaxtalk itself is not installed there, the run puts the
repository on PYTHONPATH. The working tree that travels (tracked and untracked files git
does not ignore, plus what is carried) must stay under 64 MiB: this script stops above
LIMIT_MIB.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEELS, REFS = ".whl", ".refs"
LIMIT_MIB = 48  # of the 64 MiB that may travel
RUN = "bash benchmarks/gpu/run.sh"
TIMEOUT_S = 600  # the run tool's most; run.sh ends the suite well before

# What the suite's path imports that the image lacks (its package list: grain's loaders and
# their records for data_loader; the rest through jaxtalk's and data_pipelines' imports).
CARRIED = {
    "grain": "data_pipelines' loaders",
    "array-record": "the records grain reads (grain needs it)",
    "ml-collections": "configs and the loaders' data config",
    "ffmpeg-python": "jaxtalk.media's ffmpeg calls (imported by data_pipelines)",
    "future": "ffmpeg-python needs it",
    "simplejpeg": "the loaders' JPEG decode",
    "portpicker": "grain needs it",
}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def download_wheels() -> list[str]:
    """The CARRIED wheels in .whl/, at this environment's versions, for CPython 3.12."""
    target = os.path.join(ROOT, WHEELS)
    os.makedirs(target, exist_ok=True)
    wanted = {name: importlib.metadata.version(name) for name in CARRIED}
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", target,
         *(f"{name}=={version}" for name, version in wanted.items())],
        check=True,
    )  # fmt: skip
    kept = []
    for path in sorted(glob.glob(os.path.join(target, "*.whl"))):
        name, version = os.path.basename(path).split("-")[:2]
        wanted_version = wanted.get(_canonical(name))
        if wanted_version is None or version != wanted_version:
            os.remove(path)  # another package or another version: two stop the install
        else:
            kept.append(path)
    missing = set(wanted) - {_canonical(os.path.basename(p).split("-")[0]) for p in kept}
    if missing:
        raise SystemExit(f"no wheel for {', '.join(sorted(missing))} in {target}")
    return kept


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def copy_reference(source: str, name: str, parts: tuple[str, ...]) -> str:
    """The checkout's `parts` (folders: their .py files; files as they are) in .refs/<name>."""
    target = os.path.join(ROOT, REFS, name)
    shutil.rmtree(target, ignore_errors=True)
    for part in parts:
        path = os.path.join(source, part)
        if os.path.isfile(path):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(path, target)
        elif os.path.isdir(path):
            shutil.copytree(path, os.path.join(target, part),
                            ignore=lambda d, names: [n for n in names if _not_source(d, n)])  # fmt: skip
        elif not part.startswith("LICENSE"):
            raise SystemExit(f"{source}: no {part} (is it the official {name} checkout?)")
    return target


def _not_source(folder: str, name: str) -> bool:
    return not (os.path.isdir(os.path.join(folder, name)) or name.endswith(".py"))


def travelling_bytes() -> int:
    """Tracked and untracked-not-ignored files, plus the carried folders."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    total = sum(os.path.getsize(os.path.join(ROOT, p)) for p in listed if p and
                os.path.isfile(os.path.join(ROOT, p)))  # fmt: skip
    for folder in (WHEELS, REFS):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def check_ignored():
    """The carried folders must be ignored by git (carry takes ignored paths only)."""
    for folder in (WHEELS, REFS):
        os.makedirs(os.path.join(ROOT, folder), exist_ok=True)
        if subprocess.run(["git", "check-ignore", "-q", folder], cwd=ROOT).returncode:
            raise SystemExit(f"{folder}/ is not ignored by git: add it to .gitignore")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lia", required=True, help="the official LIA checkout")
    ap.add_argument("--liveportrait", required=True, help="the official LivePortrait checkout")
    args = ap.parse_args()
    check_ignored()
    wheels = download_wheels()
    lia = copy_reference(args.lia, "LIA", ("networks", "LICENSE.md"))
    lp = copy_reference(args.liveportrait, "LivePortrait", ("src", "LICENSE"))
    for path in wheels:
        print(f"{os.path.getsize(path) / 2**20:7.2f} MiB  {os.path.relpath(path, ROOT)}")
    print(f"references: {os.path.relpath(lia, ROOT)}, {os.path.relpath(lp, ROOT)}")
    total = travelling_bytes() / 2**20
    print(f"travelling: {total:.1f} MiB of the 64 MiB limit")
    if total > LIMIT_MIB:
        raise SystemExit(f"{total:.1f} MiB would travel: more than {LIMIT_MIB} MiB")
    call = {"command": RUN, "carry": [WHEELS, REFS], "timeout_s": TIMEOUT_S}
    assert len(call["command"]) < 2000
    print("the device tool's run call:")
    print(json.dumps(call))


if __name__ == "__main__":
    main()
