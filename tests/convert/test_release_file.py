"""The kept rest of a release file comes from a weights file's metadata, so a tampered
layout is a one-line CheckpointError, and never makes export write another global."""

import numpy as np
import pytest

from jaxtalk.convert import release_file, torch_pickle
from jaxtalk.errors import CheckpointError

MODEL = {"model": [["w", None]], "type": "odict"}


def _rebuild(layout, tensors=None):
    return release_file.rebuild(layout, tensors or {}, {"w": np.ones(2, np.float32)}, "w.st")


def test_keep_and_rebuild_put_every_kind_of_value_back():
    model = {"w": np.zeros(2, np.float32), "note": "kept"}
    obj = {
        "model": model,
        1: (1.5, None, True, b"\x00\xff", complex(1, -2), frozenset({3})),
        "t": np.arange(3, dtype=np.int64),
        "nested": [{"a": {2, 4}}, float("inf")],
    }
    layout, tensors = release_file.keep(obj, model, lambda k: k == "w", "f.pt")
    assert list(tensors) == ["0"] and tensors["0"] is obj["t"]
    back = release_file.rebuild(layout, tensors, {"w": np.ones(2, np.float32)}, "w.st")
    assert type(back) is torch_pickle.PlainDict and list(back) == ["model", 1, "t", "nested"]
    assert back["model"]["note"] == "kept" and np.array_equal(back["model"]["w"], [1, 1])
    assert back[1] == obj[1] and [type(v) for v in back[1]] == [type(v) for v in obj[1]]
    assert back["nested"] == obj["nested"] and back["t"] is obj["t"]


@pytest.mark.parametrize(
    "layout, tensors, why",
    [
        ({"dict": [["a", {"record": "os:system", "items": []}]], **MODEL}, {}, "record type"),
        ({"dict": [["model", MODEL], ["t", {"tensor": "7"}]]}, {}, "no kept tensor"),
        ({"dict": [["a", 1]]}, {}, "0 state_dict placeholders"),
        ({"dict": [["a", MODEL], ["b", MODEL]]}, {}, "2 state_dict placeholders"),
        ({"dict": [[[1], MODEL]]}, {}, "TypeError"),
        ({"dict": [["a", {"bytes": "%%%"}], ["m", MODEL]]}, {}, "Error"),
        ({"exec": "print()"}, {}, "unknown node"),
        ({"model": [["x", None]], "type": "dict"}, {}, "which the model does not give"),
        ({"model": [["w", None]], "type": "list"}, {}, "placeholder needs a type"),
    ],
)
def test_tampered_layouts_are_one_line_errors(layout, tensors, why):
    with pytest.raises(CheckpointError, match=why) as e:
        _rebuild(layout, tensors)
    assert "w.st" in str(e.value) and "\n" not in str(e.value)


def test_deep_layouts_are_refused():
    layout = MODEL
    for _ in range(release_file.MAX_DEPTH + 5):
        layout = [layout]
    with pytest.raises(CheckpointError, match="nested too deep"):
        _rebuild(layout)
