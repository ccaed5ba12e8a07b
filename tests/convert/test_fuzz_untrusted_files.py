"""Crafted checkpoint files, as an attacker would publish them: nothing runs, memory stays
bounded, and each is refused with one line naming the file (`pytest -k fuzz`)."""

import json
import pickle
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxtalk.convert import safe_pickle, torch_legacy, torch_pickle, weights
from jaxtalk.errors import CheckpointError
from tests.convert import crafted
from tests.test_cli import jaxtalk

MiB = 1 << 20


def refused(load, path, match: str, peak_limit: int = 64 * MiB) -> str:
    """Loads `path` expecting a one-line CheckpointError that names it and matches `match`;
    the loader's peak Python/numpy allocation stays under `peak_limit`."""
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert match in message, message
    assert peak < peak_limit, f"peak allocation {peak:,} bytes"
    return message


def code_payloads(marker):
    """The same code-running call spelt with GLOBAL (protocol 2), STACK_GLOBAL (4), INST
    (0) and through os.system."""
    return {
        "global": pickle.dumps(crafted.RunsCode(marker), protocol=2),
        "stack_global": pickle.dumps(crafted.RunsCode(marker), protocol=4),
        "inst": crafted.inst_opcode_payload(marker),
        "os_system": pickle.dumps(crafted.RunsCode(marker, via="system"), protocol=2),
    }


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code_ran"
    yield path
    assert not path.exists(), "code from a checkpoint file ran"


def test_fuzz_payloads_really_run_code_when_unpickled_plainly(tmp_path):
    # The payloads are live: plain pickle runs each one (so the tests below mean something).
    for name, payload in code_payloads(tmp_path / "m").items():
        pickle.loads(payload)
        assert (tmp_path / "m").exists(), name
        (tmp_path / "m").unlink()


@pytest.mark.parametrize("opcode", ["global", "stack_global", "inst", "os_system"])
def test_fuzz_zip_data_pkl_with_code_runs_nothing(tmp_path, marker, opcode):
    path = tmp_path / f"evil_{opcode}.pt"
    crafted.write_zip(path, code_payloads(marker)[opcode])
    refused(torch_pickle.load, path, "refuses to load the pickled global")


