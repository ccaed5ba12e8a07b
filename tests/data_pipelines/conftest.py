"""Shared, session-scoped fixtures: one small prepared synthetic set reused by loader tests."""

import pytest
from absl import flags

from data_pipelines import datasets
from data_pipelines.synthetic import generate

TINY = generate.SyntheticConfig(
    num_identities=4,
    videos_per_identity=1,
    utterances_per_video=2,
    utterance_seconds=1.6,
    resolution=96,
    test_identities=1,
    seed=3,
)


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    datasets.prepare_dataset(
        "synthetic", None, out, size=32, synthetic=TINY, clips_per_shard=2, log=lambda *_: None
    )
    return out


@pytest.fixture(autouse=True)
def _fresh_flags():
    """An in-process `app.run` leaves its flags parsed: the next command starts clean."""
    yield
    flags.FLAGS.unparse_flags()
