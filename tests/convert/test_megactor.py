"""MegActor's released checkpoint layout on small crafted files (tiny widths, float16 as the
release trains): import -> weights file -> export gives the same file back, key by key, in
order and bit for bit, with the training counters and the frozen text encoder / VAE entries
kept; every malformed file is a one-line error naming the file and the key; the full-size
key list holds REFERENCE.md's counts."""

import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import megactor, releases, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError
from jaxtalk.models.megactor import MEGACTOR, TINY, MegActor
from jaxtalk.models.megactor import driven_encoder as de
from jaxtalk.models.megactor.denoiser import MegActorConfig
from tests.models.megactor.test_megactor import _inputs, random_params

# what the shapes cannot tell
TINY_HEADS = dict(
    attention_heads=TINY.unet.attention_heads, norm_num_groups=TINY.unet.norm_num_groups
)


def random_variables(cfg: MegActorConfig, seed=0) -> dict:
    shapes = megactor.param_shapes(cfg)["params"]
    rng = np.random.default_rng(seed)
    return {
        "params": jax.tree_util.tree_map(
            lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes
        )
    }


def release_file(path, cfg=TINY, seed=0, dtype=np.float16, wrap=True, extra=None):
    """A file laid out as train.py saves it: {"epoch", "global_step", "state_dict":
    module.text_encoder.*, module.unet.*, module.appearance_encoder.*, module.vae.*}."""
    sd = megactor.export_state_dict(
        random_variables(cfg, seed), dict(megactor.config_to_dict(cfg), dtype=np.dtype(dtype).name)
    )
    rng = np.random.default_rng(seed + 1)
    state = collections.OrderedDict()
    state["module.text_encoder.text_model.embeddings.position_ids"] = np.arange(7)[None]
    state["module.text_encoder.text_model.final_layer_norm.weight"] = rng.standard_normal(6).astype(
        dtype
    )
    state.update(sd)
    state["module.vae.decoder.conv_out.bias"] = rng.standard_normal(3).astype(dtype)
    state.update(extra or {})
    obj = {"epoch": 0, "global_step": 9000, "state_dict": state} if wrap else state
    torch_pickle.save(obj, path)
    return obj


def assert_same_file(got, want):
    if "state_dict" in want:
        assert {k: v for k, v in got.items() if k != "state_dict"} == {
            k: v for k, v in want.items() if k != "state_dict"
        }
        got, want = got["state_dict"], want["state_dict"]
    assert list(got) == list(want)
    for key, value in want.items():
        back = np.asarray(got[key])
        assert back.dtype == value.dtype and back.shape == value.shape, key
        assert back.tobytes() == np.asarray(value).tobytes(), key


@pytest.mark.parametrize("wrap", [True, False])
def test_round_trip_is_bit_exact(tmp_path, wrap):
    source = tmp_path / "checkpoint-steps9000.ckpt"
    want = release_file(source, wrap=wrap)
    stored = tmp_path / "megactor.safetensors"
    releases.import_release("megactor", source, output=str(stored))
    loaded = weights.load(stored)
    assert loaded["release"] == "megactor" and loaded["model_config"]["dtype"] == "float16"
    assert sorted(loaded["params"]) == ["driven_encoder", "reference_net", "unet"]
    out = tmp_path / "exported.ckpt"
    releases.export_release("megactor", loaded, out)
    assert_same_file(torch_pickle.load(out), want)


def test_imported_params_fit_the_model(tmp_path):
    source = tmp_path / "c.ckpt"
    obj = release_file(source, dtype=np.float32)
    variables = megactor.import_checkpoint(source, **TINY_HEADS)
    cfg = megactor.config_of(variables["model_config"])
    assert cfg == TINY
    sd = obj["state_dict"]
    unet = variables["params"]["unet"]
    # torch layouts: conv OIHW -> HWIO, Linear (out, in) -> (in, out)
    np.testing.assert_array_equal(
        unet["conv_in"]["kernel"], sd["module.unet.conv_in.weight"].transpose(2, 3, 1, 0)
    )
    film = variables["params"]["driven_encoder"]["film"]
    np.testing.assert_array_equal(
        film["refer_linears_out_0"]["kernel"],
        sd["module.unet.condition_input_layer.refer_linears_out.0.weight"].T,
    )
    np.testing.assert_array_equal(
        variables["params"]["driven_encoder"]["spatial"]["spatial_conv_layers_1_2"]["bias"],
        sd["module.unet.condition_input_layer.spatial_conv_layers.1.2.bias"],
    )
    model = MegActor(cfg)
    args = [jnp.asarray(a, jnp.float32) for a in _inputs(cfg, b=1, f=2)]
    shapes = jax.tree_util.tree_map(np.shape, {"params": random_params(model, args)})
    assert jax.tree_util.tree_map(np.shape, {"params": variables["params"]}) == shapes
    tables = [k for k in variables["buffers"] if k.endswith("pos_encoder.pe")]
    assert len(tables) == 2 * (2 * 1 + 2 * 2)  # 2 per module; 1 per down, 2 per up layer


