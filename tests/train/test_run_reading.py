"""Reading a group of a run for export: the EMA copy as params, the live one as 'online'."""

import jax
import numpy as np
import pytest

from jaxtalk.train import checkpoints
from tests.train.helpers import run_cli, saved_state, train_command


def _flat(tree, prefix):
    return {
        prefix + "/" + "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_group_variables_keeps_the_ema_and_the_live_copy_apart(tmp_path):
    workdir = tmp_path / "run"
    run_cli(train_command(workdir, "--config.total_steps=20"))
    saved = saved_state(workdir, 20)
    variables = checkpoints.group_variables(str(workdir), "model")
    ema = _flat(variables["params"], "ema_params/model")
    live = _flat(variables["online"]["params"], "params/model")
    assert ema and live and ema.keys() != live.keys()
    for name, value in {**ema, **live}.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)
    assert any(not np.array_equal(ema[k], live[k.replace("ema_params", "params")]) for k in ema)
    # A group without an EMA (the critic) has one copy.
    assert "online" not in checkpoints.group_variables(str(workdir), "critic")


def test_the_saved_structure_is_read_from_the_metadata_file_alone(tmp_path, monkeypatch):
    """Reading a step takes the saved tree's structure from state/_METADATA, without opening
    each array's metadata (orbax's public metadata(), kept as the fallback): empty dicts,
    lists, tuples and None come back as they were saved."""
    import orbax.checkpoint as ocp

    tree = {
        "params": {"model": {"w": np.ones((2, 3)), "b": np.zeros(3)}, "critic": {}},
        "model_state": {"batch_stats": {}, "none": None, "seq": [np.ones(2), ()], "tup": ()},
        "step": np.int32(4),
    }
    state_dir = str(tmp_path / "state")
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(state_dir, tree)
    public = checkpointer.metadata(state_dir).item_metadata.tree

    def refuse(*_):
        raise AssertionError("the public metadata path was used")

    monkeypatch.setattr(checkpointer, "metadata", refuse)
    fast = checkpoints._saved_tree(checkpointer, state_dir)
    assert jax.tree.structure(fast) == jax.tree.structure(public)
    assert fast["params"]["critic"] == {} and fast["model_state"]["none"] is None
    assert fast["model_state"]["tup"] == () and fast["model_state"]["seq"][1] == ()
    # A file the fast path cannot read goes to the public one, which reports it.
    monkeypatch.undo()
    (tmp_path / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(Exception, match="(?i)json|metadata|expecting"):
        checkpoints._saved_tree(checkpointer, state_dir)
