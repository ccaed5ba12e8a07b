"""Fetch a release's public files, resumably and checked, then import them.

    jaxtalk download --release=inception_fid [--dir=DIR]

Each file of `Release.files` is fetched to `DIR/<file name>` through `<name>.part`: an
interrupted download keeps the part and the next run asks the server for the rest (an
HTTP Range request; a server that ignores it sends the whole file again). A finished file
must have the listed size and SHA-256, or it is deleted and the error names it; only then
is it renamed into place. Files already in DIR with the right checksum are not fetched
again, and a file given by path (`files=`) is checked and used where it is: offline use.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request

from absl import logging

from jaxtalk import fs, progress
from jaxtalk.convert import releases
from jaxtalk.errors import InputError

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(InputError):
    """A file that could not be fetched, or that arrived different from its release listing."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def check(path: str, spec: releases.ReleaseFile) -> str:
    """`path`'s SHA-256, after checking its size and digest against `spec` (DownloadError)."""
    size = os.path.getsize(path)
    if spec.size is not None and size != spec.size:
        raise DownloadError(f"{path}: {size} bytes, expected {spec.size} (from {spec.url})")
    digest = sha256_of(path)
    if spec.sha256 is None:
        logging.warning(
            "%s: no pinned checksum for this release file; got SHA-256 %s", path, digest
        )
    elif digest != spec.sha256.lower():
        raise DownloadError(
            f"{path}: SHA-256 {digest} does not match the release's {spec.sha256} "
            f"(from {spec.url}); the file was removed, download it again"
        )
    return digest


def fetch(spec: releases.ReleaseFile, directory: str) -> str:
    """`spec`'s file in `directory`: kept if already there and correct, else (re)fetched,
    resuming a partial download; checked before it takes its final name."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, spec.filename)
    if os.path.exists(target):
        try:
            check(target, spec)
            logging.info("%s: already downloaded and checked", target)
            return target
        except DownloadError:
            os.remove(target)  # a stale or damaged copy: fetch it anew
    part = target + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    if spec.size is not None and have > spec.size:
        os.remove(part)
        have = 0
    if spec.size is None or have < spec.size:
        _transfer(spec, part, have)
    try:
        check(part, spec)
    except DownloadError:
        os.remove(part)  # a wrong file cannot be resumed into a right one
        raise
    os.replace(part, target)
    return target


def _transfer(spec: releases.ReleaseFile, part: str, have: int) -> None:
    """Appends the rest of `spec`'s file (from byte `have`) to `part`."""
    headers = {"User-Agent": "jaxtalk-download"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(spec.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if have and response.status != 206:  # the server ignored the range: start over
                have = 0
            with (
                open(part, "ab" if have else "wb") as out,
                progress.bar(spec.size, spec.filename, "B", unit_scale=True, initial=have) as bar,
            ):
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{spec.url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"{spec.url}: download interrupted at {_size(part)} bytes ({reason}); "
            "run the same command again to resume"
        ) from None
    if spec.size is not None and _size(part) < spec.size:
        raise DownloadError(
            f"{spec.url}: download interrupted at {_size(part)} of {spec.size} bytes; "
            "run the same command again to resume"
        )


def _size(path: str) -> int:
    return os.path.getsize(path) if os.path.exists(path) else 0


def download_release(
    release: str | releases.Release,
    directory: str | None = None,
    *,
    files: dict[str, str] | None = None,
    output: str | None = None,
    weights_dir: str | None = None,
) -> str:
    """Fetches (or takes from `files`, option -> local path) every file of `release`, checks
    them and imports the release; returns the weights file written.

    `directory` defaults to `$JAXTALK_CACHE/downloads/<release>` (~/.cache/jaxtalk/...).
    """
    spec = release if isinstance(release, releases.Release) else releases.find_release(release)
    if not spec.files:
        raise DownloadError(
            f"release {spec.name!r} lists no public files to download (it comes from: "
            f"{spec.source}); fetch it yourself and run `{spec.command()}`"
        )
    given = dict(files or {})
    unknown = sorted(set(given) - {f.option for f in spec.files})
    if unknown:
        raise DownloadError(
            f"--{unknown[0]}: release {spec.name!r} takes "
            + " ".join(f"--{f.option}" for f in spec.files)
        )
    directory = directory or os.path.join(fs.cache_root(), "downloads", spec.name)
    paths = {}
    for file in spec.files:
        if file.option in given:  # offline: the user's copy, checked where it is
            if not os.path.isfile(given[file.option]):
                raise DownloadError(f"--{file.option}={given[file.option]}: no such file")
            check(given[file.option], file)
            paths[file.option] = given[file.option]
        else:
            paths[file.option] = fetch(file, directory)
    if spec.converter:
        checkpoint = paths.pop("checkpoint")
        return releases.import_release(
            spec.name, checkpoint, output=output, weights_dir=weights_dir, **paths
        )
    raise DownloadError(f"release {spec.name!r} has no converter module")  # not found by name
