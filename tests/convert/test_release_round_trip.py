"""Whole-file round trips: a file in a release's layout (its key list and order, buffers and
counters included, at tiny sizes, random values) -> `jaxtalk import` -> weights file ->
`jaxtalk export` is the same file, key by key and bit for bit; and, where torch is
installed, the exported file loads with a strict `load_state_dict` into a module tree
built from the release's key list."""

import argparse
import collections
import functools

import numpy as np
import pytest

from jaxtalk.convert import anitalker, lia, releases, safe_pickle, torch_pickle, weights
from jaxtalk.convert.mapping import Rule
from tests.convert.test_anitalker import TINY_KEYS_CONFIG, tiny_release_file
from tests.convert.test_lia import TINY


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


def module_tree(key_shapes):
    """A torch module tree with every key of `key_shapes` registered in order: counters
    (int) and blur kernels as buffers, as the releases have them, the rest as parameters."""
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
        elif key.endswith(".kernel"):
            module.register_buffer(name, torch.zeros(shape))
        else:
            module.register_parameter(name, torch.nn.Parameter(torch.zeros(shape)))
    return root


def strict_load(exported, key_shapes):
    """Loads `exported` into `module_tree(key_shapes)` strictly (missing, unexpected or
    mis-shaped keys fail) and checks every value arrived."""
    torch = pytest.importorskip("torch")
    root = module_tree(key_shapes)
    state = {k: torch.from_numpy(np.array(v)) for k, v in exported.items()}
    root.load_state_dict(state, strict=True)
    for key, value in root.state_dict().items():
        assert np.array_equal(value.numpy(), np.asarray(exported[key])), key


# Two of the five stage-2 variants, between them every released key group (HuBERT's layer mix
# and conformer, the MFCC down-sampling, the pose, location and face-scale LSTMs), on tiny
# files: the bytes' path does not depend on the sizes. All five variants' keys and shapes at
# the released sizes, and the config read from them, are test_anitalker's rules test.
TINY_VARIANTS = {
    "hubert_full_control": TINY_KEYS_CONFIG,
    "mfcc_pose_only": dict(TINY_KEYS_CONFIG, infer_type="mfcc_pose_only"),
}


def stage2_round_trip(tmp_path, infer_type):
    path, sd = tiny_release_file(tmp_path, TINY_VARIANTS[infer_type])
    return round_trip(tmp_path, "anitalker_stage2", path), sd


@pytest.mark.parametrize("infer_type", sorted(TINY_VARIANTS))
def test_stage2_file_round_trips_bit_exactly(tmp_path, infer_type):
    exported, sd = stage2_round_trip(tmp_path, infer_type)
    assert list(exported)[0] == "x_T"  # the Lightning module's order: own buffer first
    assert_same_tensors(exported, sd)


def test_stage2_file_imported_with_its_online_copy_round_trips_as_well(tmp_path):
    """The online copy as "params" keeps the EMA one apart just as well (a tiny file: which
    copy is chosen depends neither on the speech encoder nor on the sizes)."""
    path, sd = tiny_release_file(tmp_path)
    assert_same_tensors(round_trip(tmp_path, "anitalker_stage2", path, weights="model"), sd)


RELEASED_X_T = (32, 3, 256, 256)  # the release's, not the module's constant


def stage2_export_without_buffers(tmp_path):
    """A training run's weights (one copy, no buffers) exported; and the released file."""
    path, sd = tiny_release_file(tmp_path)
    variables = anitalker.import_checkpoint(path)
    for name in ("buffers", "online"):  # as a training run has them: one copy, no buffers
        del variables[name]
    out = tmp_path / "exported.ckpt"
    anitalker.export_checkpoint(variables, out)
    return torch_pickle.load(out), sd


def test_stage2_export_of_weights_without_buffers_has_the_released_buffers(tmp_path):
    """A training run's weights export as both copies and the release's `x_T` (its shape,
    whatever the model's size: a tiny file)."""
    exported, sd = stage2_export_without_buffers(tmp_path)
    assert exported["x_T"].shape == RELEASED_X_T and exported["x_T"].dtype == np.float32
    assert set(exported) == set(sd)
    for key, value in sd.items():
        if key == "x_T":
            continue
        assert exported[key].dtype == value.dtype and exported[key].shape == value.shape
        if key.startswith("model.") and not key.endswith("num_batches_tracked"):
            assert np.array_equal(exported[key], sd["ema_" + key]), key  # EMA in both copies


