"""`jaxtalk download` against an HTTP server on localhost: resumable, checked, imported."""

import dataclasses
import hashlib
import http.server
import re
import threading

import numpy as np
import pytest

from jaxtalk.convert import download, releases, weights
from tests.test_cli import jaxtalk
from tests.test_toy_family import PLUGIN, _released_checkpoint


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET with Range support; `cut_at` ends the next response early (a dropped
    connection), `ranges` records what each request asked for."""

    def do_GET(self):  # noqa: N802  (http.server's name)
        server = self.server
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        server.ranges.append(asked)
        start = 0
        if asked and server.honour_ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        end = len(body)
        if server.cut_at is not None:
            end, server.cut_at = server.cut_at, None
        self.wfile.write(body[start:end])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.ranges, httpd.cut_at, httpd.honour_ranges = {}, [], None, True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """(the toy release's checkpoint bytes, the release found through its plugin)."""
    monkeypatch.setenv("JAXTALK_PLUGINS", PLUGIN["JAXTALK_PLUGINS"])
    path = tmp_path / "released.pt"
    _released_checkpoint(str(path))
    return path.read_bytes(), releases.find_release("toy_portrait")


def _served(server, spec, body, sha256=None):
    """`spec` with its checkpoint listed at the server's URL."""
    server.files["/toy/released.pt"] = body
    url = f"http://127.0.0.1:{server.server_address[1]}/toy/released.pt"
    digest = sha256 or hashlib.sha256(body).hexdigest()
    listed = releases.ReleaseFile("checkpoint", url, len(body), digest)
    return dataclasses.replace(spec, files=(listed,))


def _params(path):
    return weights.load(path)["params"]


def test_interrupted_download_resumes_and_imports(server, toy, tmp_path):
    body, spec = toy
    spec = _served(server, spec, body)
    server.cut_at = len(body) // 2
    with pytest.raises(download.DownloadError, match="interrupted at .* run the same command"):
        download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    part = tmp_path / "dl" / "released.pt.part"
    assert part.stat().st_size == len(body) // 2
    out = download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    assert server.ranges == [None, f"bytes={len(body) // 2}-"]  # the rest, not the whole
    assert (tmp_path / "dl" / "released.pt").read_bytes() == body and not part.exists()
    direct = releases.import_release(
        "toy_portrait", str(tmp_path / "released.pt"), output=str(tmp_path / "direct.st")
    )
    for got, want in zip(_leaves(_params(out)), _leaves(_params(direct)), strict=True):
        np.testing.assert_array_equal(got, want)
    # A second run finds the checked file and fetches nothing.
    download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    assert len(server.ranges) == 2


def test_server_ignoring_the_range_restarts_the_file(server, toy, tmp_path):
    body, spec = toy
    spec = _served(server, spec, body)
    server.cut_at, server.honour_ranges = 100, False
    with pytest.raises(download.DownloadError, match="interrupted"):
        download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    assert server.ranges == [None, "bytes=100-"]  # asked for the rest, got the whole file
    assert (tmp_path / "dl" / "released.pt").read_bytes() == body


def test_wrong_checksum_is_an_error_naming_the_file(server, toy, tmp_path):
    body, spec = toy
    spec = _served(server, spec, body, sha256="0" * 64)
    with pytest.raises(download.DownloadError) as e:
        download.download_release(spec, str(tmp_path / "dl"), output=str(tmp_path / "w.st"))
    assert str(tmp_path / "dl" / "released.pt.part") in str(e.value)
    assert "SHA-256" in str(e.value) and "0" * 64 in str(e.value)
    assert not (tmp_path / "dl" / "released.pt.part").exists()  # not resumed into next time
    assert not (tmp_path / "dl" / "released.pt").exists() and not (tmp_path / "w.st").exists()


def test_offline_with_the_file_given_by_path(toy, tmp_path):
    body, spec = toy
    given = tmp_path / "released.pt"
    listed = releases.ReleaseFile(
        "checkpoint",
        "http://127.0.0.1:9/unreachable.pt",
        len(body),
        hashlib.sha256(body).hexdigest(),
    )
    spec = dataclasses.replace(spec, files=(listed,))
    out = download.download_release(
        spec, str(tmp_path / "dl"), files={"checkpoint": str(given)}, output=str(tmp_path / "w.st")
    )
    assert set(_params(out)) == {"net_0", "net_2"}
    given.write_bytes(body[:-1] + b"x")  # same size, other bytes
    with pytest.raises(download.DownloadError, match=re.escape(str(given)) + ": SHA-256"):
        download.download_release(spec, files={"checkpoint": str(given)})
    with pytest.raises(download.DownloadError, match="--backbone: release 'toy_portrait' takes"):
        download.download_release(spec, files={"backbone": str(given)})


def test_unreachable_server_is_one_line_error(toy, tmp_path):
    body, spec = toy
    listed = releases.ReleaseFile("checkpoint", "http://127.0.0.1:9/x.pt", len(body), "0" * 64)
    with pytest.raises(download.DownloadError, match="http://127.0.0.1:9/x.pt"):
        download.download_release(dataclasses.replace(spec, files=(listed,)), str(tmp_path))


def test_download_command_fetches_checks_and_imports(server, toy, tmp_path):
    body, spec = toy
    listed = _served(server, spec, body).files[0]
    env = dict(
        PLUGIN, TOY_RELEASE_URL=listed.url, TOY_RELEASE_SIZE=str(len(body)), TOY_RELEASE_SHA256=""
    )
    ok = jaxtalk(
        "download",
        "--release=toy_portrait",
        f"--dir={tmp_path / 'dl'}",
        f"--out={tmp_path / 'w.safetensors'}",
        env=dict(env, TOY_RELEASE_SHA256=listed.sha256),
    )
    assert ok.returncode == 0, ok.stderr
    assert f"imported toy_portrait -> {tmp_path / 'w.safetensors'}" in ok.stdout
    assert set(_params(str(tmp_path / "w.safetensors"))) == {"net_0", "net_2"}
    bad = jaxtalk(
        "download",
        "--release=toy_portrait",
        f"--dir={tmp_path / 'dl2'}",
        env=dict(env, TOY_RELEASE_SHA256="f" * 64),
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxtalk download: error: ") and "released.pt" in last, bad.stderr
    listing = jaxtalk("download", "--list", env=dict(env, TOY_RELEASE_SHA256=listed.sha256))
    assert listed.url in listing.stdout and listed.sha256 in listing.stdout


def test_listed_checksums_are_well_formed_and_agree_with_hashed_names():
    """torchvision and pytorch-fid put the first hex digits of a file's SHA-256 in its
    name: a mistyped listed digest would disagree with it."""
    named = 0
    for spec in releases.releases().values():
        for f in spec.files:
            assert f.url.startswith("https://"), f
            assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
            assert f.option in ("checkpoint", *spec.extra_files), (spec.name, f)
            prefix = re.search(r"-([0-9a-f]{8})\.pth$", f.filename)
            if prefix and f.sha256:
                assert f.sha256.startswith(prefix.group(1)), f
                named += 1
        if spec.files:
            assert {f.option for f in spec.files} == {"checkpoint", *spec.extra_files}, spec
    assert named >= 5  # vgg16 (twice), vgg19, alexnet, inception


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    else:
        yield np.asarray(tree)
