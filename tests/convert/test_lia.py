"""LIA / AniTalker stage-1 converter: key lists, the release's config from its shapes, layouts, errors, consistency."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import lia as conv
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import ConversionError, Rule
from jaxtalk.models.layers.upfirdn import make_kernel
from jaxtalk.train.grouped_init import grouped_initializers

KEYS = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "..",
    "shared",
    "reference",
    "keys",
    "lia_generator_state_dict.txt",
)
TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


def reference_keys(prefix=("enc.", "dec.")):
    if not os.path.exists(KEYS):
        pytest.skip("reference key list not available")
    out = []
    for line in open(KEYS):
        parts = line.split(" ", 1)
        if parts[0].startswith(prefix):
            out.append(
                (parts[0], tuple(int(s) for s in parts[1].strip(" ()\n").split(",") if s.strip()))
            )
    return out


def spec_keys(spec):
    return [r.torch_key if isinstance(r, Rule) else r[0] for r in spec]


def random_state_dict(keys_shapes, seed=0):
    rng = np.random.default_rng(seed)
    sd = {}
    for k, shape in keys_shapes:
        if k.endswith(".kernel"):  # blur buffers: the release's values
            up = ".upsample." in k or ".blur." in k
            sd[k] = make_kernel([1, 3, 3, 1]) * (4 if up else 1)
        else:
            sd[k] = rng.standard_normal(shape).astype(np.float32)
    return sd


def test_key_spec_equals_the_released_key_list():
    ref = reference_keys()
    assert spec_keys(conv.key_spec("lia")) == [k for k, _ in ref]  # same keys, same order
    ani = spec_keys(conv.key_spec("anitalker_stage1"))
    assert len(ani) == 204
    added = [k for k in ani if k not in {k for k, _ in ref}]
    assert len(added) == 19 and "enc.net_app.ws.weights" in added
    assert {k.rsplit(".", 1)[0] for k in added if "fc" in k and "net_app" in k} == {
        "enc.net_app.fc1",
        "enc.net_app.fc2",
        "enc.net_app.fc3",
    }
    d_lines = [line.split()[1] for line in open(KEYS) if line.startswith("D ")]
    assert spec_keys(conv.discriminator_key_spec()) == d_lines


def test_released_shapes_give_the_release_config_and_layouts_convert(tmp_path):
    """The released key list's shapes (no values) read as the release's config; the layouts
    and an exact round trip on a TINY file (the full-size file's round trip is
    tests/convert/test_release_round_trip.py's)."""
    zeros = {k: np.broadcast_to(np.float32(0), s) for k, s in reference_keys()}
    assert conv.infer_config(zeros) == dict(size=256, style_dim=512, motion_dim=20, width=1.0)
    ref = conv.reference_params("lia", **TINY)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape, np.float32), ref)
    sd = conv.params_to_state_dict(params, "lia", **TINY)
    path = tmp_path / "vox.pt"
    torch_pickle.save({"gen": sd, "args": {"size": 32}}, path)
    out = conv.import_checkpoint(path)
    assert out["model_config"] == dict(TINY, kind="lia")
    p = out["params"]
    # layouts: OIHW -> HWIO, (1,C,1,1) -> (C,), modulated (1,O,I,k,k) -> (k,k,I,O)
    np.testing.assert_array_equal(
        p["enc"]["net_app"]["convs_1"]["conv1"]["conv"]["kernel"],
        sd["enc.net_app.convs.1.conv1.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        p["dec"]["convs_0"]["conv"]["kernel"],
        sd["dec.convs.0.conv.weight"][0].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(p["enc"]["fc_4"]["kernel"], sd["enc.fc.4.weight"].T)
    assert p["dec"]["to_rgb1"]["conv"]["act"]["bias"].shape == (3,)
    back = tmp_path / "back.pt"
    conv.export_checkpoint({"params": p}, back, "lia", out["model_config"])
    re = torch_pickle.load_state_dict(back, "gen")
    assert list(re) == list(sd)
    for k in sd:
        assert re[k].dtype == np.float32 and np.array_equal(re[k], sd[k]), k


def test_anitalker_lightning_round_trip_and_extra_keys(tmp_path):
    spec = conv.key_spec("anitalker_stage1", **TINY)
    ref = conv.reference_params("anitalker_stage1", **TINY)
    params = jax.tree_util.tree_map(
        lambda s: np.random.default_rng(0).standard_normal(s.shape).astype(np.float32), ref
    )
    path = tmp_path / "stage1.ckpt"
    conv.export_checkpoint({"params": params}, path, "anitalker_stage1", TINY)
    raw = torch_pickle.load(path)  # flat, as the official load_lightning_model iterates it
    assert [k[4:] for k in raw] == spec_keys(spec) and all(k.startswith("lia.") for k in raw)
    out = conv.import_checkpoint(path)
    assert out["model_config"]["kind"] == "anitalker_stage1"
    jax.tree_util.tree_map(np.testing.assert_array_equal, out["params"], params)
    # a Lightning file (the module's state_dict under 'state_dict') also imports
    torch_pickle.save({"state_dict": dict(raw)}, tmp_path / "lightning.ckpt")
    assert conv.import_checkpoint(tmp_path / "lightning.ckpt")["model_config"]["size"] == 32
    # training-only keys outside `lia.` are an error unless ignored
    torch_pickle.save(
        {"state_dict": dict(raw, **{"club.w": np.zeros(3, np.float32)})},
        tmp_path / "extra.ckpt",
    )
    with pytest.raises(ConversionError, match="outside the 'lia.' generator"):
        conv.import_checkpoint(tmp_path / "extra.ckpt")
    conv.import_checkpoint(tmp_path / "extra.ckpt", ignore_extra=True)


def test_import_errors_are_loud(tmp_path):
    ref = conv.reference_params("lia", **TINY)
    params = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32), ref)
    sd = conv.params_to_state_dict(params, "lia", **TINY)
    missing = dict(sd)
    del missing["dec.to_rgb1.bias"]
    with pytest.raises(ConversionError, match="to_rgb1"):
        conv.state_dict_to_params(missing, "lia", **TINY)
    extra = dict(sd, **{"dec.bogus.weight": np.zeros(2, np.float32)})
    with pytest.raises(ConversionError, match="unexpected key 'dec.bogus.weight'"):
        conv.state_dict_to_params(extra, "lia", **TINY)
    wrong = dict(sd, **{"enc.fc.0.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(ConversionError, match="enc.fc.0.weight"):
        conv.state_dict_to_params(wrong, "lia", **TINY)
    blur = dict(sd, **{"dec.to_flows.0.upsample.kernel": np.ones((4, 4), np.float32)})
    with pytest.raises(ConversionError, match="blur kernel"):
        conv.state_dict_to_params(blur, "lia", **TINY)
    torch_pickle.save({"model": sd}, tmp_path / "x.pt")
    with pytest.raises(ConversionError, match="neither a LIA checkpoint"):
        conv.import_checkpoint(tmp_path / "x.pt")


def test_imported_params_run_like_the_originals(tmp_path):
    model = conv.build_model("lia", **TINY)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32))
    v = nn.unbox(jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(3), x, x[:, ::-1]))
    conv.export_checkpoint(v, tmp_path / "g.pt", "lia", TINY)
    imported = conv.import_checkpoint(tmp_path / "g.pt")
    run = jax.jit(model.apply)
    np.testing.assert_array_equal(
        np.asarray(run({"params": imported["params"]}, x, x[:, ::-1])["image"]),
        np.asarray(run(v, x, x[:, ::-1])["image"]),
    )


def test_discriminator_round_trip(tmp_path):
    ref = conv.discriminator_reference_params(32, 1 / 16)
    dp = jax.tree_util.tree_map(
        lambda s: np.random.default_rng(1).standard_normal(s.shape).astype(np.float32), ref
    )
    gp = jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, np.float32), conv.reference_params("lia", **TINY)
    )
    conv.export_checkpoint({"params": gp}, tmp_path / "c.pt", "lia", TINY, discriminator_params=dp)
    raw = torch_pickle.load(tmp_path / "c.pt")
    assert raw["dis"]["final_linear.0.weight"].shape == (32, 32 * 16)
    out = conv.import_checkpoint(tmp_path / "c.pt", discriminator=True)
    jax.tree_util.tree_map(np.testing.assert_array_equal, out["discriminator_params"], dp)
