"""Batch animation (jaxtalk/inference/batch.py and `jaxtalk animate --sources/--drivings|
--batch`): job lists, resuming, failures counted, and 3 sources x 2 drivings on two devices."""

import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxtalk.convert import weights
from jaxtalk.errors import InputError
from jaxtalk.inference import batch
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video, write_video
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.train.grouped_init import grouped_initializers
from tests import cli_processes
from tests.train.helpers import REPO, cli_env

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


def test_csv_rows_headers_relative_paths_and_default_outputs(tmp_path):
    (tmp_path / "jobs.csv").write_text(
        "source,driving,out\n# a comment\n\na.png,talk.mp4\n/abs/b.png,x/talk2.mp4,done/b.mp4\n"
    )
    jobs = batch.jobs_from_csv(str(tmp_path / "jobs.csv"), str(tmp_path / "out"))
    assert jobs == [
        batch.Job(
            str(tmp_path / "a.png"), str(tmp_path / "talk.mp4"), str(tmp_path / "out/a__talk.mp4")
        ),
        batch.Job("/abs/b.png", str(tmp_path / "x/talk2.mp4"), str(tmp_path / "done/b.mp4")),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.png\n", r"jobs.csv:1: expected source,driving\[,out\]"),
        ("a.png,t.mp4\nb.png,t.mp4,a,b\n", r"jobs.csv:2: expected"),
        ("a.png,t.mp4\nd/a.png,t.mp4\n", r"jobs.csv:2 and .*jobs.csv:1 both write .*a__t.mp4"),
        ("# nothing\n", r"jobs.csv: no jobs"),
    ],
)
def test_bad_job_lists_name_the_file_and_row(tmp_path, text, message):
    (tmp_path / "jobs.csv").write_text(text)
    with pytest.raises(batch.BatchListError, match=message):
        batch.jobs_from_csv(str(tmp_path / "jobs.csv"), str(tmp_path / "out"))


def test_globs_pair_every_source_with_every_driver(tmp_path):
    for name in ("a.png", "b.png", "t1.mp4", "t2.wav"):
        (tmp_path / name).write_bytes(b"x")
    jobs = batch.jobs_from_globs(f"{tmp_path}/*.png", f"{tmp_path}/t1.*,{tmp_path}/t2.*", "o")
    assert [os.path.basename(j.out) for j in jobs] == [
        "a__t1.mp4",
        "a__t2.mp4",
        "b__t1.mp4",
        "b__t2.mp4",
    ]
    with pytest.raises(batch.BatchListError, match=r"--drivings=.*\*.mov: matches no file"):
        batch.jobs_from_globs(f"{tmp_path}/*.png", f"{tmp_path}/*.mov", "o")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "a__t1.mp4").write_bytes(b"done")
    jobs = batch.jobs_from_globs(f"{tmp_path}/*.png", f"{tmp_path}/t*", str(tmp_path / "o"))
    assert len(batch.pending(jobs)) == 3
    assert [j.out for j in batch.pending(jobs, 1, 2)] == [jobs[2].out]  # process 1 of 2


def test_run_spreads_jobs_over_devices_and_counts_bad_inputs():
    jobs = [batch.Job(f"s{i}", "d", f"o{i}") for i in range(6)]
    seen = []

    def make_worker(device):
        def work(job):
            seen.append((device, jnp.zeros(()).devices().pop()))
            if job.out == "o3":
                raise InputError("s3: no such file")
            return 7

        return work

    done = []
    summary = batch.run(jobs, make_worker, jax.devices()[:2], lambda j, n: done.append(n))
    assert summary["written"] == 5 and summary["frames"] == 35
    assert (
        summary["failed"] == {"InputError": 1} and "o3: s3: no such file" in summary["examples"][0]
    )
    assert sorted(done) == [0, 7, 7, 7, 7, 7]
    assert sum(summary["per_device"].values()) == 5
    # Each worker's arrays live on its own device (jax.default_device in its thread).
    assert len(seen) == 6 and all(worker == placed for worker, placed in seen)

    def broken(device):
        def work(job):
            raise RuntimeError("a bug")

        return work

    with pytest.raises(RuntimeError, match="a bug"):
        batch.run(jobs, broken, jax.devices()[:2])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    x = jnp.zeros((1, 32, 32, 3))
    params = nn.meta.unbox(
        jax.jit(grouped_initializers(LIAGenerator(**TINY).init))(jax.random.PRNGKey(3), x, x)[
            "params"
        ]
    )
    weights.save(
        {"params": params, "model_config": dict(TINY, kind="lia")},
        str(d / "lia.safetensors"),
        release="lia",
    )
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), np.uint8)).save(d / f"face{i}.png")
    for i, n in enumerate((5, 7)):
        frames = rng.integers(0, 255, (n, 36, 36, 3), np.uint8)
        audio = rng.uniform(-0.3, 0.3, n * 640).astype(np.float32) if i == 0 else None
        write_video(d / f"talk{i}.mp4", frames, 25.0, audio=audio)
    return d


def _animate(d, *flags):
    return cli_processes.run(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "animate",
            f"--weights={d / 'lia.safetensors'}",
            "--nocrop_face",
            "--chunk=4",
            *flags,
        ],
        cwd=REPO,
        env=cli_env(2),
        timeout=600,
    )


def test_three_sources_by_two_drivings_write_six_videos_and_a_rerun_none(media):
    out = media / "out"
    flags = (f"--sources={media}/face*.png", f"--drivings={media}/talk*.mp4", f"--out_dir={out}")
    proc = _animate(media, *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 jobs: 0 already written, 6 to do in this process on 2 device(s)" in proc.stdout
    assert "wrote 6 videos (36 frames); failed 0" in proc.stdout, proc.stdout
    assert re.search(r"6/6 \[", proc.stderr), proc.stderr[-500:]  # the one tqdm bar
    written = sorted(os.listdir(out))
    assert written == [f"face{i}__talk{j}.mp4" for i in range(3) for j in range(2)]
    for name in written:
        frames, _ = read_video(out / name)
        assert frames.shape == ((5, 32, 32, 3) if name.endswith("talk0.mp4") else (7, 32, 32, 3))
    assert (
        probe(out / "face0__talk0.mp4").has_audio and not probe(out / "face0__talk1.mp4").has_audio
    )
    stamps = {n: os.stat(out / n).st_mtime_ns for n in written}

    again = _animate(media, *flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 jobs: 6 already written, 0 to do" in again.stdout
    assert {n: os.stat(out / n).st_mtime_ns for n in written} == stamps


def test_csv_batch_counts_a_missing_source_and_writes_the_rest(media, tmp_path):
    (tmp_path / "jobs.csv").write_text(
        f"{media}/face0.png,{media}/talk0.mp4,a.mp4\n{media}/nope.png,{media}/talk0.mp4,b.mp4\n"
    )
    proc = _animate(media, f"--batch={tmp_path / 'jobs.csv'}", "--devices=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote 1 videos (5 frames); failed 1 (" in proc.stdout, proc.stdout
    assert "nope.png" in proc.stdout
    assert (tmp_path / "a.mp4").exists() and not (tmp_path / "b.mp4").exists()
