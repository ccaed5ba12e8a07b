"""Weights files and run configs written under a model's earlier name still load, under
today's name (the one mapping, jaxtalk/convert/weights.py)."""

import json
import os

import numpy as np
import pytest

from jaxtalk.convert import weights
from jaxtalk.train import checkpoints


@pytest.mark.parametrize("old,new", sorted(weights._RENAMED.items()))
def test_weights_file_kind(tmp_path, old, new):
    path = weights.save(
        {"params": {"w": np.ones(2, np.float32)}, "model_config": {"kind": old}},
        tmp_path / "w.safetensors",
    )
    assert weights.load(path)["model_config"]["kind"] == new


@pytest.mark.parametrize("old,new", sorted(weights._RENAMED.items()))
def test_run_config_task(tmp_path, monkeypatch, old, new):
    os.makedirs(tmp_path / "config")
    (tmp_path / "config" / "metadata").write_text(json.dumps({"task": old, "model": {}}))
    monkeypatch.setattr(checkpoints, "_step_dir", lambda workdir, step: str(tmp_path))
    assert checkpoints.run_config("run")["task"] == new


def test_current_names_pass_through():
    assert weights.current_name("lia") == "lia"
    assert weights.current_name("anitalker_stage1") == "anitalker_stage1"
