"""`jaxtalk` commands keep their compiled programs in a persistent cache: where it goes, how it
is turned off, that JAX's own setting wins, and that a second run loads what the first
compiled."""

import os
import stat

from jaxtalk import compile_cache
from tests import cli_processes
from tests.train.helpers import REPO, cli_env, train_command


def test_directory_defaults_under_the_jaxtalk_cache_and_can_be_moved_or_turned_off(
    monkeypatch, tmp_path
):
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    monkeypatch.setenv("JAXTALK_CACHE", str(tmp_path / "c"))
    assert compile_cache.directory() == str(tmp_path / "c" / "xla")
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "elsewhere"))
    assert compile_cache.directory() == str(tmp_path / "elsewhere")
    for off in ("off", "OFF", "0", "none"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.directory() is None


def toy_env(tmp_path, **extra) -> dict:
    """A toy `jaxtalk train`'s environment without the test run's JAX cache settings: the
    command sets up its own (keeping every compile: the toy's take milliseconds)."""
    env = cli_env(devices=1)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    return dict(
        env,
        JAXTALK_CACHE=str(tmp_path / "cache"),
        JAX_LOG_COMPILES="1",  # cache hits are logged as warnings
        **extra,
    )


def train_toy(tmp_path, name, env) -> str:
    """A 1-step toy `jaxtalk train` into tmp_path/name -> its stderr."""
    command = train_command(str(tmp_path / name), "--config.total_steps=1")
    proc = cli_processes.run(command, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_a_second_run_loads_what_the_first_compiled(tmp_path):
    env = toy_env(tmp_path)
    first = train_toy(tmp_path, "a", env)
    cache = tmp_path / "cache" / "xla"
    entries = [p for p in os.listdir(cache) if p.endswith("-cache")]
    assert any(p.startswith("jit_train_step") for p in entries), entries
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700  # machine code: its user's only
    assert "Persistent compilation cache hit for 'jit_train_step'" not in first
    second = train_toy(tmp_path, "b", env)
    assert "Persistent compilation cache hit for 'jit_train_step'" in second


def test_turned_off_or_given_to_jax_it_writes_nothing_of_its_own(tmp_path):
    train_toy(tmp_path, "off", toy_env(tmp_path, JAXTALK_XLA_CACHE="off"))
    assert not (tmp_path / "cache" / "xla").exists()
    jax_dir = tmp_path / "jax_own"
    jax_own = dict(
        JAX_COMPILATION_CACHE_DIR=str(jax_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0"
    )
    train_toy(tmp_path, "jax", toy_env(tmp_path, **jax_own))
    assert not (tmp_path / "cache" / "xla").exists()
    assert any(p.startswith("jit_train_step") for p in os.listdir(jax_dir))


def test_a_cache_that_cannot_be_made_is_a_warning_and_the_run_goes_on(tmp_path):
    (tmp_path / "cache").write_text("not a directory")  # $JAXTALK_CACHE/xla cannot be made
    stderr = train_toy(tmp_path, "run", toy_env(tmp_path))
    assert f"{tmp_path / 'cache' / 'xla'}: no XLA compilation cache" in stderr
    assert (tmp_path / "run" / "metrics.jsonl").stat().st_size > 0


def test_a_cache_others_may_write_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    stderr = train_toy(tmp_path, "run", toy_env(tmp_path, JAXTALK_XLA_CACHE=str(shared)))
    assert f"{shared}: no XLA compilation cache (others may write it)" in stderr
    assert os.listdir(shared) == []


def test_trim_deletes_the_least_recently_used_down_to_80_percent(tmp_path):
    for i in range(10):  # entry 0 used longest ago
        entry = tmp_path / f"e{i}-cache"
        entry.write_bytes(b"x" * 100)
        os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    assert compile_cache.trim(str(tmp_path), max_bytes=1000) == 0  # at the bound: kept
    assert compile_cache.trim(str(tmp_path), max_bytes=900) == 300  # down to 720 bytes
    assert sorted(os.listdir(tmp_path)) == [f"e{i}-cache" for i in range(3, 10)]
    assert compile_cache.trim(str(tmp_path / "missing")) == 0
