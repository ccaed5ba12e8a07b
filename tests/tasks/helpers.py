"""Small fixtures' builders shared by the task and inference tests: a prepared synthetic set
and random tiny stage-1 / stage-2 weight files (the shapes the tiny configs use)."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from data_pipelines import datasets
from data_pipelines.synthetic import generate
from jaxtalk.convert import weights
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs

SIZE = 64
STAGE1 = dict(size=SIZE, style_dim=512, motion_dim=20, width=0.125)
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


def save_stage1(path: str) -> str:
    model = AniTalkerMotion(**STAGE1)
    image = jnp.zeros((1, SIZE, SIZE, 3))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), image, image)["params"])
    weights.save(
        {"params": params, "model_config": dict(STAGE1, kind="anitalker_stage1")},
        path,
        release="anitalker_stage1",
    )
    return path


def save_stage2(path: str, **overrides) -> str:
    config = dict(STAGE2, **overrides)
    model = DiffusionPredictor(**config)
    variables = nn.meta.unbox(model.init(jax.random.PRNGKey(2), *init_inputs(model, 1, 8)))
    weights.save({**variables, "model_config": config}, path, release="anitalker_stage2")
    return path
