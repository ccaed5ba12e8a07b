"""Reading a group of a run for export: the EMA copy as params, the live one as 'online'."""

import jax
import numpy as np

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
