"""load_pretrained refuses weights that do not fit the model, naming each key."""

import types

import numpy as np
import pytest

from jaxtalk.train.train import ConfigError, load_pretrained


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
