"""anitalker_stage2 converter: key-complete against the released key list, exact round trip."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from jaxtalk.convert import anitalker as conv
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import ConversionError, flatten_params
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs
from jaxtalk.models.param_hook import eval_shape_init

# reference/keys/anitalker_stage2_state_dict.txt: key counts per infer_type.
RELEASED_NKEYS = {
    "hubert_audio_only": 253,
    "hubert_pose_only": 273,
    "hubert_full_control": 313,
    "mfcc_pose_only": 114,
    "mfcc_full_control": 154,
}


def _conformer_keys(prefix, d, blocks, heads=2, k=13):
    """One ESPnet conformer block's keys and torch shapes, as listed in the key file."""
    keys = {}
    for i in range(blocks):
        p = f"{prefix}.encoders.{i}."
        keys[p + "self_attn.pos_bias_u"] = (heads, d // heads)
        keys[p + "self_attn.pos_bias_v"] = (heads, d // heads)
        for n in ("linear_q", "linear_k", "linear_v", "linear_out"):
            keys[p + f"self_attn.{n}.weight"], keys[p + f"self_attn.{n}.bias"] = (d, d), (d,)
        keys[p + "self_attn.linear_pos.weight"] = (d, d)
        for ff in ("feed_forward", "feed_forward_macaron"):
            for w in ("w_1", "w_2"):
                keys[p + f"{ff}.{w}.weight"], keys[p + f"{ff}.{w}.bias"] = (d, d), (d,)
        c = p + "conv_module."
        keys.update(
            {
                c + "pointwise_conv1.weight": (2 * d, d, 1),
                c + "pointwise_conv1.bias": (2 * d,),
                c + "depthwise_conv.weight": (d, 1, k),
                c + "depthwise_conv.bias": (d,),
                c + "norm.weight": (d,),
                c + "norm.bias": (d,),
                c + "norm.running_mean": (d,),
                c + "norm.running_var": (d,),
                c + "norm.num_batches_tracked": (),
                c + "pointwise_conv2.weight": (d, d, 1),
                c + "pointwise_conv2.bias": (d,),
            }
        )
        for n in ("norm_ff", "norm_mha", "norm_ff_macaron", "norm_conv", "norm_final"):
            keys[p + f"{n}.weight"], keys[p + f"{n}.bias"] = (d,), (d,)
    return keys


def _lstm_keys(prefix, cin, out, hid=128):
    return {
        f"{prefix}.lstm.weight_ih_l0": (4 * hid, cin),
        f"{prefix}.lstm.weight_hh_l0": (4 * hid, hid),
        f"{prefix}.lstm.bias_ih_l0": (4 * hid,),
        f"{prefix}.lstm.bias_hh_l0": (4 * hid,),
        f"{prefix}.lstm.weight_ih_l1": (4 * hid, hid),
        f"{prefix}.lstm.weight_hh_l1": (4 * hid, hid),
        f"{prefix}.lstm.bias_ih_l1": (4 * hid,),
        f"{prefix}.lstm.bias_hh_l1": (4 * hid,),
        f"{prefix}.fc.weight": (out, hid),
        f"{prefix}.fc.bias": (out,),
    }


def released_keys(infer_type):
    keys = {}
    if infer_type.startswith("hubert"):
        keys.update(
            {"weights": (25,), "down_sample1.weight": (512, 1024, 3), "down_sample1.bias": (512,)}
        )
        keys.update(_conformer_keys("speech_encoder", 512, 4))
    else:
        keys.update(
            {
                "down_sample1.weight": (256, 39, 3),
                "down_sample1.bias": (256,),
                "down_sample2.weight": (512, 256, 3),
                "down_sample2.bias": (512,),
            }
        )
    keys.update(_conformer_keys("coarse_decoder", 1024, 2))
    attrs = {"hubert_audio_only": [], "hubert_pose_only": ["pose"], "mfcc_pose_only": ["pose"]}.get(
        infer_type, ["pose", "location", "face_scale"]
    )
    for a in attrs:
        dims = 3 if a == "pose" else 1
        keys.update(_lstm_keys(f"{a}_predictor", 512, dims))
        keys.update(_lstm_keys(f"{a}_encoder", dims, 512))
    keys.update(
        {
            "init_code_proj.0.weight": (128, 512),
            "init_code_proj.0.bias": (128,),
            "noisy_encoder.0.weight": (128, 20),
            "noisy_encoder.0.bias": (128,),
            "t_encoder.0.weight": (128, 1),
            "t_encoder.0.bias": (128,),
            "encoder_direction_code.weight": (128, 20),
            "encoder_direction_code.bias": (128,),
            "out_proj.weight": (20, 1024),
            "out_proj.bias": (20,),
        }
    )
    return keys


@pytest.mark.parametrize("infer_type", sorted(RELEASED_NKEYS))
def test_rules_cover_exactly_the_released_keys_and_shapes(infer_type):
    expected = released_keys(infer_type)
    assert len(expected) == RELEASED_NKEYS[infer_type]
    config = conv.detect_config({k: np.broadcast_to(np.float32(0), s) for k, s in expected.items()})
    assert config["infer_type"] == infer_type and config["decoder_layers"] == 2
    model = DiffusionPredictor(**config)
    shapes = nn.meta.unbox(
        eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(model)))
    )
    flat = {
        **{f"params/{k}": v for k, v in flatten_params(shapes["params"]).items()},
        **{f"stats/{k}": v for k, v in flatten_params(shapes["batch_stats"]).items()},
    }
    param_rules, stat_rules = conv.rules_for(config)
    got = {}
    for group, rules in (("params", param_rules), ("stats", stat_rules)):
        for r in rules:
            dummy = np.broadcast_to(np.float32(0), flat.pop(f"{group}/{r.param_path}").shape)
            got[r.torch_key] = r.layout.to_torch(dummy).shape
    assert not flat  # every param and stat has a rule
    tracked = {k: () for k in expected if k.endswith("num_batches_tracked")}
    assert {**got, **tracked} == expected