@pytest.mark.parametrize("position", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("opcode", ["global", "stack_global", "inst"])
def test_fuzz_legacy_code_in_any_pickle_runs_nothing(tmp_path, marker, position, opcode):
    # Pickles 0-2 are the headers (magic, protocol, sys_info), 3 the object, 4 the key list.
    payload = code_payloads(marker)[opcode]
    headers = [
        pickle.dumps(h, protocol=2)
        for h in (torch_legacy.MAGIC_NUMBER, torch_legacy.PROTOCOL_VERSION, {"little_endian": True})
    ]
    parts = headers + [crafted.dumps({"a": 1}), pickle.dumps([], protocol=2)]
    parts[position] = payload
    path = tmp_path / f"evil_{position}_{opcode}.pth"
    path.write_bytes(crafted.legacy_bytes(parts[3], {}, headers=parts[:3], keys_pickle=parts[4]))
    message = refused(torch_legacy.load, path, "")
    assert "refuses to load the pickled global" in message or "bad magic number" in message


def _zip_tensor(path, numel, offset, size, stride, type_name="FloatStorage"):
    storage = crafted.Storage("0", type_name, numel, legacy=False)
    pkl = crafted.dumps({"w": crafted.tensor(storage, offset, size, stride)})
    crafted.write_zip(path, pkl, {"0": np.zeros(numel, np.float32).tobytes()})


@pytest.mark.parametrize(
    "case,view,match",
    [
        ("heap_read", (0, (16,), (1,)), "reaches element 15 of a storage of 1"),
        ("huge_stride", (0, (2,), (1 << 40,)), "reaches element"),
        ("past_the_end", (1, (1,), (1,)), "reaches element 1"),
        ("negative_offset", (-4, (1,), (1,)), "offset must be a non-negative integer"),
        ("negative_stride", (0, (2,), (-1,)), "stride must be a non-negative integer"),
        ("rank_mismatch", (0, (1, 1), (1,)), "2 sizes but 1 strides"),
        ("float_size", (0, (1.5,), (1,)), "size must be a non-negative integer"),
    ],
)
def test_fuzz_views_outside_their_storage_are_refused(tmp_path, case, view, match):
    path = tmp_path / f"{case}.pt"
    _zip_tensor(path, 1, *view)
    refused(torch_pickle.load, path, match)


def test_fuzz_legacy_views_are_checked_before_the_storage_is_read(tmp_path):
    storage = crafted.Storage("s", "FloatStorage", 1)
    pkl = crafted.dumps({"w": crafted.tensor(storage, 0, (16,), (1,))})
    path = tmp_path / "heap.pth"
    path.write_bytes(crafted.legacy_bytes(pkl, {"s": ("FloatStorage", np.zeros(1))}))
    refused(torch_legacy.load, path, "reaches element 15 of a storage of 1")


def test_fuzz_huge_shape_with_stride_zero_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.pt"
    _zip_tensor(path, 1, 0, (100000, 100000), (0, 0))
    assert path.stat().st_size < 1000
    refused(torch_pickle.load, path, "over the limit")


def test_fuzz_storage_larger_than_the_file_is_refused(tmp_path):
    # A legacy file declaring 2**40 elements: refused from the declaration, nothing read.
    storage = crafted.Storage("s", "FloatStorage", 1 << 40)
    pkl = crafted.dumps({"w": crafted.tensor(storage, 0, (1,), (1,))})
    path = tmp_path / "big.pth"
    path.write_bytes(crafted.legacy_bytes(pkl, {"s": ("FloatStorage", np.zeros(1))}))
    refused(torch_legacy.load, path, "over the limit")


def test_fuzz_zip_bomb_is_refused_before_inflating(tmp_path):
    numel = (2 << 30) // 4  # a 2 GiB float32 storage
    storage = crafted.Storage("0", "FloatStorage", numel, legacy=False)
    pkl = crafted.dumps({"w": crafted.tensor(storage, 0, (numel,), (1,))})
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pkl)
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(64 * MiB)
            for _ in range(32):
                f.write(chunk)
    assert path.stat().st_size < 4 * MiB
    refused(torch_pickle.load, path, "over the limit")


