"""AniPortrait's Lmk2Video release directory: the PoseGuider's full-size key list (eval_shape
only; its order against the release's module on the meta device with ANIPORTRAIT_CODE), the
four files of a small release written here round-tripping bit for bit through `jaxtalk
import` / `jaxtalk export`, the imported tree fitting the modules `models()` builds, and the
one-line errors a wrong directory gives."""

import copy
import dataclasses
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import aniportrait as ap
from jaxtalk.convert import releases, sd_unet, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, export_state_dict, flatten_params
from jaxtalk.errors import InputError
from jaxtalk.models.aniportrait.pose_guider import RELEASE, PoseGuiderConfig
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.param_hook import eval_shape_init
from tests.convert.test_motion_module import _release_file as motion_file

CODE = os.environ.get("ANIPORTRAIT_CODE")
# Small files with the release's layout; widths are multiples of 32 so that the release's
# 32 GroupNorm groups and 8 / 16 heads (what `jaxtalk import` assumes) fit.
SMALL_UNET = ld.UNetConfig(block_out_channels=(32, 32, 64, 64), cross_attention_dim=16)
SMALL_GUIDER = PoseGuiderConfig(block_out_channels=(32, 32, 64, 64), stem=(4, 8), head_dim=2)


def layout_state(config):
    """The release file's keys, in order, each a zero-strided view of its torch shape
    (nothing allocated), counters after each BatchNorm's running_var."""
    rules, _ = ap.pose_guider_layout(config)
    flat = flatten_params(ap.pose_guider_shapes(config))
    out = {}
    for r in rules:
        view = np.broadcast_to(np.float32(0), flat[r.param_path].shape)
        out[r.torch_key] = r.layout.to_torch(view)
        if r.torch_key.endswith(".running_var"):
            out[r.torch_key.removesuffix("running_var") + "num_batches_tracked"] = np.int64(0)
    return out


def test_pose_guider_full_size_layout():
    state = layout_state(RELEASE)
    assert len(state) == 184 and sum(k.endswith("num_batches_tracked") for k in state) == 15
    shapes = ap.pose_guider_shapes(RELEASE)
    params = flatten_params(shapes["params"])
    assert sum(int(np.prod(v.shape)) for v in params.values()) == 167_518_523
    assert list(state)[:3] == ["scale", "conv_layers.0.weight", "conv_layers.0.bias"]
    assert state["cross_attn4.transformer_blocks.0.ff.net.0.proj.weight"].shape == (11264, 1408)
    assert ap.detect_pose_guider(state, "pose_guider.pth") == RELEASE


@pytest.mark.skipif(not CODE, reason="ANIPORTRAIT_CODE (a Zejun-Yang/AniPortrait checkout) not set")
def test_pose_guider_keys_and_order_match_the_release():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    sys.path.insert(0, CODE)
    from src.models.pose_guider import PoseGuider

    with torch.device("meta"):
        state = PoseGuider(noise_latent_channels=320).state_dict()
    want = [(k, tuple(v.shape)) for k, v in state.items()]
    assert [(k, tuple(np.shape(v))) for k, v in layout_state(RELEASE).items()] == want


def _state_of(variables_shapes, rules, rng):
    """A state_dict in the release's layout (counters after each running_var) with random
    values and counters."""
    tree = jax.tree_util.tree_map(
        lambda a: rng.standard_normal(a.shape, dtype=np.float32), variables_shapes
    )
    sd = export_state_dict(tree, rules)
    for key in sd:
        if key.endswith("num_batches_tracked"):
            sd[key] = np.asarray(rng.integers(0, 10**6), np.int64)
    return sd


def _unet_state(config, rng):
    rules = [
        dataclasses.replace(r, param_path=f"params/{r.param_path}")
        for r in sd_unet.unet_rules(config)
    ]
    return _state_of({"params": sd_unet.param_shapes(config)}, rules, rng)


def write_release(root, rng, dtype="float32"):
    """The four files of a small release with random values in `dtype`; {file name:
    state_dict}."""
    root.mkdir(exist_ok=True)
    files = {
        "reference_unet.pth": _unet_state(dataclasses.replace(SMALL_UNET, conv_out=False), rng),
        "denoising_unet.pth": _unet_state(SMALL_UNET, rng),
        "pose_guider.pth": _state_of(
            ap.pose_guider_shapes(SMALL_GUIDER), ap.pose_guider_layout(SMALL_GUIDER)[0], rng
        ),
    }
    for name, sd in files.items():
        files[name] = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in sd.items()}
        torch_pickle.save(files[name], root / name)
    files["motion_module.pth"] = motion_file(
        root / "motion_module.pth", True, dtype, block_channels=(32, 32, 64, 64)
    )
    return files


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("aniportrait") / "pretrained_weights"
    return root, write_release(root, np.random.default_rng(0))


def _same_files(out_dir, want):
    for name, sd in want.items():
        got = torch_pickle.load_state_dict(out_dir / name)
        assert list(got) == list(sd), name
        for key, value in sd.items():
            assert got[key].dtype == value.dtype and got[key].shape == value.shape, key
            assert got[key].tobytes() == value.tobytes(), key


