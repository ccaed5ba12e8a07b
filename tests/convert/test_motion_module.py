"""AnimateDiff motion-module files: full-size counts and key lists (eval_shape only), the
release's key order (AniPortrait's UNet3DConditionModel on the meta device, only with
ANIPORTRAIT_CODE), bit-exact round trips of small files of the same layout, and the errors
a wrong file gives."""

import os
import sys

import numpy as np
import pytest

from jaxtalk.convert import motion_module as mm
from jaxtalk.convert import releases, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError
from jaxtalk.models.latent_diffusion.motion_module import position_table

CODE = os.environ.get("ANIPORTRAIT_CODE")
SMALL = (16, 16, 32, 32)  # block channels of the small files (8 heads of 2 or 4)


@pytest.mark.parametrize("mid, params, keys", [(True, 453_209_280, 588), (False, 417_137_600, 560)])
def test_full_size_counts(mid, params, keys):
    config = {"mid_block": mid}
    assert mm.count_parameters(config) == params
    shapes = mm.state_shapes(config)
    assert len(shapes) == keys
    assert sum(np.prod(s) for k, s in shapes.items() if not k.endswith(".pe")) == params
    assert sum(k.endswith(".pos_encoder.pe") for k in shapes) == (21 if mid else 20) * 2
    assert shapes["up_blocks.3.motion_modules.2.temporal_transformer.proj_in.weight"] == (320, 320)
    assert shapes[
        "down_blocks.3.motion_modules.1.temporal_transformer.transformer_blocks.0.ff.net.0.proj.weight"
    ] == (10240, 1280)
    assert shapes[
        "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    ] == (1, 32, 320)


def test_one_module_rules_at_a_prefix():
    prefix = "down_blocks.1.motion_modules.0"
    rules = mm.module_rules(prefix, "params/down_blocks_1/motion_modules_0")
    assert len(rules) + len(mm.position_keys(prefix)) == 28
    assert rules[0].torch_key == f"{prefix}.temporal_transformer.norm.weight"
    assert rules[0].param_path == "params/down_blocks_1/motion_modules_0/norm/scale"
    assert {r.layout.name for r in rules} == {"identity", "linear"}
    assert mm.param_path("mid_block.motion_modules.0") == "mid_block/motion_modules_0"


@pytest.mark.skipif(not CODE, reason="ANIPORTRAIT_CODE (a Zejun-Yang/AniPortrait checkout) not set")
@pytest.mark.parametrize("mid", [True, False])
def test_keys_and_order_match_the_release_unet(mid):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    sys.path.insert(0, CODE)
    from src.models.unet_3d import UNet3DConditionModel

    kwargs = dict(
        use_inflated_groupnorm=True,
        unet_use_cross_frame_attention=False,
        unet_use_temporal_attention=False,
        use_motion_module=True,
        motion_module_resolutions=[1, 2, 4, 8],
        motion_module_mid_block=mid,
        motion_module_type="Vanilla",
        motion_module_kwargs=dict(
            num_attention_heads=8,
            num_transformer_block=1,
            attention_block_types=["Temporal_Self", "Temporal_Self"],
            temporal_position_encoding=True,
            temporal_position_encoding_max_len=32,
            temporal_attention_dim_div=1,
        ),
    )
    with torch.device("meta"):
        unet = UNet3DConditionModel(cross_attention_dim=768, **kwargs)
    state = unet.state_dict()
    want = {k: tuple(v.shape) for k, v in state.items() if "motion_modules" in k}
    assert list(mm.state_shapes({"mid_block": mid}).items()) == list(want.items())
    n = sum(p.numel() for k, p in unet.named_parameters() if "motion_modules" in k)
    assert n == mm.count_parameters({"mid_block": mid})


def _release_file(path, mid, dtype="float32", seed=0, block_channels=SMALL, max_len=32):
    """A file in the release's layout with random parameters and its position tables."""
    config = {"mid_block": mid, "block_channels": block_channels, "max_len": max_len}
    rng = np.random.RandomState(seed)
    state = {}
    for key, shape in mm.state_shapes(config).items():
        value = (
            position_table(shape[1], shape[2])[None] if key.endswith(".pe") else rng.randn(*shape)
        )
        state[key] = value.astype(dtype)
    torch_pickle.save(state, path)
    return state


def _same(got, want):
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert got[k].tobytes() == want[k].tobytes(), k


@pytest.mark.parametrize("mid, dtype", [(True, "float32"), (False, "float16"), (True, "float16")])
def test_file_round_trips_bit_exactly(tmp_path, mid, dtype):
    src = tmp_path / "motion_module.pth"
    want = _release_file(src, mid, dtype)
    variables = mm.import_checkpoint(src, version="v2" if mid else "v3")
    cfg = variables["model_config"]
    assert (
        cfg["block_channels"] == list(SMALL) and cfg["dtype"] == dtype and cfg["mid_block"] == mid
    )
    p = variables["params"]["down_blocks_0"]["motion_modules_1"]
    np.testing.assert_array_equal(
        p["proj_in"]["kernel"],
        want["down_blocks.0.motion_modules.1.temporal_transformer.proj_in.weight"].T.astype(
            np.float32
        ),
    )
    out = tmp_path / "exported.pth"
    mm.export_checkpoint(variables, out)
    _same(torch_pickle.load_state_dict(out), want)
    # without the kept tables the export computes them (equal to float precision)
    recomputed = mm.export_state_dict({"params": variables["params"]}, cfg)
    for k in want:
        tol = 0 if not k.endswith(".pe") else 1e-6 if dtype == "float32" else 1e-3
        np.testing.assert_allclose(
            recomputed[k].astype(np.float64), want[k].astype(np.float64), atol=tol
        )
    assert list(recomputed) == list(want)


def test_release_machinery_round_trip(tmp_path):
    src = tmp_path / "v3_sd15_mm.ckpt"
    want = _release_file(src, mid=False, seed=3)
    stored = releases.import_release(
        "animatediff_motion_v3", src, output=str(tmp_path / "w.safetensors")
    )
    out = tmp_path / "back.ckpt"
    releases.export_release("animatediff_motion_v3", weights.load(stored), out)
    _same(torch_pickle.load_state_dict(out), want)


def test_wrapped_state_dict_and_torch_written_file(tmp_path):
    torch = pytest.importorskip("torch")
    src = tmp_path / "mm.ckpt"
    want = _release_file(tmp_path / "plain.pth", mid=True, seed=4)
    torch.save(
        {"state_dict": {k: torch.from_numpy(v) for k, v in want.items()}, "global_step": 7}, src
    )
    variables = mm.import_checkpoint(src)
    _same(mm.export_state_dict(variables), want)


def test_wrong_files_are_one_line_errors(tmp_path):
    src = tmp_path / "mm.pth"
    state = _release_file(src, mid=True)
    with pytest.raises(ConversionError, match="v3 motion modules have no mid-block"):
        mm.import_checkpoint(src, version="v3")

    def fails(bad, match):
        path = tmp_path / "bad.pth"
        torch_pickle.save(bad, path)
        with pytest.raises(ConversionError, match=match) as e:
            mm.import_checkpoint(path)
        assert str(path) in str(e.value)

    key = "up_blocks.2.motion_modules.1.temporal_transformer.proj_out.weight"
    fails({k: v for k, v in state.items() if k != key}, "missing key")
    fails(
        {
            **state,
            "up_blocks.2.motion_modules.3.temporal_transformer.norm.weight": np.ones(
                32, np.float32
            ),
        },
        "unexpected key",
    )
    fails({**state, key: np.ones((32, 31), np.float32)}, "shape")
    pe = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe"
    fails({**state, pe: state[pe][:, ::-1].copy()}, "not the sinusoidal position table")
    fails({k: v for k, v in state.items() if k != pe}, "missing key")
    fails({"something.else": np.ones(3, np.float32)}, "not a motion-module file")
    with pytest.raises(ConversionError, match="the layout needs"):
        variables = mm.import_checkpoint(src)
        variables["params"]["mid_block"]["motion_modules_0"]["proj_in"]["kernel"] = np.ones((3, 3))
        mm.export_state_dict(variables)
