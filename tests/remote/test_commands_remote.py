"""Commands on gs:// paths served by the local Cloud Storage emulator: the same code path as a
real bucket (gcsfs, tensorstore's GCS driver), with every client pointed at localhost."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxtalk import fs
from jaxtalk.convert import torch_pickle
from jaxtalk.media import video
from tests.test_cli import jaxtalk
from tests.test_toy_family import PLUGIN, _released_checkpoint
from tests.train.helpers import REPO, run_cli, train_command


def _no_local_gs_directory():
    assert not os.path.exists(os.path.join(REPO, "gs:")), "a gs:// path was made local"


def _png(image) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_remote_emulator_import_export_and_animate(gcs, tmp_path):
    sd = _released_checkpoint(fs.join(gcs, "released", "toy.pt"))  # straight to the bucket
    imported = jaxtalk(
        "import",
        "--release=toy_portrait",
        f"--checkpoint={gcs}/released/toy.pt",
        f"--out={gcs}/weights/toy.safetensors",
        env=PLUGIN,
    )
    assert imported.returncode == 0, imported.stderr
    exported = jaxtalk(
        "export",
        f"--weights={gcs}/weights/toy.safetensors",
        "--release=toy_portrait",
        f"--out={gcs}/back/toy.pt",
        env=PLUGIN,
    )
    assert exported.returncode == 0, exported.stderr
    back = torch_pickle.load_state_dict(f"{gcs}/back/toy.pt")
    assert list(back) == list(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v)
    # Media in and out of the bucket too (ffmpeg works on local copies).
    rng = np.random.default_rng(1)
    fs.write_bytes(f"{gcs}/media/face.png", _png(rng.integers(0, 256, (8, 8, 3), np.uint8)))
    video.write_video(tmp_path / "drive.mp4", rng.integers(0, 256, (3, 32, 32, 3), np.uint8), 25)
    fs.copy(str(tmp_path / "drive.mp4"), f"{gcs}/media/drive.mp4")
    animated = jaxtalk(
        "animate", f"--weights={gcs}/weights/toy.safetensors", f"--source={gcs}/media/face.png",
        f"--driving={gcs}/media/drive.mp4", "--nocrop_face", f"--out={gcs}/out/talk.mp4",
        env=PLUGIN,
    )  # fmt: skip
    assert animated.returncode == 0, animated.stderr[-2000:]
    with fs.local_file(f"{gcs}/out/talk.mp4") as local:
        frames, _ = video.read_video(local)
    assert frames.shape == (3, 8, 8, 3)
    missing = jaxtalk("import", "--release=toy_portrait", f"--checkpoint={gcs}/nope.pt", env=PLUGIN)
    assert missing.returncode == 2 and f"{gcs}/nope.pt" in missing.stderr
    assert "Traceback" not in missing.stderr
    _no_local_gs_directory()


def _metrics(workdir):
    text = fs.read_text(fs.join(workdir, "metrics.jsonl"))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_remote_emulator_train_killed_then_resumed(gcs):
    workdir = f"{gcs}/runs/toy"
    run_cli(
        train_command(workdir, "--config.total_steps=40", "--config.log.tensorboard=True",
                      "--config.profile.start_step=2", "--config.profile.num_steps=1")
    )  # fmt: skip
    assert fs.listdir(fs.join(workdir, "checkpoints")) == ["20", "40"]
    assert fs.listdir(fs.join(workdir, "tensorboard"))  # event files in the bucket
    # the profiler's trace, written locally and copied into the bucket when it stopped
    traces = fs.join(workdir, "profile", "process_0", "plugins", "profile")
    (run,) = fs.listdir(traces)
    assert any(name.endswith(".xplane.pb") for name in fs.listdir(fs.join(traces, run)))
    # A longer run in the same directory resumes from step 40: it is the continuation.
    run_cli(train_command(workdir))
    steps = [r["step"] for r in _metrics(workdir) if "model/loss" in r]
    assert steps == [10, 20, 30, 40, 50, 60], steps  # appended across runs, none repeated
    assert fs.listdir(fs.join(workdir, "checkpoints"))[-1] == "60"
    _no_local_gs_directory()


def test_remote_emulator_first_save_killed_half_written_then_restarted(gcs):
    """A run killed during its first save leaves step 1 without orbax's commit file, the only
    objects under checkpoints/. The restart deletes it before listing the steps (the folder
    then no longer exists: a bucket has folders only through their objects), finds none and
    saves afresh."""
    from configs import toy_regression
    from jaxtalk.train import checkpoints

    workdir = f"{gcs}/runs/killed"
    unfinished = fs.join(workdir, "checkpoints", "1")
    for i in range(40):  # enough objects that deleting them takes a while
        fs.write_bytes(fs.join(unfinished, "state", f"part{i}"), b"half")
    with pytest.raises(ValueError, match=r"no checkpoints in .* \(incomplete: steps \[1\]\)"):
        checkpoints.resolve_step(workdir)  # eval of the killed run: nothing complete to read
    config = toy_regression.get_config("tiny")
    config.checkpoint.async_save = False
    restarted = checkpoints.Checkpointer(workdir, config)
    assert restarted.manager.all_steps() == []
    assert not fs.exists(unfinished)  # gone before the run goes on, not in the background
    restarted.save(1, {"w": np.arange(3.0)}, {"epoch": 0})
    restarted.close()
    again = checkpoints.Checkpointer(workdir, config)
    assert again.manager.all_steps() == [1]
    again.close()


def test_remote_emulator_a_save_in_progress_is_not_a_saved_step(gcs, capsys):
    """On a bucket orbax writes a step in place and marks it complete with a commit file
    written last: a step still being written (a run training while it is evaluated) is not
    among the run's steps; it is reported as incomplete, not read or reported damaged."""
    from configs import toy_regression
    from jaxtalk.train import checkpoints

    workdir = f"{gcs}/runs/live"
    config = toy_regression.get_config("tiny")
    config.checkpoint.async_save = False
    run = checkpoints.Checkpointer(workdir, config)
    run.save(1, {"params": {"model": {"w": np.arange(3.0)}}}, {"epoch": 0})
    run.close()
    fs.write_bytes(fs.join(workdir, "checkpoints", "2", "state", "part0"), b"half")
    assert checkpoints.saved_steps(workdir) == [1]
    assert checkpoints.resolve_step(workdir) == 1
    w = checkpoints.group_variables(workdir, "model")["params"]["w"]
    np.testing.assert_array_equal(w, np.arange(3.0))
    err = capsys.readouterr().err
    assert "cannot be restored" not in err
    assert f"checkpoint steps [2] in {workdir}/checkpoints are incomplete" in err
