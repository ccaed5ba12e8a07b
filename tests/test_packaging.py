"""What `pip install jaxtalk` brings: no TensorFlow stack without the `tfds` extra, a clear
error naming the extra where a feature needs it, the license files."""

import importlib
import os
import sys

import pytest
import setuptools

from data_pipelines import info as info_lib
from jaxtalk import optional
from tests.train.helpers import REPO


def _setup_kwargs(monkeypatch) -> dict:
    """The arguments setup.py gives setuptools.setup (run in the repository, not installed)."""
    seen = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: seen.update(kw))
    monkeypatch.chdir(REPO)
    with open(os.path.join(REPO, "setup.py")) as f:
        exec(compile(f.read(), "setup.py", "exec"), {"__name__": "__main__"})
    return seen


def test_tensorflow_datasets_is_an_extra_not_a_requirement(monkeypatch):
    kw = _setup_kwargs(monkeypatch)
    core = " ".join(kw["install_requires"])
    assert "tensorflow" not in core
    for extra in ("tfds", "dev"):  # CI installs dev and so keeps testing the builders
        assert any(r.startswith("tensorflow-datasets") for r in kw["extras_require"][extra])
    import jaxtalk

    assert kw["version"] == jaxtalk.__version__ and kw["license"] == "Apache-2.0"
    assert set(kw["license_files"]) == {"LICENSE", "NOTICE"}


def test_license_files():
    text = open(os.path.join(REPO, "LICENSE")).read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
    notice = open(os.path.join(REPO, "NOTICE")).read()
    for upstream in ("LIA", "AniTalker", "LPIPS", "torchvision", "pytorch-fid", "SyncNet"):
        assert upstream in notice, upstream


def test_without_tfds_its_users_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "data_pipelines.tfds_builders", raising=False)
    with pytest.raises(optional.MissingDependencyError, match=r"pip install 'jaxtalk\[tfds\]'"):
        importlib.import_module("data_pipelines.tfds_builders")
    (tmp_path / info_lib.TFDS_FEATURES_FILE).write_text("{}")  # a tfds build's directory
    with pytest.raises(optional.MissingDependencyError) as e:
        info_lib.load_info(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "jaxtalk[tfds]" in str(e.value)


def test_a_broken_dependency_is_not_reported_as_missing(monkeypatch, tmp_path):
    (tmp_path / "installed_but_broken.py").write_text("import no_such_module_jaxtalk_probe\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_jaxtalk_probe"):
        optional.require("installed_but_broken", "x", "a feature")
    with pytest.raises(optional.MissingDependencyError, match=r"jaxtalk\[x\]"):
        optional.require("not_installed_jaxtalk_probe", "x", "a feature")
