"""`jaxtalk export --workdir=RUN --release=liveportrait` of trained LivePortrait runs: a
stage-1 run writes the four base-model files, a stitching run its frozen base plus
retargeting_models/stitching_retargeting_module.pth; `jaxtalk import --release=liveportrait`'s
converter reads each back to the run's own variables, bit for bit. The run's kind decides
what is exported (no --group); a group or release that cannot be exported is a one-line
error."""

import os

import jax
import numpy as np
import pytest
from absl import flags

from jaxtalk.commands import export
from jaxtalk.convert import liveportrait, releases, torch_pickle, weights
from jaxtalk.errors import InputError
from jaxtalk.train import checkpoints
from jaxtalk.train.train import train
from tests.tasks import helpers
from tests.tasks.test_liveportrait import tiny_config

BASE_FILES = sorted(n.filename for n in liveportrait.BASE_NETWORKS)


# Stage 1 without the keypoint terms: what is exported does not depend on them, and the
# step compiles faster without them.
NO_KEYPOINT_TERMS = dict(
    equivariance=0.0, keypoint_prior=0.0, head_pose=0.0, deformation_prior=0.0, landmark=0.0
)


def _config(data_dir, steps, variant="tiny", **loss):
    config = tiny_config(data_dir, steps, variant=variant, **loss)
    config.eval.every_steps = 0  # the export needs only the checkpoint
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(stage-1 run of one step, stitching run of two on it)."""
    root = tmp_path_factory.mktemp("lp_runs")
    data = helpers.prepare_synthetic(str(root / "data"))
    stage1, stage2 = str(root / "stage1"), str(root / "stage2")
    train(_config(data, 1, **NO_KEYPOINT_TERMS), stage1)
    # Two steps, as tests/tasks/test_liveportrait.py's stage 2: the same train step (the
    # schedule follows total_steps), which the suite's compilation cache compiles once.
    config = _config(data, 2, "tiny_stitching")
    config.base.workdir = stage1
    train(config, stage2)
    return stage1, stage2


def jaxtalk_export(*args: str) -> None:
    """`jaxtalk export ARGS` in this process: the command's flags parsed, then its main."""
    flags.FLAGS.unparse_flags()
    try:
        export.main(flags.FLAGS(["jaxtalk export", *args]))
    finally:
        flags.FLAGS.unparse_flags()


def reimported(directory, tmp_path) -> dict:
    """The directory through `jaxtalk import --release=liveportrait`'s converter."""
    out = str(tmp_path / f"{os.path.basename(directory)}.safetensors")
    return weights.load(releases.import_release("liveportrait", directory, output=out))


def assert_same(got, want, what):
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], what
    for (path, a), (_, b) in zip(got_leaves, want_leaves):
        assert np.asarray(a).dtype == np.asarray(b).dtype, (what, path)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{what} {path}")


def assert_base_is(back, base):
    """The re-imported base networks equal the run's generator (params and batch_stats)."""
    for net in liveportrait.BASE_NETWORKS:
        assert_same(back["params"][net.group], base["params"][net.group], net.group)
        if net.group in base["batch_stats"]:
            assert_same(back["batch_stats"][net.group], base["batch_stats"][net.group], net.group)
    assert sorted(back["batch_stats"]) == sorted(base["batch_stats"])


def test_stage1_run_exports_the_base_model(runs, tmp_path):
    stage1, _ = runs
    out = tmp_path / "lp"
    jaxtalk_export(f"--workdir={stage1}", "--release=liveportrait", f"--out={out}")
    assert sorted(os.listdir(out / "base_models")) == BASE_FILES
    assert not (out / "retargeting_models").exists()
    back = reimported(out, tmp_path)
    assert sorted(back["params"]) == sorted(n.group for n in liveportrait.BASE_NETWORKS)
    assert_base_is(back, checkpoints.group_variables(stage1, "generator"))
    # --group=generator, the stage-1 path as it was, writes the same files
    out2 = tmp_path / "lp2"
    jaxtalk_export(
        f"--workdir={stage1}", "--group=generator", "--release=liveportrait", f"--out={out2}"
    )
    for name in BASE_FILES:
        first, second = (torch_pickle.load(str(d / "base_models" / name)) for d in (out, out2))
        assert list(first) == list(second), name
        assert_same(first, second, name)


def test_stitching_run_exports_base_and_retargeting_file(runs, tmp_path):
    stage1, stage2 = runs
    out = tmp_path / "lp"
    jaxtalk_export(f"--workdir={stage2}", "--release=liveportrait", f"--out={out}")
    assert sorted(os.listdir(out / "base_models")) == BASE_FILES
    assert (out / liveportrait.RETARGETING_FILE).is_file()
    back = reimported(out, tmp_path)
    assert_base_is(back, checkpoints.group_variables(stage1, "generator"))  # the frozen base
    for name in liveportrait.RETARGETING_ENTRIES:  # the trained MLPs
        trained = checkpoints.group_variables(stage2, name)["params"]
        assert_same(back["params"][name], trained, name)
    assert back["model_config"]["key_prefix"]["stitching"] == liveportrait.MODULE_PREFIX

    # --group=base: the frozen base alone
    jaxtalk_export(f"--workdir={stage2}", "--group=base", "--release=liveportrait", f"--out={out}b")
    assert sorted(os.listdir(tmp_path / "lpb")) == ["base_models"]
    # no --release: the same networks as a weights file that animate / export read
    jaxtalk_export(f"--workdir={stage2}", f"--out={tmp_path / 'lp.safetensors'}")
    stored = weights.load(str(tmp_path / "lp.safetensors"))
    assert stored["model_config"]["kind"] == "liveportrait"
    assert_same(stored["params"]["lip"], back["params"]["lip"], "lip")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--group=stitching", "--release=liveportrait"),
            "group 'stitching' of a liveportrait stitching run",
        ),
        (("--group=generator", "--release=liveportrait"), "group 'base': its base networks alone"),
        (("--release=lia",), "exports to --release=liveportrait or --release=liveportrait_animals"),
    ],
    ids=["mlp-group", "stage1-group-on-stitching-run", "other-release"],
)
def test_wrong_choices_are_one_line_errors(runs, tmp_path, args, message):
    _, stage2 = runs
    with pytest.raises(InputError) as e:
        jaxtalk_export(f"--workdir={stage2}", *args, f"--out={tmp_path / 'x'}")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
