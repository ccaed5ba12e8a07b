"""The rest of a released checkpoint file: what no model parameter holds, kept in a weights
file so that `jaxtalk export` writes the imported file back whole.

A LIA training file holds, beside the generator state_dict 'gen', the discriminator, both
Adam states (keyed by parameter index, with tuples and flags) and the training arguments
(an argparse.Namespace); a Lightning file wraps its state_dict with counters, optimizer,
callback and loop states and hyper-parameters. `keep` turns such a file into a layout (a
JSON value, stored in the weights file's metadata) and the tensors it refers to (stored as
the weights file's "rest" collection); the state_dict the converter writes from params is a
placeholder in it that lists its keys in order. `rebuild` puts the file back together around
a fresh state_dict, every container of the type it was read as (dict, OrderedDict, list,
tuple, set, Counter, argparse.Namespace, Lightning AttributeDict), keys in order and of
their type, tensors with their dtype, shape and bits.

Two things come back as read rather than as written: torch dtypes and devices (which the
restricted reader turns into their names) and numpy scalars (Python numbers).

The layout comes from a file too, so `rebuild` checks every node: only the forms below, only
the record types the reader allows (an exported pickle never names any other global), only
tensors the "rest" collection has, and nesting at most `MAX_DEPTH` deep.
"""

from __future__ import annotations

import base64
import collections
from typing import Any, Callable, Mapping

import numpy as np

from jaxtalk.convert import safe_pickle, torch_pickle
from jaxtalk.errors import CheckpointError, one_line

MAX_DEPTH = 100
# Tags of a layout node ({tag: value}); lists are JSON arrays, plain scalars themselves.
_MAPPINGS = {"dict": torch_pickle.PlainDict, "odict": collections.OrderedDict}
_SEQUENCES = {"tuple": tuple, "set": set, "frozenset": frozenset}
_RECORDS = {f"{m}:{n}": cls for (m, n), cls in safe_pickle.RECORD_TYPES.items()}


def keep(
    obj: Any, model: Mapping, produced: Callable[[str], bool], source: str
) -> tuple[Any, dict[str, np.ndarray]]:
    """(layout, tensors) of the file `source` loaded as `obj`. `model` is the state_dict
    inside it (the same object) that export writes from params: its entries for which
    `produced(key)` holds are left to export, the others are kept."""
    tensors: dict[str, np.ndarray] = {}

    def tensor(x):
        name = str(len(tensors))
        tensors[name] = x
        return {"tensor": name}

    def items(mapping, depth):
        return [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in mapping.items()]

    def encode(x, depth=0):
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{source}: nested deeper than a checkpoint is")
        if x is model:
            entries = [[k, None if produced(k) else encode(v, depth + 1)] for k, v in x.items()]
            return {"model": entries, "type": _mapping_tag(x)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, np.ndarray):
            return tensor(x)
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, safe_pickle.Record):
            return {"record": "{}:{}".format(*x.origin), "items": items(x, depth)}
        if isinstance(x, collections.Counter):
            return {"counter": items(x, depth)}
        if isinstance(x, Mapping):
            return {_mapping_tag(x): items(x, depth)}
        if isinstance(x, list):
            return [encode(v, depth + 1) for v in x]
        for tag, kind in _SEQUENCES.items():
            if type(x) is kind:
                return {tag: [encode(v, depth + 1) for v in x]}
        if isinstance(x, bytes):
            return {"bytes": base64.b64encode(x).decode("ascii")}
        if isinstance(x, complex):
            return {"complex": [x.real, x.imag]}
        raise CheckpointError(f"{source}: cannot keep a {type(x).__name__} for export")

    return encode(obj), tensors


def _mapping_tag(x: Mapping) -> str:
    return "odict" if isinstance(x, collections.OrderedDict) else "dict"


def rebuild(
    layout: Any, tensors: Mapping[str, np.ndarray], model: Mapping[str, Any], source: str
) -> Any:
    """The file `keep` saw, with `model` (the converter's state_dict) in its place: the
    placeholder's keys in their order, kept entries as read, keys only `model` has after.
    The layout must hold exactly one placeholder."""
    placed = []

    def bad(why: str):
        return CheckpointError(f"{source}: malformed release-file layout ({one_line(why, 120)})")

    def pairs(value, depth):
        if not isinstance(value, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in value
        ):
            raise bad("a mapping's items must be [key, value] pairs")
        return [(decode(k, depth + 1), decode(v, depth + 1)) for k, v in value]

    def decode(node, depth=0):
        if depth > MAX_DEPTH:
            raise bad("nested too deep")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [decode(v, depth + 1) for v in node]
        if not isinstance(node, dict) or not node:
            raise bad(f"unexpected {type(node).__name__}")
        tag = next(iter(node))
        value = node[tag]
        if tag == "model":
            return placeholder(node, depth)
        if tag == "tensor":
            if not isinstance(value, str) or value not in tensors:
                raise bad(f"no kept tensor {one_line(repr(value), 40)}")
            return np.asarray(tensors[value])
        if tag in _MAPPINGS:
            return _MAPPINGS[tag](pairs(value, depth))
        if tag == "counter":
            return collections.Counter(dict(pairs(value, depth)))
        if tag == "record":
            if value not in _RECORDS:
                raise bad(f"record type {value!r} is not one the reader allows")
            return _RECORDS[value](dict(pairs(node.get("items"), depth)))
        if tag in _SEQUENCES and isinstance(value, list):
            return _SEQUENCES[tag](decode(v, depth + 1) for v in value)
        if tag == "bytes" and isinstance(value, str):
            return base64.b64decode(value, validate=True)
        if tag == "complex" and isinstance(value, list) and len(value) == 2:
            return complex(*(float(v) for v in value))
        raise bad(f"unknown node {one_line(tag, 40)!r}")

    def placeholder(node, depth):
        entries, kind = node["model"], node.get("type")
        if kind not in _MAPPINGS or not isinstance(entries, list):
            raise bad("the state_dict placeholder needs a type and its entries")
        out = _MAPPINGS[kind]()
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
                raise bad("a state_dict entry must be [name, value or null]")
            key, kept = entry
            if kept is not None:
                out[key] = decode(kept, depth + 1)
            elif key in model:
                out[key] = model[key]
            else:
                raise CheckpointError(
                    f"{source}: the release file had {key[:80]!r}, which the model does not give"
                )
        for key, value in model.items():
            out.setdefault(key, value)
        placed.append(out)
        return out

    try:
        whole = decode(layout)
    except (TypeError, ValueError) as e:  # unhashable keys, bad base64 or numbers
        raise bad(f"{type(e).__name__}: {e}") from None
    if len(placed) != 1:
        raise bad(f"{len(placed)} state_dict placeholders, not one")
    return whole