def test_fuzz_zip_member_inflating_past_its_declared_size_stops_there(tmp_path):
    # The headers say 4 bytes (one float, as the pickle declares); the stream holds 64 MiB.
    storage = crafted.Storage("0", "FloatStorage", 1, legacy=False)
    pkl = crafted.dumps({"w": crafted.tensor(storage, 0, (1,), (1,))})
    path = tmp_path / "liar.pt"
    crafted.write_zip(path, pkl, {"0": bytes(64 * MiB)}, compression=zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = raw.find(signature, raw.find(b"archive/data/0") - 100)
        start = raw.rfind(signature, 0, raw.find(b"archive/data/0", start) + 1)
        struct.pack_into("<I", raw, start + size_at, 4)
    path.write_bytes(bytes(raw))
    refused(torch_pickle.load, path, "malformed checkpoint")


def test_fuzz_deflated_data_pkl_bomb_is_refused(tmp_path):
    path = tmp_path / "pkl_bomb.pt"
    crafted.write_zip(path, b"\x80\x02" + bytes(256 * MiB), compression=zipfile.ZIP_DEFLATED)
    refused(torch_pickle.load, path, "over the limit")


@pytest.mark.parametrize(
    "case",
    [
        "reduce_on_storage_type",
        "rebuild_wrong_types",
        "object_array",
        "object_dtype_scalar",
        "bare_int_pid",
        "truncated",
        "deep_nesting",
    ],
)
def test_fuzz_malformed_pickles_give_one_line(tmp_path, case):
    float_storage = crafted.TorchGlobal("torch", "FloatStorage")
    obj = {
        "reduce_on_storage_type": lambda: crafted.dumps(crafted.Call(float_storage, (4,))),
        "rebuild_wrong_types": lambda: crafted.dumps(crafted.tensor("abc", 0, (1,), (1,))),
        "object_array": lambda: pickle.dumps({"w": np.array([1, None], dtype=object)}, protocol=2),
        "object_dtype_scalar": lambda: pickle.dumps({"d": np.dtype("O")}, protocol=2),
        "bare_int_pid": lambda: b"\x80\x02K\x05Q.",
        "truncated": lambda: crafted.dumps({"w": [1, 2, 3]})[:-3],
        "deep_nesting": lambda: b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b".",
    }[case]()
    path = tmp_path / f"{case}.pt"
    crafted.write_zip(path, obj)
    refused(torch_pickle.load, path, "")


def test_fuzz_shared_sublists_are_walked_once(tmp_path):
    # 60 levels of [x, x] (memo references): 2**60 paths through 61 lists, which a walk
    # that does not remember what it has seen would never finish.
    out = bytearray(b"\x80\x02]q\x00")  # EMPTY_LIST, BINPUT 0
    for level in range(1, 61):  # MARK, BINGET twice, LIST, BINPUT
        out += b"(h" + bytes([level - 1]) + b"h" + bytes([level - 1]) + b"lq" + bytes([level])
    path = tmp_path / "dag.pt"
    crafted.write_zip(path, bytes(out + b"."))
    loaded = torch_pickle.load(path)
    assert isinstance(loaded, list) and loaded[0] is loaded[1]


def test_hyperparameter_containers_load_as_plain_dicts(tmp_path, monkeypatch):
    # LIA's file carries an argparse.Namespace `args`; a Lightning .ckpt its hyper-parameters
    # as an AttributeDict. Both are allow-listed and read as dicts of their fields.
    import argparse
    import sys
    import types

    names = [
        "pytorch_lightning",
        "pytorch_lightning.utilities",
        "pytorch_lightning.utilities.parsing",
    ]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    attribute_dict = type("AttributeDict", (dict,), {"__module__": names[-1]})
    sys.modules[names[-1]].AttributeDict = attribute_dict
    storage = crafted.Storage("0", "FloatStorage", 4, legacy=False)
    obj = {
        "gen": {"w": crafted.tensor(storage, 0, (4,), (1,))},
        "args": argparse.Namespace(size=256, lr=0.002),
        "hyper_parameters": attribute_dict(lr=1e-4, name="stage2"),
        "plain": [{1, 2}, frozenset({3}), complex(1, 2)],
    }  # __builtin__.set at protocol 2
    crafted.write_zip(
        tmp_path / "lia.pt", crafted.dumps(obj), {"0": np.arange(4, dtype=np.float32).tobytes()}
    )
    loaded = torch_pickle.load(tmp_path / "lia.pt")
    assert loaded["args"] == {"size": 256, "lr": 0.002}
    assert loaded["hyper_parameters"] == {"lr": 1e-4, "name": "stage2"}
    assert loaded["plain"] == [{1, 2}, frozenset({3}), complex(1, 2)]
    np.testing.assert_array_equal(loaded["gen"]["w"], np.arange(4, dtype=np.float32))


def test_fuzz_budget_cap_is_overridable(tmp_path, monkeypatch):
    torch_pickle.save({"w": np.zeros(1000, np.float32)}, tmp_path / "ok.pt")
    assert torch_pickle.load(tmp_path / "ok.pt")["w"].shape == (1000,)
    monkeypatch.setenv(safe_pickle.MAX_BYTES_ENV, "1000")
    refused(torch_pickle.load, tmp_path / "ok.pt", "over the limit of 1,000")
    monkeypatch.setenv(safe_pickle.MAX_BYTES_ENV, "lots")
    with pytest.raises(CheckpointError, match="JAXTALK_MAX_CHECKPOINT_BYTES"):
        torch_pickle.load(tmp_path / "ok.pt")


# ----------------------------------------------------------------------------- safetensors


def _weights_file(path, metadata, tensors=None):
    tensors = tensors if tensors is not None else {"params/fc/kernel": np.zeros((2, 2), np.float32)}
    save_file(
        tensors,
        str(path),
        metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    )


@pytest.mark.parametrize(
    "case,metadata,tensors,match",
    [
        ("config_list", {"model_config": [1, 2]}, None, "'model_config' must be a JSON object"),
        ("config_number", {"model_config": 5}, None, "'model_config' must be a JSON object"),
        ("release_dict", {"release": {"a": 1}}, None, "'release' must be a string"),
        (
            "leaf_and_group",
            {},
            {"params/a": np.zeros(1, np.float32), "params/a/b": np.zeros(1, np.float32)},
            "lies under another",
        ),
        ("empty_part", {}, {"params//a": np.zeros(1, np.float32)}, "malformed parameter name"),
        ("no_params", {}, {"other/a": np.zeros(1, np.float32)}, "no 'params' collection"),
    ],
)
def test_fuzz_weights_files_with_wrong_metadata(tmp_path, case, metadata, tensors, match):
    path = tmp_path / f"{case}.safetensors"
    _weights_file(path, metadata, tensors)
    refused(weights.load, path, match)


@pytest.mark.parametrize("case", ["garbage", "header_too_long", "offsets_outside"])
def test_fuzz_malformed_safetensors_give_one_line(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    header = {
        "garbage": b"not json at all",
        "header_too_long": None,
        "offsets_outside": json.dumps(
            {"params/w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}
        ).encode(),
    }[case]
    if header is None:
        path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    else:
        path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    refused(weights.load, path, "not a readable safetensors file")


def test_fuzz_model_config_of_wrong_type_is_refused_before_the_model(tmp_path):
    from jaxtalk.inference import video_driven

    with pytest.raises(CheckpointError, match="w.safetensors: model_config 'size' must be int"):
        video_driven.build_generator("lia", {"size": "256"}, source="w.safetensors")
    with pytest.raises(CheckpointError, match="not an option of DiffusionPredictor"):
        from jaxtalk.models.anitalker.stage2 import DiffusionPredictor

        weights.module_options(DiffusionPredictor, {"parent": None}, "x")


# ----------------------------------------------------------------------------- commands


def test_fuzz_commands_refuse_crafted_files_with_one_line(tmp_path, marker):
    evil = tmp_path / "evil.pt"
    crafted.write_zip(evil, code_payloads(marker)["global"])
    legacy = tmp_path / "evil_legacy.pth"
    legacy.write_bytes(code_payloads(marker)["stack_global"])  # a payload as the first pickle
    bad_meta = tmp_path / "bad_meta.safetensors"
    _weights_file(bad_meta, {"model_config": [1], "release": "lia"})
    runs = {
        "import": jaxtalk(
            "import", "--release=lia", f"--checkpoint={evil}", f"--out={tmp_path / 'x.safetensors'}"
        ),
        "import legacy": jaxtalk(
            "import",
            "--release=vgg16",
            f"--checkpoint={legacy}",
            f"--out={tmp_path / 'y.safetensors'}",
        ),
        "export": jaxtalk(
            "export", f"--weights={bad_meta}", "--release=lia", f"--out={tmp_path / 'z.pt'}"
        ),
        "animate": jaxtalk(
            "animate",
            "--mode=video",
            f"--source={tmp_path / 'a.png'}",
            f"--driving={tmp_path / 'd.mp4'}",
            f"--weights={bad_meta}",
            f"--out={tmp_path / 'o.mp4'}",
        ),
    }
    for name, proc in runs.items():
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (name, proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert (
            lines[0].startswith(f"jaxtalk {name.split()[0]}: error: ") and str(tmp_path) in lines[0]
        )
