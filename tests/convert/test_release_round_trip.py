"""Whole-file round trips: a file in a release's layout (its official key list and shapes,
buffers and counters included, random values) -> `jaxtalk import` -> weights file ->
`jaxtalk export` is the same file, key by key and bit for bit; and, where torch is
installed, the exported file loads with a strict `load_state_dict` into a module tree
built from the release's key list."""

import numpy as np
import pytest

from jaxtalk.convert import anitalker, lia, releases, torch_pickle, weights
from jaxtalk.convert.mapping import Rule
from tests.convert.test_anitalker import RELEASED_NKEYS, released_keys
from tests.convert.test_lia import TINY, random_state_dict, reference_keys


def _random_tensor(rng, key, shape):
    if key.endswith("num_batches_tracked"):
        return np.asarray(rng.integers(0, 10**6), np.int64)
    return rng.standard_normal(shape, dtype=np.float32)


def stage2_release_file(path, infer_type, seed=0):
    """`x_T`, `model.*` and `ema_model.*` (different values) as the Lightning module's
    state_dict holds them."""
    rng = np.random.default_rng(seed)
    shapes = {"x_T": anitalker.X_T_SHAPE}
    for prefix in ("model.", "ema_model."):
        shapes.update({prefix + k: s for k, s in released_keys(infer_type).items()})
    sd = {k: _random_tensor(rng, k, s) for k, s in shapes.items()}
    torch_pickle.save(sd, path)
    return sd


def round_trip(tmp_path, release, source, **import_options):
    """import (as `jaxtalk import` does, or with converter options) -> weights file ->
    export; the exported file's top-level object."""
    stored = tmp_path / "w.safetensors"
    if import_options:
        converter = releases.find_release(release).converter
        variables = __import__(converter, fromlist=["_"]).import_checkpoint(
            source, **import_options
        )
        weights.save(variables, stored, release=release)
    else:
        releases.import_release(release, source, output=str(stored))
    out = tmp_path / "exported.pt"
    releases.export_release(release, weights.load(stored), out)
    return torch_pickle.load(out)


def assert_same_tensors(got, want):
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for key, value in want.items():
        back = got[key]
        assert back.dtype == value.dtype and back.shape == value.shape, key
        assert back.tobytes() == value.tobytes(), key


def strict_load(exported, key_shapes):
    """Loads `exported` into a torch module tree with a parameter (float) or buffer (int)
    registered under every key of `key_shapes`, strictly (missing, unexpected or
    mis-shaped keys fail)."""
    torch = pytest.importorskip("torch")
    root = torch.nn.Module()
    for key, shape in key_shapes.items():
        *path, name = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        if key.endswith("num_batches_tracked"):
            module.register_buffer(name, torch.zeros(shape, dtype=torch.long))
        else:
            module.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))
    state = {k: torch.from_numpy(np.array(v)) for k, v in exported.items()}
    root.load_state_dict(state, strict=True)
    for key, value in root.state_dict().items():
        assert np.array_equal(value.numpy(), np.asarray(exported[key])), key


@pytest.mark.parametrize("infer_type", sorted(RELEASED_NKEYS))
def test_stage2_file_round_trips_bit_exactly_and_loads_strictly(tmp_path, infer_type):
    path = tmp_path / "stage2.ckpt"
    sd = stage2_release_file(path, infer_type)
    exported = round_trip(tmp_path, "anitalker_stage2", path)
    assert list(exported)[0] == "x_T"  # the Lightning module's order: own buffer first
    assert_same_tensors(exported, sd)
    # the online copy as "params" keeps the EMA one apart just as well
    assert_same_tensors(round_trip(tmp_path, "anitalker_stage2", path, weights="model"), sd)
    strict_load(exported, {k: v.shape for k, v in sd.items()})


def test_stage2_export_of_weights_without_buffers_has_the_released_buffers(tmp_path):
    path = tmp_path / "stage2.ckpt"
    sd = stage2_release_file(path, "mfcc_pose_only")
    variables = anitalker.import_checkpoint(path)
    for name in ("buffers", "online"):  # as a training run has them: one copy, no buffers
        del variables[name]
    out = tmp_path / "exported.ckpt"
    anitalker.export_checkpoint(variables, out)
    exported = torch_pickle.load(out)
    assert exported["x_T"].shape == (32, 3, 256, 256) and exported["x_T"].dtype == np.float32
    for key, value in sd.items():
        assert exported[key].dtype == value.dtype and exported[key].shape == value.shape
        if key.startswith("model.") and not key.endswith("num_batches_tracked"):
            assert np.array_equal(exported[key], sd["ema_" + key]), key  # EMA in both copies
    strict_load(exported, {k: v.shape for k, v in sd.items()})


def test_lia_file_round_trips_bit_exactly_and_loads_strictly(tmp_path):
    keys = reference_keys()
    gen = random_state_dict(keys)
    gen["enc.net_app.convs.1.conv2.0.kernel"] = np.nextafter(  # kept as read, not recomputed
        gen["enc.net_app.convs.1.conv2.0.kernel"], np.float32(1)
    )
    path = tmp_path / "vox.pt"
    torch_pickle.save({"gen": gen}, path)
    exported = round_trip(tmp_path, "lia", path)
    assert list(exported) == ["gen"] and list(exported["gen"]) == list(gen)
    assert_same_tensors(exported["gen"], gen)
    strict_load(exported["gen"], dict(keys))


def _stage1_release(seed=0, extra=()):
    """A flat stage-1 file ('lia.' keys, the release's key order) at TINY size."""
    rng = np.random.default_rng(seed)
    reference = lia.reference_params("anitalker_stage1", **TINY)
    sd = {}
    for entry in lia.key_spec("anitalker_stage1", **lia.default_config(**TINY)):
        if isinstance(entry, Rule):
            shape = entry.layout.to_torch(np.zeros(_leaf(reference, entry.param_path))).shape
            sd["lia." + entry.torch_key] = rng.standard_normal(shape, dtype=np.float32)
        else:
            sd["lia." + entry[0]] = np.asarray(entry[1], np.float32)
    sd.update({k: rng.standard_normal(3, dtype=np.float32) for k in extra})
    return sd


def _leaf(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree.shape


def test_stage1_file_round_trips_bit_exactly_and_loads_strictly(tmp_path):
    sd = _stage1_release()
    torch_pickle.save(sd, tmp_path / "stage1.ckpt")
    exported = round_trip(tmp_path, "anitalker_stage1", tmp_path / "stage1.ckpt")
    assert list(exported) == list(sd)
    assert_same_tensors(exported, sd)
    strict_load(exported, {k: v.shape for k, v in sd.items()})
    # training-only keys that import skips on request are kept and written back
    sd = _stage1_release(extra=("club.mu.weight", "aam.weight"))
    torch_pickle.save(sd, tmp_path / "extra.ckpt")
    back = round_trip(
        tmp_path, "anitalker_stage1", tmp_path / "extra.ckpt", kind="auto", ignore_extra=True
    )
    assert_same_tensors(back, sd)
