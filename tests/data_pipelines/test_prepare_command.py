"""`jaxtalk prepare` through absl.app.run, as the CLI dispatcher calls it."""

import json
import os

import pytest
from absl import app

from jaxtalk.commands import prepare
from jaxtalk.errors import InputError


def test_prepare_synthetic_command(tmp_path, capsys):
    out = str(tmp_path / "synthetic")
    argv = [
        "jaxtalk prepare",
        "synthetic",
        f"--out_dir={out}",
        "--size=16",
        "--num_identities=2",
        "--videos_per_identity=1",
        "--utterances_per_video=1",
        "--utterance_seconds=1.2",
        "--raw_resolution=96",
        "--clips_per_shard=1",
    ]
    with pytest.raises(SystemExit) as exit_info:
        app.run(prepare.main, argv=argv)
    assert exit_info.value.code in (None, 0)
    with open(os.path.join(out, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["name"] == "synthetic" and info["num_clips"] == 2
    assert info["splits"]["train"]["num_clips"] == 1 and info["splits"]["test"]["num_clips"] == 1
    assert os.path.exists(os.path.join(out, "raw", "vox2_dev_txt.zip"))
    assert "synthetic: 2 clips" in capsys.readouterr().out
    assert prepare.__doc__ and "jaxtalk prepare synthetic" in prepare.__doc__


def test_prepare_rejects_unknown_dataset():
    with pytest.raises(InputError, match="unknown dataset"):
        prepare.main(["jaxtalk prepare", "imagenet"])
