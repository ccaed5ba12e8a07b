"""Pretrained weights in a fresh run: they take the place of what the initialisation leaves
out (params and EMA copy; the state's structure that of a plain run), and load_pretrained
refuses weights that do not fit the model, naming each key."""

import types

import jax
import numpy as np
import pytest

from jaxtalk.tasks import toy_regression
from jaxtalk.train import train as train_lib
from jaxtalk.train.train import ConfigError, load_pretrained
from tests.train.helpers import toy_config


def test_pretrained_subtrees_replace_the_initialisation_and_its_ema_copy(monkeypatch, tmp_path):
    given = {"kernel": np.full((64, 128), 0.5, np.float32), "bias": np.ones(128, np.float32)}
    monkeypatch.setattr(
        toy_regression.ToyRegression, "pretrained", lambda self: {"model": {"hidden_0": given}}
    )
    # hidden_0 kept as given by freezing it; one step moves the rest
    config = toy_config(total_steps=1, frozen=("model/hidden_0/.*",))
    out = train_lib.train(config, str(tmp_path))
    state = out["state"]
    reference = train_lib.train(toy_config(total_steps=1), str(tmp_path / "plain"))["state"]
    for tree, plain in ((state.params, reference.params), (state.ema_params, reference.ema_params)):
        for name, value in given.items():
            np.testing.assert_array_equal(np.asarray(tree["model"]["hidden_0"][name]), value)
        assert jax.tree.structure(tree) == jax.tree.structure(plain)


def test_misfitting_pretrained_weights_name_every_key():
    params = {"generator": {"model": {"w": np.zeros((2, 3)), "v": np.zeros(4)}}}
    state = types.SimpleNamespace(params=params, ema_params={})
    weights = {"generator": {"model": {"w": np.zeros((3, 2)), "b": np.zeros(2)}}}
    with pytest.raises(ConfigError) as e:
        load_pretrained(state, weights, shardings=None)
    assert str(e.value) == (
        "pretrained weights for generator/model do not fit the model: "
        "['w']: (3, 2) but the model has (2, 3); missing ['v']; unexpected ['b']"
    )