def test_full_size_key_list():
    keys = megactor.release_keys(MEGACTOR)
    unet = [k for k in keys if k.startswith("unet.")]
    motion = [k for k in unet if ".motion_modules." in k]
    reference = [k for k in keys if k.startswith("appearance_encoder.")]
    # REFERENCE.md: UNet + DrivenEncoder 740 keys, v3 motion modules 560, ReferenceNet 662
    assert (len(unet) - len(motion), len(motion), len(reference)) == (740, 560, 662)
    assert len(set(keys)) == len(keys)
    assert unet[:4] == [
        "unet.conv_in.weight",
        "unet.conv_in.bias",
        "unet.condition_input_layer.spatial_conv_layers.0.0.weight",
        "unet.condition_input_layer.spatial_conv_layers.0.0.bias",
    ]
    assert "unet.condition_input_layer.refer_convs.30.weight" in unet
    assert not any(k.startswith("unet.mid_block.motion_modules") for k in keys)
    assert "appearance_encoder.up_blocks.3.attentions.2.transformer_blocks.0.norm1.weight" in keys
    assert "appearance_encoder.up_blocks.3.attentions.2.proj_out.weight" not in keys


def test_config_round_trips_through_metadata():
    for cfg in (TINY, MEGACTOR):
        assert megactor.config_of(megactor.config_to_dict(cfg)) == cfg
    with pytest.raises(ConversionError, match="megactor model_config"):
        megactor.config_of({"unet": {"no_such_field": 1}})


def _one_line(err):
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_malformed_files_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.ckpt"
    good = release_file(tmp_path / "good.ckpt", dtype=np.float32)["state_dict"]

    def fails(state, match):
        torch_pickle.save({"state_dict": state}, path)
        with pytest.raises(ConversionError) as err:
            megactor.import_checkpoint(path)
        text = _one_line(err)
        assert str(path) in text and match in text, text

    gone = "module.unet.down_blocks.0.resnets.0.norm2.bias"
    fails({k: v for k, v in good.items() if k != gone}, f"missing key {gone[7:]!r}")
    key = "module.unet.down_blocks.0.resnets.0.conv1.weight"
    fails(
        {**good, "module.controlnet.conv_in.weight": np.zeros(3)},
        "'module.controlnet.conv_in.weight'",
    )
    fails({**good, "module.unet.extra.weight": np.zeros(3)}, "unexpected key 'unet.extra.weight'")
    bad = dict(good)
    bad[key] = good[key][:, :-1]
    fails(bad, "'unet.down_blocks.0.resnets.0.conv1.weight' has shape")
    pe = next(k for k in good if k.endswith("pos_encoder.pe"))
    bad = dict(good)
    bad[pe] = good[pe] + 1.0
    fails(bad, "is not the sinusoidal position table")
    fails(
        {k: v for k, v in good.items() if not k.startswith("module.appearance_encoder.")},
        "no appearance_encoder.* keys",
    )
    torch_pickle.save([1, 2], path)
    with pytest.raises(ConversionError) as err:
        megactor.import_checkpoint(path)
    assert str(path) in _one_line(err)


def test_export_without_an_imported_file(tmp_path):
    """Params that were never imported (a jaxtalk-trained model) export as train.py saves
    them: {"state_dict": module.unet.* + module.appearance_encoder.*}, float32 by default,
    position tables computed; the file imports back to the same params."""
    variables = random_variables(TINY, seed=4)
    variables["model_config"] = megactor.config_to_dict(TINY)
    out = tmp_path / "trained.ckpt"
    megactor.export_checkpoint(variables, out)
    obj = torch_pickle.load(out)
    assert list(obj) == ["state_dict"]
    assert list(obj["state_dict"]) == ["module." + k for k in megactor.release_keys(TINY)]
    back = megactor.import_checkpoint(out, **TINY_HEADS)
    for a, b in zip(
        jax.tree_util.tree_leaves(back["params"]), jax.tree_util.tree_leaves(variables["params"])
    ):
        np.testing.assert_array_equal(a, b)


def test_release_is_registered():
    spec = releases.find_release("megactor")
    assert spec.converter == "jaxtalk.convert.megactor" and "RawVideoDriven" in spec.source


def test_driven_config_detection_without_film(tmp_path):
    cfg = dataclasses.replace(TINY, driven=dataclasses.replace(TINY.driven, film=False))
    path = tmp_path / "nofilm.ckpt"
    release_file(path, cfg=cfg, dtype=np.float32)
    imported = megactor.config_of(megactor.import_checkpoint(path, **TINY_HEADS)["model_config"])
    # without the FiLM branch the file says nothing of it: its fields keep their defaults
    driven = de.DrivenEncoderConfig(widths=TINY.driven.widths, film=False)
    assert imported == dataclasses.replace(cfg, driven=driven)