TINY_KEYS_CONFIG = dict(
    infer_type="hubert_full_control",
    motion_start_dim=6,
    speech_dim=8,
    fusion_dim=4,
    speech_layers=2,
    decoder_layers=1,
    hubert_dim=5,
    hubert_layers=3,
    kernel_size=3,
    lstm_hidden=4,
    motion_dim=3,
)


def tiny_release_file(tmp_path, config=TINY_KEYS_CONFIG):
    """A release-layout file (model.*, ema_model.*, x_T) with random arrays."""
    rng = np.random.RandomState(0)
    model = DiffusionPredictor(**config)
    shapes = nn.meta.unbox(
        eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(model)))
    )

    def rand(tree):
        return jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), tree)

    copies = {
        name: conv.state_dict_from_variables(
            {"params": rand(shapes["params"]), "batch_stats": rand(shapes["batch_stats"])}, config
        )
        for name in ("model", "ema_model")
    }
    sd = {f"{name}.{k}": v for name, c in copies.items() for k, v in c.items()}
    sd["x_T"] = rng.randn(2, 3, 4, 4).astype(np.float32)
    path = tmp_path / "stage2.ckpt"
    torch_pickle.save(sd, path)
    return path, sd


def test_import_detects_config_takes_ema_and_exports_exactly(tmp_path):
    path, sd = tiny_release_file(tmp_path)
    v = conv.import_checkpoint(path)
    assert v["model_config"] == {**TINY_KEYS_CONFIG, "lstm_layers": 2, "num_heads": 2}
    np.testing.assert_array_equal(
        v["params"]["out_proj"]["kernel"], sd["ema_model.out_proj.weight"].T
    )
    np.testing.assert_array_equal(
        v["batch_stats"]["coarse_decoder"]["encoders_0"]["conv_module"]["norm"]["var"],
        sd["ema_model.coarse_decoder.encoders.0.conv_module.norm.running_var"],
    )
    online = conv.import_checkpoint(path, weights="model", infer_type="hubert_full_control")
    np.testing.assert_array_equal(online["params"]["layer_mix"]["weights"], sd["model.weights"])

    out = tmp_path / "exported.ckpt"
    conv.export_checkpoint(online, out, ema_variables=v)
    back = torch_pickle.load_state_dict(out)
    assert set(back) == set(sd)
    for k in sd:
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[k], sd[k], err_msg=k)


def test_import_fails_loudly(tmp_path):
    path, sd = tiny_release_file(tmp_path)
    with pytest.raises(ConversionError, match="not hubert_pose_only"):
        conv.import_checkpoint(path, infer_type="hubert_pose_only")
    broken = dict(sd)
    del broken["ema_model.speech_encoder.encoders.1.norm_ff.bias"]
    del broken["model.speech_encoder.encoders.1.norm_ff.bias"]
    broken["ema_model.out_proj.bias"] = np.zeros(7, np.float32)
    torch_pickle.save(broken, tmp_path / "broken.ckpt")
    with pytest.raises(ConversionError) as err:
        conv.import_checkpoint(tmp_path / "broken.ckpt")
    assert "norm_ff.bias" in str(err.value) and "out_proj.bias" in str(err.value)
    extra = dict(sd, **{"ema_model.spare.weight": np.zeros(2, np.float32)})
    torch_pickle.save(extra, tmp_path / "extra.ckpt")
    with pytest.raises(ConversionError, match="differ in keys"):
        conv.import_checkpoint(tmp_path / "extra.ckpt")