def test_release_round_trips_bit_exactly(tmp_path, release_dir):
    root, want = release_dir
    stored = releases.import_release("aniportrait", root, output=str(tmp_path / "w.safetensors"))
    variables = weights.load(stored)
    cfg = variables["model_config"]
    assert cfg["kind"] == "aniportrait" and cfg["pose_guider"]["stem"] == [4, 8]
    assert not cfg["reference"]["conv_out"] and cfg["denoiser"]["conv_out"]
    params = variables["params"]
    assert sorted(params) == ["denoiser", "pose_guider", "reference"]
    assert "motion_modules_0" in params["denoiser"]["down_blocks_0"]
    assert "motion_modules_0" in params["denoiser"]["mid_block"]
    assert len(variables["buffers"]["pose_guider"]) == 11
    releases.export_release("aniportrait", variables, tmp_path / "out")
    _same_files(tmp_path / "out", want)


def test_float16_release_round_trips_bit_exactly(tmp_path):
    want = write_release(tmp_path / "fp16", np.random.default_rng(1), "float16")
    variables = ap.import_checkpoint(tmp_path / "fp16")
    assert set(variables["model_config"]["dtypes"].values()) == {"float16"}
    ap.export_checkpoint(variables, tmp_path / "out")
    _same_files(tmp_path / "out", want)


def test_imported_tree_fits_the_models(release_dir):
    root, _ = release_dir
    variables = ap.import_checkpoint(root)
    modules = ap.models(variables["model_config"])
    latents = jnp.zeros((1, 2, 8, 8, 4))
    context = jnp.zeros((1, 1, 16))
    inits = {
        "reference": (latents[:, 0], jnp.zeros((1,)), context),
        "denoiser": (latents, jnp.zeros((1,)), context),
        "pose_guider": (jnp.zeros((1, 2, 16, 16, 3)),),
    }
    for group, args in inits.items():
        shapes = nn.unbox(eval_shape_init(modules[group].init, jax.random.PRNGKey(0), *args))
        want = {k: v.shape for k, v in flatten_params(shapes["params"]).items()}
        got = {k: np.shape(v) for k, v in flatten_params(variables["params"][group]).items()}
        assert got == want, group
    stats = flatten_params(variables["batch_stats"]["pose_guider"])
    assert len(stats) == 22


def _copy(root, dst, **edits):
    """The release at `root` copied to `dst` with edits {file name: fn(state_dict)}."""
    dst.mkdir()
    for name in ap.FILES.values():
        sd = torch_pickle.load_state_dict(root / name)
        if name in edits:
            sd = edits[name](sd)
        if sd is not None:
            torch_pickle.save(sd, dst / name)
    return dst


def _without(key):
    return lambda sd: {k: v for k, v in sd.items() if k != key}


def _with(key, value):
    return lambda sd: {**sd, key: value}


@pytest.mark.parametrize(
    "edits, words",
    [
        ({"pose_guider.pth": lambda sd: None}, ["pose_guider.pth", "missing"]),
        ({"pose_guider.pth": _with("extra.weight", np.zeros(3, np.float32))}, ["extra.weight"]),
        (
            {"pose_guider.pth": _without("conv_layers_2.1.num_batches_tracked")},
            ["conv_layers_2.1.num_batches_tracked"],
        ),
        (
            {"pose_guider.pth": _with("cross_attn2.proj_out.bias", np.zeros(5, np.float32))},
            ["pose_guider.pth", "cross_attn2.proj_out.bias", "shape"],
        ),
        (
            {"pose_guider.pth": _without("cross_attn3.transformer_blocks.0.norm3.bias")},
            ["pose_guider.pth", "cross_attn3.transformer_blocks.0.norm3.bias", "missing"],
        ),
        (
            {"denoising_unet.pth": _without("up_blocks.1.attentions.0.proj_in.weight")},
            ["denoising_unet.pth", "up_blocks.1.attentions.0.proj_in.weight"],
        ),
        (
            {
                "motion_module.pth": _without(
                    "mid_block.motion_modules.0.temporal_transformer.norm.weight"
                )
            },
            ["motion_module.pth"],
        ),
    ],
)
def test_wrong_files_give_one_line_errors(tmp_path, release_dir, edits, words):
    root, _ = release_dir
    bad = _copy(root, tmp_path / "bad", **edits)
    with pytest.raises(InputError) as info:
        ap.import_checkpoint(bad)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_swapped_unets_are_named(tmp_path, release_dir):
    root, _ = release_dir
    denoiser = torch_pickle.load_state_dict(root / "denoising_unet.pth")
    bad = _copy(root, tmp_path / "bad", **{"reference_unet.pth": lambda sd: denoiser})
    with pytest.raises(ConversionError, match=r"reference_unet\.pth: .*swapped"):
        ap.import_checkpoint(bad)


def test_motion_widths_must_match_the_unet(tmp_path, release_dir):
    root, _ = release_dir
    bad = _copy(root, tmp_path / "bad")
    motion_file(bad / "motion_module.pth", True, block_channels=(32, 32, 32, 32))
    with pytest.raises(ConversionError, match=r"motion_module\.pth: motion modules of widths"):
        ap.import_checkpoint(bad)


def test_export_refuses_params_the_model_lacks(tmp_path, release_dir):
    root, _ = release_dir
    imported = ap.import_checkpoint(root)
    variables = copy.deepcopy(imported)
    del variables["params"]["pose_guider"]["cross_attn2"]["proj_out"]
    with pytest.raises(ConversionError, match="pose_guider: parameter params/cross_attn2/proj_out"):
        ap.export_checkpoint(variables, tmp_path / "out")
    variables = copy.deepcopy(imported)
    variables["params"]["denoiser"]["conv_in"]["kernel"] = np.zeros((3, 3, 4, 8), np.float32)
    with pytest.raises(ConversionError, match="denoiser: parameter conv_in/kernel shape"):
        ap.export_checkpoint(variables, tmp_path / "out")
