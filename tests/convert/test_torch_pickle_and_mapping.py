"""The torch-free checkpoint reader/writer and the key-checked mapping."""

import zipfile

import numpy as np
import pytest

from jaxtalk.convert import mapping, torch_pickle


def test_round_trip_preserves_dtypes_shapes_values(tmp_path):
    rng = np.random.default_rng(0)
    sd = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "half": rng.standard_normal(5).astype(np.float16),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "scalar": np.array(2.5, np.float32),
        "flag": np.array([True, False]),
    }
    torch_pickle.save({"state_dict": sd, "epoch": 3, "name": "x"}, tmp_path / "a.ckpt")
    assert zipfile.is_zipfile(tmp_path / "a.ckpt")
    loaded = torch_pickle.load(tmp_path / "a.ckpt")
    assert loaded["epoch"] == 3 and loaded["name"] == "x"
    for k, v in sd.items():
        assert loaded["state_dict"][k].dtype == v.dtype, k
        assert loaded["state_dict"][k].shape == v.shape, k
        np.testing.assert_array_equal(loaded["state_dict"][k], v)


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(torch_pickle.CheckpointError, match="bad.pt"):
        torch_pickle.load(bad)
    with pytest.raises(torch_pickle.CheckpointError, match="no such file"):
        torch_pickle.load(tmp_path / "missing.pt")
    torch_pickle.save({"a": {"w": np.zeros(2, np.float32)}}, tmp_path / "ok.pt")
    with pytest.raises(torch_pickle.CheckpointError, match="no entry 'gen'"):
        torch_pickle.load_state_dict(tmp_path / "ok.pt", "gen")


def test_matches_real_torch_when_installed(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {
        "a": torch.randn(3, 4),
        "t": torch.arange(6).reshape(2, 3).t(),
        "bf": torch.randn(4).bfloat16(),
        "p": torch.nn.Parameter(torch.randn(2, 2)),
    }
    sd["view"] = sd["a"][1]
    torch.save({"gen": sd}, tmp_path / "t.pt")
    got = torch_pickle.load_state_dict(tmp_path / "t.pt", "gen")
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k].astype(np.float32), v.detach().float().numpy())
    torch_pickle.save({"gen": got}, tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)["gen"]
    for k, v in sd.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v.detach()), k


def _reference():
    return {
        "conv": {"kernel": np.zeros((3, 3, 2, 4)), "bias": np.zeros(4)},
        "fc": {"kernel": np.zeros((4, 5))},
    }


RULES = [
    mapping.Rule("conv.weight", "conv/kernel", mapping.CONV2D),
    mapping.Rule("conv.bias", "conv/bias"),
    mapping.Rule("fc.weight", "fc/kernel", mapping.LINEAR),
]


def test_mapping_round_trip_is_exact():
    rng = np.random.default_rng(1)
    sd = {
        "conv.weight": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((5, 4)).astype(np.float32),
    }
    params = mapping.to_params(sd, RULES, _reference())
    assert params["conv"]["kernel"].shape == (3, 3, 2, 4)
    np.testing.assert_array_equal(
        params["conv"]["kernel"][1, 2, 0, 3], sd["conv.weight"][3, 0, 1, 2]
    )
    back = mapping.to_state_dict(params, RULES)
    assert list(back) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


def test_mapping_reports_every_problem():
    sd = {
        "conv.weight": np.zeros((4, 2, 5, 5), np.float32),  # wrong kernel size
        "fc.weight": np.zeros((5, 4), np.float32),
        "extra.weight": np.zeros(3, np.float32),
    }
    with pytest.raises(mapping.ConversionError) as e:
        mapping.to_params(sd, RULES, _reference(), source="ckpt.pt")
    msg = str(e.value)
    assert "ckpt.pt: 3 problem(s)" in msg
    assert "missing key 'conv.bias'" in msg and "unexpected key 'extra.weight'" in msg
    assert "conv/kernel is (3, 3, 2, 4)" in msg


def test_variable_shapes_traces_a_model_once_and_hands_out_copies():
    import flax.linen as nn
    import jax

    traces = []

    class Counted(nn.Module):
        width: int
        extra: object = None  # a dict here cannot be hashed: traced every time

        @nn.compact
        def __call__(self, x):
            traces.append(self.width)
            return nn.Dense(self.width)(x)

    x = jax.ShapeDtypeStruct((1, 3), np.float32)
    first = mapping.variable_shapes(Counted(4), x)
    first["params"]["Dense_0"]["kernel"] = "changed by a caller"
    second = mapping.variable_shapes(Counted(4), np.zeros((1, 3), np.float32))
    assert traces == [4] and second["params"]["Dense_0"]["kernel"].shape == (3, 4)
    assert mapping.variable_shapes(Counted(5), x)["params"]["Dense_0"]["kernel"].shape == (3, 5)
    assert traces == [4, 5]  # another module (fields), another trace
    for _ in range(2):
        mapping.variable_shapes(Counted(6, extra={"a": 1}), x)
    assert traces == [4, 5, 6, 6]


def test_variable_shapes_passes_non_array_inputs_as_python_values():
    """A count among a model's inputs (AniPortrait's audio2mesh frames) decides shapes: it must
    reach the model as an int, not as a traced value."""
    import flax.linen as nn
    import jax

    class Widened(nn.Module):
        @nn.compact
        def __call__(self, x, width):
            return nn.Dense(width)(x)

    shapes = mapping.variable_shapes(Widened(), jax.ShapeDtypeStruct((1, 3), np.float32), 7)
    assert shapes["params"]["Dense_0"]["kernel"].shape == (3, 7)
