"""sd_vae: diffusers AutoencoderKL folders and files <-> jaxtalk params. Key-complete and
bit-exact both ways (new and old attention key names, folder and single-file layouts),
one-line errors naming the file and the key, the full key list against diffusers', and
parity with diffusers' AutoencoderKL on a tiny config with random weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import hf_files, releases, sd_vae, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, to_params
from jaxtalk.errors import CheckpointError
from jaxtalk.models.latent_diffusion.vae import SD_VAE, TINY_VAE, AutoencoderKL
from tests.convert.hf_parity import check, errors, hf_fields, numpy_state, reference
from tests.evaluate.torch_layout import random_state_dict

TINY_HF_CONFIG = {
    "_class_name": "AutoencoderKL",
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": list(TINY_VAE.block_out_channels),
    "layers_per_block": TINY_VAE.layers_per_block,
    "norm_num_groups": TINY_VAE.norm_num_groups,
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "act_fn": "silu",
    "scaling_factor": 0.18215,
}


def tiny_state(style="new", seed=0):
    rng = np.random.default_rng(seed)
    return random_state_dict(
        sd_vae.rules_for(TINY_VAE, style), sd_vae.param_shapes(TINY_VAE), rng, False
    )


def write_folder(folder, state, name="diffusion_pytorch_model.safetensors", config=None):
    folder.mkdir(parents=True, exist_ok=True)
    hf_files.write_state_dict(state, str(folder / name), {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config or TINY_HF_CONFIG))
    return folder


def assert_same(got: dict, want: dict):
    assert list(got) == list(want) or sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
        assert got[key].tobytes() == value.tobytes(), key


def through_weights_file(tmp_path, source):
    """`jaxtalk import --release=sd_vae` -> weights file -> loaded variables."""
    stored = releases.import_release("sd_vae", source, output=str(tmp_path / "vae.safetensors"))
    return weights.load(stored)


def test_folder_round_trip_is_bit_exact(tmp_path):
    state = tiny_state()
    write_folder(tmp_path / "in" / "vae", state)  # a pipeline folder's vae/
    variables = through_weights_file(tmp_path, tmp_path / "in")
    assert sd_vae.vae_config(variables["model_config"]) == TINY_VAE
    assert variables["model_config"]["attention_keys"] == "new"
    releases.export_release("sd_vae", variables, tmp_path / "out")
    back, metadata = hf_files.read_state_dict(
        str(tmp_path / "out" / "diffusion_pytorch_model.safetensors")
    )
    assert_same(back, state)
    assert metadata == {"format": "pt"}
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written == TINY_HF_CONFIG
    kernel = variables["params"]["encoder"]["conv_in"]["kernel"]
    np.testing.assert_array_equal(kernel, state["encoder.conv_in.weight"].transpose(2, 3, 1, 0))


def test_old_attention_names_single_file_round_trip(tmp_path):
    old = tiny_state("old", seed=1)
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
    torch_pickle.save(old, tmp_path / "vae.bin")
    variables = sd_vae.import_checkpoint(tmp_path / "vae.bin", norm_num_groups=4)
    assert variables["model_config"]["attention_keys"] == "old"
    sd_vae.export_checkpoint(variables, tmp_path / "back.bin")
    assert_same(torch_pickle.load_state_dict(tmp_path / "back.bin"), old)
    # the same weights under the new names give the same params
    new = {
        k.replace(".query.", ".to_q.")
        .replace(".key.", ".to_k.")
        .replace(".value.", ".to_v.")
        .replace(".proj_attn.", ".to_out.0."): v
        for k, v in old.items()
    }
    torch_pickle.save(new, tmp_path / "new.bin")
    renamed = sd_vae.import_checkpoint(tmp_path / "new.bin", norm_num_groups=4)
    jax.tree.map(np.testing.assert_array_equal, renamed["params"], variables["params"])
    # a model without recorded names exports the new ones
    del variables["model_config"]["attention_keys"]
    sd_vae.export_checkpoint(variables, tmp_path / "default.safetensors")
    assert_same(hf_files.read_state_dict(str(tmp_path / "default.safetensors"))[0], new)


def _error(tmp_path, state, config=None, **kwargs):
    folder = write_folder(tmp_path / "bad", state, config=config)
    with pytest.raises((ConversionError, CheckpointError)) as info:
        sd_vae.import_checkpoint(folder, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert "diffusion_pytorch_model.safetensors" in message or "config.json" in message
    return message


@pytest.mark.parametrize(
    "change,expect",
    [
        (lambda s: s.pop("decoder.up_blocks.1.resnets.1.norm2.bias"), "missing key"),
        (lambda s: s.update(extra=np.zeros(3, np.float32)), "unexpected key 'extra'"),
        (
            lambda s: s.update({"quant_conv.bias": np.zeros(9, np.float32)}),
            "'quant_conv.bias': shape (9,)",
        ),
        (
            lambda s: s.update(
                {"decoder.mid_block.attentions.0.query.weight": np.zeros((16, 16), np.float32)}
            ),
            "keys in more than one spelling (['new', 'old'])",
        ),
        (lambda s: s.pop("encoder.conv_in.weight"), "missing key 'encoder.conv_in.weight'"),
    ],
)
def test_bad_state_dicts_fail_in_one_line(tmp_path, change, expect):
    state = tiny_state()
    change(state)
    assert expect in _error(tmp_path, state)


def test_bad_folders_fail_in_one_line(tmp_path):
    message = _error(tmp_path, tiny_state(), config=dict(TINY_HF_CONFIG, layers_per_block=2))
    assert "config.json: layers_per_block is 2 but the weights have 1" in message
    message = _error(tmp_path, tiny_state(), config=dict(TINY_HF_CONFIG, norm_num_groups="4"))
    assert "'norm_num_groups' must be a int" in message
    (tmp_path / "bad" / "config.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match="config.json: not a readable JSON file"):
        sd_vae.import_checkpoint(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no diffusion_pytorch_model.safetensors"):
        sd_vae.import_checkpoint(tmp_path / "empty")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="junk.safetensors: not a readable safetensors"):
        sd_vae.import_checkpoint(tmp_path / "junk.safetensors")


def test_full_size_key_list_matches_diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        model = diffusers.AutoencoderKL(
            block_out_channels=SD_VAE.block_out_channels,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=2,
            latent_channels=4,
        )
    state = model.state_dict()
    rules = sd_vae.rules_for(SD_VAE)
    assert list(state) == [r.torch_key for r in rules]
    assert sum(v.numel() for v in state.values()) == 83_653_863
    shapes = sd_vae.param_shapes(SD_VAE)
    ours = {
        r.torch_key: r.layout.to_torch(np.empty(_leaf(shapes, r.param_path).shape, np.int8)).shape
        for r in rules
    }
    assert ours == {k: tuple(v.shape) for k, v in state.items()}


def _leaf(tree, path):
    for part in path.split("/"):
        tree = tree[part]
    return tree


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_parity_with_diffusers(tmp_path, precision):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    jdtype = getattr(jnp, precision)
    model = reference(lambda: diffusers.AutoencoderKL(**hf_fields(TINY_HF_CONFIG)), precision)
    state = numpy_state(model)
    write_folder(tmp_path / "vae", state)
    variables = sd_vae.import_checkpoint(tmp_path / "vae")  # float32 params, as imports give
    config = sd_vae.vae_config(variables["model_config"])
    if precision == "float32":  # the exported folder is one diffusers loads as it was
        sd_vae.export_checkpoint(variables, tmp_path / "exported")
        loaded = diffusers.AutoencoderKL.from_pretrained(tmp_path / "exported")
        assert_same(numpy_state(loaded), state)
    # the import's rules at the reference's precision
    params = to_params(
        state, sd_vae.rules_for(config), sd_vae.param_shapes(config), dtype=precision
    )
    images = np.random.default_rng(1).uniform(-1, 1, (2, 3, 24, 16)).astype(precision)
    with torch.no_grad():
        posterior = model.encode(torch.from_numpy(images)).latent_dist
        decoded = model.decode(posterior.mean).sample.numpy()
        want = (posterior.mean.numpy(), posterior.logvar.numpy(), decoded)
    with jax.enable_x64(precision == "float64"):
        ours = AutoencoderKL(config, dtype=jdtype, param_dtype=jdtype)
        params = jax.tree.map(lambda a: jnp.asarray(a, jdtype), params)

        @jax.jit
        def run(params, x):
            p = ours.apply({"params": params}, x, method=ours.encode)
            return p.mean, p.logvar, ours.apply({"params": params}, p.mean, method=ours.decode)

        got = [
            np.asarray(a).transpose(0, 3, 1, 2) for a in run(params, images.transpose(0, 2, 3, 1))
        ]
    found = {name: errors(g, w) for name, g, w in zip(("mean", "logvar", "decoded"), got, want)}
    check("sd_vae", precision, found)


def test_ldm_single_file_round_trip(tmp_path):
    """The original (CompVis) names, e.g. vae-ft-mse-840000-ema-pruned: a training
    checkpoint's `state_dict` entry, and a whole SD checkpoint's first_stage_model.*."""
    diffusers_state = tiny_state(seed=2)
    variables = sd_vae.import_checkpoint(write_folder(tmp_path / "d", diffusers_state))
    ldm = dict(variables, model_config=dict(variables["model_config"], attention_keys="ldm"))
    sd_vae.export_checkpoint(ldm, tmp_path / "ldm.safetensors")
    state = hf_files.read_state_dict(str(tmp_path / "ldm.safetensors"))[0]
    assert (
        "encoder.mid.attn_1.q.weight" in state and "decoder.up.0.block.2.norm1.weight" not in state
    )
    assert state["encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    # LDM counts up blocks from the full resolution, which has no upsampler
    assert "decoder.up.1.upsample.conv.weight" in state
    assert "decoder.up.0.upsample.conv.weight" not in state
    assert "decoder.up.0.block.0.nin_shortcut.weight" in state  # 16 -> 8 channels
    torch_pickle.save({"state_dict": state, "global_step": 7}, tmp_path / "vae.ckpt")
    back = sd_vae.import_checkpoint(tmp_path / "vae.ckpt", norm_num_groups=4)
    assert back["model_config"]["attention_keys"] == "ldm"
    jax.tree.map(np.testing.assert_array_equal, back["params"], variables["params"])
    sd_vae.export_checkpoint(back, tmp_path / "again.pt")
    assert_same(torch_pickle.load_state_dict(tmp_path / "again.pt"), state)
    whole = {"first_stage_model." + k: v for k, v in state.items()}
    whole["model.diffusion_model.conv_in.weight"] = np.ones((2, 4, 3, 3), np.float32)
    whole["cond_stage_model.transformer.text_model.final_layer_norm.bias"] = np.ones(3)
    whole["alphas_cumprod"] = np.ones(10)
    hf_files.write_state_dict(whole, str(tmp_path / "v1-5.safetensors"))
    from_whole = sd_vae.import_checkpoint(tmp_path / "v1-5.safetensors", norm_num_groups=4)
    jax.tree.map(np.testing.assert_array_equal, from_whole["params"], variables["params"])
    sd_vae.export_checkpoint(from_whole, tmp_path / "vae_only.safetensors")  # the VAE part
    assert_same(
        hf_files.read_state_dict(str(tmp_path / "vae_only.safetensors"))[0],
        {k: v for k, v in whole.items() if k.startswith("first_stage_model.")},
    )
    whole["first_stage_model.extra"] = np.ones(1)
    whole["lora_unet_down.alpha"] = np.ones(1)
    hf_files.write_state_dict(whole, str(tmp_path / "odd.safetensors"))
    with pytest.raises(ConversionError, match="unexpected key 'lora_unet_down.alpha'"):
        sd_vae.import_checkpoint(tmp_path / "odd.safetensors", norm_num_groups=4)


def test_ldm_names_agree_with_diffusers_single_file_conversion():
    pytest.importorskip("torch")
    single_file = pytest.importorskip("diffusers.loaders.single_file_utils")
    state = tiny_state(seed=3)
    rules, ldm_rules = sd_vae.rules_for(TINY_VAE), sd_vae.ldm_rules(TINY_VAE)
    ldm = {
        theirs.torch_key: theirs.layout.to_torch(ours.layout.to_flax(state[ours.torch_key]))
        for ours, theirs in zip(rules, ldm_rules)
    }
    converted = single_file.convert_ldm_vae_checkpoint(ldm, TINY_HF_CONFIG)
    assert_same({k: np.asarray(v) for k, v in converted.items()}, state)


def test_half_precision_files_round_trip_bit_exact(tmp_path):
    state = {k: v.astype(np.float16) for k, v in tiny_state(seed=4).items()}
    variables = through_weights_file(tmp_path, write_folder(tmp_path / "fp16", state))
    assert variables["params"]["decoder"]["conv_out"]["kernel"].dtype == np.float32
    releases.export_release("sd_vae", variables, tmp_path / "back.safetensors")
    assert_same(hf_files.read_state_dict(str(tmp_path / "back.safetensors"))[0], state)
