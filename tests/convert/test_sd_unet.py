"""The SD UNet converter: diffusers folders and single state_dict files (.safetensors, torch
.pth / .bin) import and export bit for bit, in diffusers' key order; the widths come from
config.json or from the tensors (ReferenceNet variants included); a missing or unexpected
key, a wrong shape or an unsupported config is a one-line error naming the file and key."""

import dataclasses
import json

import numpy as np
import pytest

from jaxtalk.convert import releases, sd_unet, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, flatten_params, to_state_dict
from jaxtalk.errors import InputError
from jaxtalk.models.latent_diffusion import unet as ld


def random_state_dict(config=ld.TINY, seed=0):
    """Every key of `config`'s UNet in diffusers' order, random float32 values."""
    rng = np.random.default_rng(seed)
    flat = flatten_params(sd_unet.param_shapes(config))
    return {
        r.torch_key: rng.standard_normal(
            r.layout.to_torch(np.empty(flat[r.param_path].shape, np.int8)).shape
        ).astype(np.float32)
        for r in sd_unet.unet_rules(config)
    }


def assert_same(got, want, ordered=True):
    """Same tensors bit for bit; in the same order unless read from safetensors (whose
    header keeps names sorted)."""
    assert list(got) == list(want) if ordered else sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].tobytes() == value.tobytes(), key


def write_folder(root, sd, config, weights_name="diffusion_pytorch_model.safetensors"):
    unet = root / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(sd_unet.config_to_diffusers(config)))
    target = unet / weights_name
    if weights_name.endswith(".safetensors"):
        from safetensors.numpy import save_file

        save_file(sd, str(target))
    else:
        torch_pickle.save(sd, target)
    return root


@pytest.mark.parametrize("layout", ["folder", "folder_bin", "safetensors", "pth"])
def test_round_trip_is_bit_exact(tmp_path, layout):
    sd = random_state_dict()
    if layout.startswith("folder"):
        name = "diffusion_pytorch_model." + ("bin" if layout == "folder_bin" else "safetensors")
        source = write_folder(tmp_path / "sd", sd, ld.TINY, name)
    elif layout == "safetensors":
        from safetensors.numpy import save_file

        source = tmp_path / "unet.safetensors"
        save_file(sd, str(source))
    else:
        source = tmp_path / "denoising_unet.pth"
        torch_pickle.save(sd, source)
    variables = sd_unet.import_checkpoint(source, attention_heads=2, norm_num_groups=8)
    assert sd_unet.config_of(variables["model_config"]) == ld.TINY
    for suffix in ("out.safetensors", "out.pth", "out_folder"):
        out = tmp_path / suffix
        sd_unet.export_checkpoint(variables, out)
        if suffix == "out_folder":
            assert sd_unet.config_from_diffusers(
                json.loads((out / "config.json").read_text())
            ) == dataclasses.replace(ld.TINY)
            out = out / "diffusion_pytorch_model.safetensors"
        assert_same(sd_unet.read_state_dict(out), sd, ordered=str(out).endswith(".pth"))


def test_release_import_and_export(tmp_path):
    sd = random_state_dict(seed=1)
    source = write_folder(tmp_path / "sd", sd, ld.TINY)
    stored = releases.import_release("sd15_unet", source, output=str(tmp_path / "w.safetensors"))
    out = tmp_path / "back.pth"
    releases.export_release("sd15_unet", weights.load(stored), out)
    assert_same(torch_pickle.load_state_dict(out), sd)


@pytest.mark.parametrize(
    "changes,variant",
    [
        (dict(conv_out=False), "AniPortrait ReferenceNet"),
        (dict(conv_out=False, cut_at_last_norm1=True), "MegActor ReferenceNet"),
        (dict(in_channels=13), "MegActor's 13-channel conv_in"),
    ],
)
def test_variants_are_detected_from_the_tensors(tmp_path, changes, variant):
    config = dataclasses.replace(ld.TINY, **changes)
    sd = random_state_dict(config)
    path = tmp_path / "net.pth"
    torch_pickle.save(sd, path)
    variables = sd_unet.import_checkpoint(path, attention_heads=2, norm_num_groups=8)
    assert sd_unet.config_of(variables["model_config"]) == config, variant
    sd_unet.export_checkpoint(variables, tmp_path / "back.pth")
    assert_same(torch_pickle.load_state_dict(tmp_path / "back.pth"), sd)


def one_line_error(path, match):
    with pytest.raises(ConversionError, match=match) as info:
        sd_unet.import_checkpoint(path, attention_heads=2, norm_num_groups=8)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_strict_errors_name_the_file_and_key(tmp_path):
    sd = random_state_dict()
    path = tmp_path / "u.pth"
    missing = {k: v for k, v in sd.items() if k != "mid_block.resnets.1.conv2.bias"}
    torch_pickle.save(missing, path)
    one_line_error(path, "missing key 'mid_block.resnets.1.conv2.bias'")
    torch_pickle.save({**sd, "mid_block.extra.weight": np.zeros(3, np.float32)}, path)
    one_line_error(path, "unexpected key 'mid_block.extra.weight'")
    torch_pickle.save({**sd, "time_embedding.linear_2.weight": np.zeros((3, 3), np.float32)}, path)
    one_line_error(path, r"key 'time_embedding.linear_2.weight' has shape \(3, 3\)")
    torch_pickle.save({"conv_in.weight": np.zeros((4, 4, 3, 3), np.float32)}, path)
    one_line_error(path, "not a diffusers UNet state_dict")


def test_unsupported_configs_and_folders(tmp_path):
    config = sd_unet.config_to_diffusers(ld.TINY)
    with pytest.raises(ConversionError, match="x.json: use_linear_projection=True"):
        sd_unet.config_from_diffusers({**config, "use_linear_projection": True}, "x.json")
    with pytest.raises(ConversionError, match="do not mirror"):
        sd_unet.config_from_diffusers({**config, "up_block_types": ["UpBlock2D"] * 2}, "x.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a diffusers folder"):
        sd_unet.import_checkpoint(tmp_path / "empty")


def test_inflated_unet_with_motion_modules_round_trips():
    """A file holding the inflated UNet's keys and its motion modules' (named as the
    releases name them) imports into the 3-D UNet's params and back, bit for bit."""
    from tests.models.latent_diffusion.test_unet import TemporalMix, temporal_mix_rules

    rules = sd_unet.unet_rules(ld.TINY, temporal_mix_rules, motion_mid=True)
    reference = sd_unet.param_shapes(ld.TINY, TemporalMix, motion_mid=True)
    flat = flatten_params(reference)
    rng = np.random.default_rng(3)
    sd = {
        r.torch_key: rng.standard_normal(
            r.layout.to_torch(np.empty(flat[r.param_path].shape, np.int8)).shape
        ).astype(np.float32)
        for r in rules
    }
    assert "mid_block.motion_modules.0.proj.weight" in sd
    assert "up_blocks.1.motion_modules.1.proj.bias" in sd
    params = sd_unet.params_from_state_dict(
        sd, ld.TINY, "combined.pth", TemporalMix, temporal_mix_rules, motion_mid=True
    )
    assert_same(to_state_dict(params, rules), sd)
    unet_only = {k: v for k, v in sd.items() if ".motion_modules." not in k}
    with pytest.raises(ConversionError, match="combined.pth: missing key .*motion_modules"):
        sd_unet.params_from_state_dict(
            unet_only, ld.TINY, "combined.pth", TemporalMix, temporal_mix_rules, motion_mid=True
        )
