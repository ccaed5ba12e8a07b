"""A `gs://` compilation cache (one that every host of a job can read) on the local storage
emulator: the first run's programs land in the bucket and a second run loads them."""

from jaxtalk import fs
from tests.test_compile_cache import toy_env, train_toy

HIT = "Persistent compilation cache hit for 'jit_train_step'"


def test_a_bucket_cache_serves_the_next_run(gcs, tmp_path):
    # JAX's one-second threshold holds for remote caches; the toy compiles in milliseconds.
    env = toy_env(
        tmp_path, JAXTALK_XLA_CACHE=f"{gcs}/xla", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    assert HIT not in train_toy(tmp_path, "a", env)
    assert any(name.startswith("jit_train_step") for name in fs.listdir(f"{gcs}/xla"))
    assert HIT in train_toy(tmp_path, "b", env)
    assert not (tmp_path / "cache" / "xla").exists()
