"""The legacy (pre-1.6) torch.save reader, on files written byte by byte here."""

import numpy as np
import pytest

from jaxtalk.convert import torch_legacy, torch_pickle
from tests.convert.crafted import write_legacy


def test_reads_a_legacy_file_built_byte_by_byte(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float16)
    ids = np.arange(6, dtype=np.int64).reshape(3, 2)
    write_legacy(
        tmp_path / "old.pth",
        {
            "conv.weight": ("FloatStorage", w),
            "conv.bias": ("HalfStorage", b),
            "ids": ("LongStorage", ids),
        },
        extra={"epoch": 7},
    )
    loaded = torch_legacy.load(tmp_path / "old.pth")
    assert loaded["epoch"] == 7
    np.testing.assert_array_equal(loaded["state_dict"]["conv.weight"], w)
    assert loaded["state_dict"]["conv.bias"].dtype == np.float16
    np.testing.assert_array_equal(loaded["state_dict"]["conv.bias"], b)
    np.testing.assert_array_equal(loaded["state_dict"]["ids"], ids)
    sd = torch_legacy.read_state_dict(tmp_path / "old.pth", key="state_dict")
    assert list(sd) == ["conv.weight", "conv.bias", "ids"]


def test_shared_storage_with_offset(tmp_path):
    whole = np.arange(10, dtype=np.float32)
    write_legacy(
        tmp_path / "shared.pth",
        {
            "a": ("FloatStorage", whole[:4].reshape(2, 2), "s", 0),
            "b": ("FloatStorage", whole[4:], "s", 4),
        },
    )
    sd = torch_legacy.read_state_dict(tmp_path / "shared.pth", key="state_dict")
    np.testing.assert_array_equal(sd["a"], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(sd["b"], whole[4:])


def test_read_state_dict_accepts_zip_and_strips_prefix(tmp_path):
    torch_pickle.save({"module.w": np.ones(2, np.float32)}, tmp_path / "new.pth")
    assert list(torch_legacy.read_state_dict(tmp_path / "new.pth", strip_prefix="module.")) == ["w"]


def test_errors_name_the_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02K\x01.")
    with pytest.raises(torch_pickle.CheckpointError, match="junk.pth.*magic"):
        torch_legacy.load(tmp_path / "junk.pth")
    write_legacy(tmp_path / "cut.pth", {"w": ("FloatStorage", np.ones(100, np.float32))})
    (tmp_path / "cut.pth").write_bytes((tmp_path / "cut.pth").read_bytes()[:-8])
    with pytest.raises(torch_pickle.CheckpointError, match="cut.pth.*truncated"):
        torch_legacy.load(tmp_path / "cut.pth")
    with pytest.raises(torch_pickle.CheckpointError, match="no such file"):
        torch_legacy.read_state_dict(tmp_path / "missing.pth")


def test_matches_torch_legacy_save(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = module.state_dict()
    state["view"] = torch.arange(12.0).reshape(3, 4)[:, 1:3]  # a non-contiguous view
    torch.save({"sd": state, "note": "x"}, tmp_path / "t.pth", _use_new_zipfile_serialization=False)
    loaded = torch_legacy.load(tmp_path / "t.pth")
    assert loaded["note"] == "x" and set(loaded["sd"]) == set(state)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded["sd"][k], v.numpy(), err_msg=k)
