"""A model family added with new files only (tests/toy_family/): it trains a step, imports
and exports its released checkpoint and animates frames through jaxtalk's own commands and
registries, and no module of jaxtalk/ or configs/ names it."""

import json
import pathlib
import sys

import jax
import numpy as np

from jaxtalk.convert import torch_pickle, weights
from jaxtalk.inference import open_animator
from jaxtalk.models.pixels import to_model_range
from tests.test_cli import jaxtalk
from tests.toy_family.model import ToyPortrait
from tests.train.helpers import REPO, run_cli

PLUGIN = {"JAXTALK_PLUGINS": "tests.toy_family"}


def _released_checkpoint(path):
    rng = np.random.default_rng(0)
    sd = {
        "net.0.weight": rng.standard_normal((8, 6, 3, 3)),
        "net.0.bias": rng.standard_normal(8),
        "net.2.weight": rng.standard_normal((3, 8, 3, 3)) * 0.1,
        "net.2.bias": np.zeros(3),
    }
    sd = {k: v.astype(np.float32) for k, v in sd.items()}
    torch_pickle.save(sd, path)
    return sd


def test_no_shared_module_names_the_toy_family():
    for root in ("jaxtalk", "configs", "data_pipelines"):
        for path in (pathlib.Path(REPO) / root).rglob("*.py"):
            assert (
                "toy_family" not in path.read_text() and "toy_portrait" not in path.read_text()
            ), path


def test_toy_family_trains_one_step(tmp_path):
    run_cli(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "train",
            "--config=tests/toy_family/config.py:tiny",
            f"--workdir={tmp_path / 'run'}",
            "--config.log.progress_bar=False",
            "--config.log.tensorboard=False",
        ]
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert any(r.get("step") == 1 and np.isfinite(r.get("model/l1", np.nan)) for r in rows), rows


def test_toy_family_imports_exports_and_animates(tmp_path, monkeypatch):
    sd = _released_checkpoint(tmp_path / "toy.pt")
    imported = jaxtalk(
        "import",
        "--release=toy_portrait",
        f"--checkpoint={tmp_path / 'toy.pt'}",
        f"--out={tmp_path / 'toy.safetensors'}",
        env=PLUGIN,
    )
    assert imported.returncode == 0, imported.stderr
    exported = jaxtalk(
        "export",
        f"--weights={tmp_path / 'toy.safetensors'}",
        "--release=toy_portrait",
        f"--out={tmp_path / 'back.pt'}",
        env=PLUGIN,
    )
    assert exported.returncode == 0, exported.stderr
    back = torch_pickle.load_state_dict(tmp_path / "back.pt")
    assert list(back) == list(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)

    monkeypatch.setenv(*next(iter(PLUGIN.items())))
    animator = open_animator(str(tmp_path / "toy.safetensors"), driver="video")
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    driving = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    frames = animator.animate(source, driving)
    params = weights.load(tmp_path / "toy.safetensors")["params"]
    expected = ToyPortrait().apply(
        {"params": params}, to_model_range(np.repeat(source[None], 3, 0)), to_model_range(driving)
    )
    expected = np.asarray(jax.numpy.clip((expected + 1) * 127.5, 0, 255).round()).astype(np.uint8)
    assert frames.shape == (3, 8, 8, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, expected)