def lia_round_trip(tmp_path):
    gen = tiny_lia_generator(np.random.default_rng(0))
    blur = next(k for k in gen if k.endswith(".kernel"))
    gen[blur] = np.nextafter(gen[blur], np.float32(1))
    path = tmp_path / "vox.pt"
    torch_pickle.save({"gen": gen}, path)
    return round_trip(tmp_path, "lia", path), gen


def test_lia_file_round_trips_bit_exactly(tmp_path):
    """The generator's state_dict in the release's key order (its key spec, which
    test_lia checks against the released list) at TINY size; a blur kernel one ulp off the
    release's values is kept as read, not recomputed."""
    exported, gen = lia_round_trip(tmp_path)
    assert list(exported) == ["gen"] and list(exported["gen"]) == list(gen)
    assert_same_tensors(exported["gen"], gen)


def spec_state_dict(spec, reference, rng, prefix=""):
    """A state_dict in the order of a converter's key spec: random parameters of the
    shapes `reference` (the params tree) gives, the spec's buffer values."""
    sd = {}
    for entry in spec:
        if isinstance(entry, Rule):
            leaf = reference
            for part in entry.param_path.split("/"):
                leaf = leaf[part]
            shape = entry.layout.to_torch(np.zeros(leaf.shape)).shape
            sd[prefix + entry.torch_key] = rng.standard_normal(shape, dtype=np.float32)
        else:
            sd[prefix + entry[0]] = np.asarray(entry[1], np.float32)
    return sd


def tiny_lia_generator(rng):
    """LIA's generator state_dict at TINY size, in its key spec's (the release's) order."""
    spec = lia.key_spec("lia", **lia.default_config(**TINY))
    return spec_state_dict(spec, lia.reference_params("lia", **TINY), rng)


def _stage1_release(seed=0, extra=()):
    """A flat stage-1 file ('lia.' keys, the release's key order) at TINY size."""
    rng = np.random.default_rng(seed)
    spec = lia.key_spec("anitalker_stage1", **lia.default_config(**TINY))
    sd = spec_state_dict(spec, lia.reference_params("anitalker_stage1", **TINY), rng, "lia.")
    sd.update({k: rng.standard_normal(3, dtype=np.float32) for k in extra})
    return sd


def stage1_round_trip(tmp_path):
    sd = _stage1_release()
    torch_pickle.save(sd, tmp_path / "stage1.ckpt")
    return round_trip(tmp_path, "anitalker_stage1", tmp_path / "stage1.ckpt"), sd


def test_stage1_file_round_trips_bit_exactly(tmp_path):
    exported, sd = stage1_round_trip(tmp_path)
    assert list(exported) == list(sd)
    assert_same_tensors(exported, sd)
    # training-only keys that import skips on request are kept and written back in place
    sd = _stage1_release(extra=("club.mu.weight", "aam.weight"))
    sd = {"aam.weight": sd.pop("aam.weight"), **sd}
    torch_pickle.save(sd, tmp_path / "extra.ckpt")
    back = round_trip(
        tmp_path, "anitalker_stage1", tmp_path / "extra.ckpt", kind="auto", ignore_extra=True
    )
    assert list(back) == list(sd)
    assert_same_tensors(back, sd)


def strict_case(build, part=None, **released_shapes):
    """`build`'s exported state_dict (or its `part`) and the key shapes of the released file
    it was made from, with the release's shapes where they differ."""

    def case(tmp_path):
        exported, sd = build(tmp_path)
        return (exported[part] if part else exported), {
            **{k: v.shape for k, v in sd.items()},
            **released_shapes,
        }

    return case


STRICT_LOADS = {
    **{
        f"stage2_{infer_type}": strict_case(
            functools.partial(stage2_round_trip, infer_type=infer_type)
        )
        for infer_type in TINY_VARIANTS
    },
    "stage2_without_buffers": strict_case(stage2_export_without_buffers, x_T=RELEASED_X_T),
    "lia": strict_case(lia_round_trip, part="gen"),
    "stage1": strict_case(stage1_round_trip),
}


