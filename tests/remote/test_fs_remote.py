"""jaxtalk.fs on local paths and on gs:// served by the local emulator."""

import os

import pytest

from jaxtalk import fs


def test_remote_paths_are_never_made_local():
    assert fs.absolute("gs://b/runs/s1/") == "gs://b/runs/s1"
    assert fs.join("gs://b/runs", "s1", "metrics.jsonl") == "gs://b/runs/s1/metrics.jsonl"
    assert fs.dirname("gs://b/runs/s1") == "gs://b/runs"
    assert fs.is_remote("s3://b/x") and not fs.is_remote("runs/s1")
    assert fs.absolute("file:///tmp/x") == "/tmp/x"
    assert fs.absolute("runs/s1") == os.path.abspath("runs/s1")


@pytest.fixture(params=["local", "emulator"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path)
    return request.getfixturevalue("gcs")


def test_remote_emulator_read_write_list(root):
    d = fs.join(root, "a", "b")
    fs.makedirs(d)
    fs.write_text(fs.join(d, "x.json"), '{"k": 1}')
    fs.write_bytes(fs.join(d, "y.bin"), b"\x00\x01")
    assert fs.listdir(d) == ["x.json", "y.bin"]
    assert fs.read_json(fs.join(d, "x.json")) == {"k": 1}
    assert fs.size(fs.join(d, "y.bin")) == 2
    assert fs.isdir(fs.join(root, "a")) and fs.isfile(fs.join(d, "y.bin"))
    assert fs.glob(d, "*.json") == [fs.join(d, "x.json")]
    fs.remove(fs.join(d, "y.bin"))
    assert not fs.exists(fs.join(d, "y.bin"))


def test_remote_emulator_append_file_keeps_earlier_content(root):
    path = fs.join(root, "metrics.jsonl")
    with fs.AppendFile(path) as f:
        f.write("one\n")
    with fs.AppendFile(path, flush_seconds=0) as f:
        f.write("two\n")
        f.flush()
        assert fs.read_text(path) == "one\ntwo\n"  # flushed before close
        f.write("three\n")
    assert fs.read_text(path) == "one\ntwo\nthree\n"


def test_remote_emulator_local_copies(root, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTALK_CACHE", str(tmp_path / "cache"))
    fs.write_bytes(fs.join(root, "d", "w.bin"), b"abc")
    fs.write_bytes(fs.join(root, "d", "sub", "v.bin"), b"de")
    with fs.local_file(fs.join(root, "d", "w.bin")) as local:
        assert open(local, "rb").read() == b"abc"
    local = fs.local_dir(fs.join(root, "d"))
    assert open(os.path.join(local, "sub", "v.bin"), "rb").read() == b"de"
    if fs.is_remote(root):
        assert local.startswith(str(tmp_path / "cache"))


def test_remote_emulator_faults_are_one_line_naming_the_path(root):
    missing = fs.join(root, "nope.txt")
    with pytest.raises(fs.FileSystemError, match="nope.txt: cannot read") as e:
        fs.read_text(missing)
    assert "\n" not in str(e.value)
    with pytest.raises(fs.FileSystemError, match="nope: cannot read: no such directory"):
        fs.local_dir(fs.join(root, "nope"))
