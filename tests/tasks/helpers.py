"""Small fixtures' builders shared by the task and inference tests: a prepared synthetic set,
random tiny stage-1 / stage-2 weight files (the shapes the tiny configs use), and a tiny
training run in its own process."""

import fcntl
import json
import os
import shutil
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp

from configs import anitalker_stage1
from data_pipelines import datasets
from data_pipelines.synthetic import generate
from jaxtalk.convert import weights
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs
from jaxtalk.train.grouped_init import grouped_initializers

SIZE = 64
TINY_WIDTH = anitalker_stage1.get_config("tiny").model.width  # the tiny configs' stage 1
STAGE1 = dict(size=SIZE, style_dim=512, motion_dim=20, width=TINY_WIDTH)
STAGE2 = dict(
    infer_type="mfcc_pose_only",
    speech_dim=32,
    fusion_dim=16,
    mfcc_hidden=32,
    decoder_layers=1,
    lstm_hidden=16,
    lstm_layers=1,
    motion_dim=20,
    motion_start_dim=512,
)


def prepare_synthetic(out_dir: str) -> str:
    cfg = generate.SyntheticConfig(
        num_identities=4,
        videos_per_identity=1,
        utterances_per_video=2,
        utterance_seconds=1.6,
        resolution=96,
        test_identities=1,
        seed=5,
    )
    datasets.prepare_dataset(
        "synthetic", None, out_dir, size=SIZE, synthetic=cfg, clips_per_shard=4, log=lambda *_: None
    )
    return out_dir


def shared_synthetic(tmp_path_factory) -> str:
    """prepare_synthetic's set, made once per test run and read by every xdist worker (and
    every file) that needs it: its tests must not write into it."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder
    out, ready = root / "shared-synthetic64", root / "shared-synthetic64.ready"
    with open(root / "shared-synthetic64.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for it, then reads it
        if not ready.exists():
            shutil.rmtree(out, ignore_errors=True)  # a worker that failed half way
            prepare_synthetic(str(out))
            ready.touch()
    return str(out)


def save_stage1(path: str) -> str:
    model = AniTalkerMotion(**STAGE1)
    image = jnp.zeros((1, SIZE, SIZE, 3))
    init = jax.jit(grouped_initializers(model.init))  # as train() initialises
    params = nn.meta.unbox(init(jax.random.PRNGKey(1), image, image)["params"])
    weights.save(
        {"params": params, "model_config": dict(STAGE1, kind="anitalker_stage1")},
        path,
        release="anitalker_stage1",
    )
    return path


def save_stage2(path: str, **overrides) -> str:
    config = dict(STAGE2, **overrides)
    model = DiffusionPredictor(**config)
    init = jax.jit(grouped_initializers(model.init))
    variables = nn.meta.unbox(init(jax.random.PRNGKey(2), *init_inputs(model, 1, 8)))
    weights.save({**variables, "model_config": config}, path, release="anitalker_stage2")
    return path


# The latent diffusion family's train step is the suite's largest compile (on 8 simulated
# devices it took minutes and ~10 GB in an xdist worker): its loop tests run `jaxtalk train`
# in a one-device process, which gives its memory back when it ends.
def train_tiny(
    config: str, data_dir: str, workdir: str, steps: int, *overrides: str, save_every: int = 0
) -> dict:
    """`jaxtalk train --config=configs/<config>` (e.g. "megactor.py:tiny_stage1") for `steps`
    steps of batch 4 on `data_dir`, logging, evaluating (one batch, 2 sampling steps) and
    saving at the last step (and every `save_every` steps) -> every metric it logged, the last
    value of each."""
    from tests.train.helpers import REPO, run_cli

    run_cli(
        [sys.executable, "-m", "jaxtalk.cli", "train",
         f"--config={REPO}/configs/{config}", f"--workdir={workdir}",
         f"--config.data.data_dir={data_dir}", "--config.data.samples_per_clip=4",
         "--config.batch_size=4", f"--config.total_steps={steps}",
         "--config.diffusion.sample_steps=2", f"--config.log.every_steps={steps}",
         "--config.log.progress_bar=False", "--config.log.tensorboard=False",
         f"--config.eval.every_steps={steps}", "--config.eval.num_batches=1",
         f"--config.checkpoint.every_steps={save_every or steps}",
         "--config.checkpoint.async_save=False",
         *overrides],
        devices=1,
    )  # fmt: skip
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {k: v for r in rows for k, v in r.items()}


def one_device_train(config, workdir: str) -> dict:
    """train() in this process on one of its simulated devices: what a family's tiny run checks
    does not need the 8-way mesh (tests/train covers sharding), and on 2 cores an 8-device
    program compiles and runs slower."""
    from jaxtalk.train.train import train

    return train(config, workdir, devices=jax.devices()[:1])


def in_process_run(c, steps: int):
    """Config `c` set for a `steps`-step run inside the test process: one log line, one
    evaluation batch and one synchronous checkpoint, all at the end; no progress bar or
    TensorBoard."""
    c.total_steps = steps
    c.log.every_steps = steps
    c.log.progress_bar = False
    c.log.tensorboard = False
    c.eval.every_steps = steps
    c.eval.num_batches = 1
    c.checkpoint.every_steps = steps
    c.checkpoint.async_save = False
    return c


def shallow_liveportrait(c):
    """A LivePortrait config made shallower than its recipe where depth checks nothing more
    in the task tests (one SPADE middle block, a one-level dense-motion hourglass, two-block
    discriminators): a step that compiles faster, with every network, loss term and state
    still in it."""
    c.model.spade.num_middle_blocks = 1
    c.model.warping.dense_num_blocks = 1
    c.model.discriminator.num_blocks = 2
    return c