@pytest.mark.parametrize("case", sorted(STRICT_LOADS))
def test_exported_file_loads_strictly_in_torch(tmp_path, case):
    pytest.importorskip("torch")
    strict_load(*STRICT_LOADS[case](tmp_path))


# ----------------------------------------------------------------------------- whole files


def assert_same_file(got, want, where="file"):
    """The same object tree: container types, keys in order (and of the same type), plain
    values of the same type and value, tensors of the same dtype, shape and bits (numpy
    from jaxtalk's reader, torch.Tensor from torch.load)."""
    assert type(got) is type(want), (where, type(got), type(want))
    if hasattr(want, "numpy") or isinstance(want, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        assert got.tobytes() == want.tobytes(), where
    elif isinstance(want, dict):
        assert [(type(k), k) for k in got] == [(type(k), k) for k in want], where
        for key in want:
            assert_same_file(got[key], want[key], f"{where}[{key!r}]")
    elif hasattr(want, "__dict__") and not isinstance(want, type):  # argparse.Namespace
        assert_same_file(vars(got), vars(want), f"{where}.__dict__")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same_file(a, b, f"{where}[{i}]")
    else:
        assert got == want, where


def _adam_state(rng, shapes, old_torch):
    """An Adam state_dict for parameters of `shapes` with LIA's settings (lr 0.002 * 4/5,
    betas (0, 0.99 ** (4/5))): 'step' a Python int and fewer flags as torch 1.x wrote it."""
    state = {}
    for i, shape in enumerate(shapes):
        state[i] = {
            "step": 1234 if old_torch else np.asarray(1234.0, np.float32),
            "exp_avg": rng.standard_normal(shape, dtype=np.float32),
            "exp_avg_sq": rng.random(shape, dtype=np.float32),
        }
    group = {"lr": 0.002 * 0.8, "betas": (0.0, 0.99**0.8), "eps": 1e-08, "weight_decay": 0}
    group.update({"amsgrad": False} if old_torch else {"amsgrad": False, "foreach": None})
    group["params"] = list(range(len(shapes)))
    return {"state": state, "param_groups": [group]}


def lia_training_file(path, seed=0):
    """wyhsirius/LIA's trainer checkpoint at TINY size, written as torch 1.x did: 'gen',
    'dis' (state_dicts), 'g_optim', 'd_optim' (Adam states over their parameters) and
    'args' (the argparse.Namespace of train.py)."""
    rng = np.random.default_rng(seed)
    cfg = lia.default_config(**TINY)
    gen = tiny_lia_generator(rng)
    dis_spec = lia.discriminator_key_spec(cfg["size"], cfg["width"])
    dis_ref = lia.discriminator_reference_params(cfg["size"], cfg["width"])
    dis = spec_state_dict(dis_spec, dis_ref, rng)
    args = safe_pickle.RECORD_TYPES[("argparse", "Namespace")](
        iter=800000, size=32, batch_size=64, d_reg_every=16, g_reg_every=4, resume_ckpt=None,
        lr=0.002, channel_multiplier=1, start_iter=0, display_freq=5000, save_freq=1000,
        latent_dim_style=32, latent_dim_motion=5, dataset="vox", exp_path="./exps/",
        exp_name="v1", addr="localhost", port="12345",
    )  # fmt: skip
    trained = [v.shape for k, v in gen.items() if not k.endswith(".kernel")]
    obj = torch_pickle.PlainDict(
        gen=collections.OrderedDict(gen),
        dis=collections.OrderedDict(dis),
        g_optim=_adam_state(rng, trained, old_torch=True),
        d_optim=_adam_state(
            rng, [v.shape for k, v in dis.items() if not k.endswith(".kernel")], True
        ),
        args=args,
    )
    torch_pickle.save(obj, path)
    return torch_pickle.load(path)


def test_lia_training_file_round_trips_whole(tmp_path):
    """gen, dis, both Adam states (int-keyed, tuples, None) and the Namespace come back."""
    path = tmp_path / "000100.pt"
    read = lia_training_file(path)
    assert isinstance(read["args"], safe_pickle.Record) and read["args"]["lr"] == 0.002
    exported = round_trip(tmp_path, "lia", path)
    assert_same_file(exported, read)
    # the discriminator exported from params takes the kept 'dis' entry's place
    variables = lia.import_checkpoint(path, discriminator=True)
    dis = variables.pop("discriminator_params")
    lia.export_checkpoint(variables, tmp_path / "d.pt", "lia", variables["model_config"], dis)
    assert_same_file(torch_pickle.load(tmp_path / "d.pt"), read)


def test_lia_training_file_written_by_torch_round_trips_whole(tmp_path):
    """torch writes the trainer's file itself (real Adam states after a step, a real
    Namespace); after import and export torch reads the same objects, the generator loads
    strictly and the optimizer state loads into Adam."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    cfg = lia.default_config(**TINY)
    gen = tiny_lia_generator(rng)
    dis_spec = lia.discriminator_key_spec(cfg["size"], cfg["width"])
    dis_ref = lia.discriminator_reference_params(cfg["size"], cfg["width"])
    dis = spec_state_dict(dis_spec, dis_ref, rng)
    nets, optims = {}, {}
    for name, sd in (("gen", gen), ("dis", dis)):
        net = module_tree({k: v.shape for k, v in sd.items()})
        net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        ratio = 4 / 5 if name == "gen" else 16 / 17
        opt = torch.optim.Adam(net.parameters(), lr=0.002 * ratio, betas=(0**ratio, 0.99**ratio))
        for p in net.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
        nets[name], optims[name] = net, opt
    args = argparse.Namespace(size=32, lr=0.002, resume_ckpt=None, dataset="vox")
    path = tmp_path / "000100.pt"
    torch.save(
        {
            "gen": nets["gen"].state_dict(),
            "dis": nets["dis"].state_dict(),
            "g_optim": optims["gen"].state_dict(),
            "d_optim": optims["dis"].state_dict(),
            "args": args,
        },
        path,
    )
    round_trip(tmp_path, "lia", path)
    want = torch.load(path, weights_only=False)
    got = torch.load(tmp_path / "exported.pt", weights_only=False)
    assert_same_file(got, want)
    strict_load({k: v.numpy() for k, v in got["gen"].items()}, {k: v.shape for k, v in gen.items()})
    fresh = torch.optim.Adam(module_tree({k: v.shape for k, v in gen.items()}).parameters())
    fresh.load_state_dict(got["g_optim"])
    assert_same_file(fresh.state_dict(), want["g_optim"])


def test_stage1_lightning_file_round_trips_whole(tmp_path):
    """A Lightning-layout stage-1 file: the 'lia.' state_dict among training-only keys and
    the trainer's entries (counters, optimizer and callback states, AttributeDict
    hyper-parameters) comes back whole."""
    rng = np.random.default_rng(1)
    sd = _stage1_release(extra=("club.mu.weight",))
    state = collections.OrderedDict({"aam.weight": rng.standard_normal((4, 3), np.float32), **sd})
    hparams = safe_pickle.RECORD_TYPES[("pytorch_lightning.utilities.parsing", "AttributeDict")]
    obj = torch_pickle.PlainDict(
        epoch=12,
        global_step=34567,
        **{"pytorch-lightning_version": "1.9.0"},
        state_dict=state,
        loops={"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 13}}}},
        callbacks={"ModelCheckpoint{'monitor': None}": {"best_model_score": np.float32(0.5)}},
        optimizer_states=[_adam_state(rng, [(4, 3), (5,)], old_torch=False)],
        lr_schedulers=[],
        hparams_name="conf",
        hyper_parameters=hparams(lr=1e-4, milestones=(10, 20), name="stage1", flags={1, 2}),
    )
    obj["callbacks"]["ModelCheckpoint{'monitor': None}"]["best_model_score"] = np.asarray(
        0.5, np.float32
    )
    path = tmp_path / "stage1_lightning.ckpt"
    torch_pickle.save(obj, path)
    read = torch_pickle.load(path)
    back = round_trip(tmp_path, "anitalker_stage1", path, kind="auto", ignore_extra=True)
    assert_same_file(back, read)
    assert type(back["hyper_parameters"]).__name__ == "AttributeDict"
