"""clip_vision: transformers CLIP image towers (vision-only files, full CLIP files with the
text tower, the image_encoder/ subfolder of sd-image-variations-diffusers) <-> jaxtalk
params. Key-complete and bit-exact both ways, one-line errors, the full key list against
transformers', parity with CLIPVisionModelWithProjection (pooled embedding, last hidden
state, and MegActor's 257 projected tokens) on a tiny config with random weights."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import clip_vision as cv
from jaxtalk.convert import hf_files, releases, torch_pickle, weights
from jaxtalk.convert.mapping import ConversionError, to_params
from jaxtalk.models.latent_diffusion.clip_vision import (
    CLIP_VIT_L14,
    TINY_CLIP,
    CLIPVisionModelWithProjection,
)
from tests.convert.hf_parity import check, errors, hf_fields, numpy_state, reference
from tests.convert.test_sd_vae import assert_same
from tests.evaluate.torch_layout import random_state_dict

TINY_HF_CONFIG = {
    "architectures": ["CLIPVisionModelWithProjection"],
    "model_type": "clip_vision_model",
    "hidden_size": TINY_CLIP.hidden_size,
    "intermediate_size": TINY_CLIP.intermediate_size,
    "num_hidden_layers": TINY_CLIP.num_hidden_layers,
    "num_attention_heads": TINY_CLIP.num_attention_heads,
    "image_size": TINY_CLIP.image_size,
    "patch_size": TINY_CLIP.patch_size,
    "projection_dim": TINY_CLIP.projection_dim,
    "hidden_act": "quick_gelu",
}


def tiny_state(seed=0):
    rng = np.random.default_rng(seed)
    return random_state_dict(cv.rules_for(TINY_CLIP), cv.param_shapes(TINY_CLIP), rng, False)


def write_folder(folder, state, name="model.safetensors", config=None):
    folder.mkdir(parents=True, exist_ok=True)
    hf_files.write_state_dict(state, str(folder / name), {"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config or TINY_HF_CONFIG))
    return folder


def test_image_encoder_subfolder_round_trip_with_position_ids(tmp_path):
    """sd-image-variations-diffusers: image_encoder/pytorch_model.bin from an older
    transformers, with the position_ids buffer."""
    state = tiny_state()
    state[cv.POSITION_IDS] = np.arange(TINY_CLIP.num_positions, dtype=np.int64)[None]
    folder = tmp_path / "sd-image-variations" / "image_encoder"
    folder.mkdir(parents=True)
    torch_pickle.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(TINY_HF_CONFIG))
    stored = releases.import_release(
        "sd_image_variations_image_encoder",
        tmp_path / "sd-image-variations",
        output=str(tmp_path / "w.safetensors"),
    )
    variables = weights.load(stored)
    assert cv.clip_config(variables["model_config"]) == TINY_CLIP
    releases.export_release("sd_image_variations_image_encoder", variables, tmp_path / "out")
    assert_same(torch_pickle.load_state_dict(tmp_path / "out" / "pytorch_model.bin"), state)
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == TINY_HF_CONFIG
    releases.export_release("clip_vision", variables, tmp_path / "single.safetensors")
    assert_same(hf_files.read_state_dict(str(tmp_path / "single.safetensors"))[0], state)


def test_full_clip_checkpoint_skips_only_the_text_tower(tmp_path):
    state = tiny_state(seed=1)
    text = {
        "text_model.embeddings.token_embedding.weight": np.ones((10, 8), np.float32),
        "text_model.final_layer_norm.weight": np.ones(8, np.float32),
        "text_projection.weight": np.ones((24, 8), np.float32),
        "logit_scale": np.array(2.6592, np.float32),
    }
    config = {
        "model_type": "clip",
        "projection_dim": TINY_CLIP.projection_dim,
        "vision_config": {
            k: v for k, v in TINY_HF_CONFIG.items() if k not in ("architectures", "model_type")
        },
        "text_config": {"hidden_size": 8},
    }
    write_folder(tmp_path / "clip", {**text, **state}, config=config)
    variables = cv.import_checkpoint(tmp_path / "clip")
    assert cv.clip_config(variables["model_config"]) == TINY_CLIP
    cv.export_checkpoint(variables, tmp_path / "vision")  # the vision tower only
    assert_same(hf_files.read_state_dict(str(tmp_path / "vision" / "model.safetensors"))[0], state)
    written = json.loads((tmp_path / "vision" / "config.json").read_text())
    assert written["model_type"] == "clip_vision_model" and written["hidden_size"] == 32
    # anything else beside the vision keys is still an error
    write_folder(tmp_path / "stray", {**text, **state, "vision_head.weight": np.ones(2)})
    with pytest.raises(ConversionError, match="unexpected key 'vision_head.weight'") as info:
        cv.import_checkpoint(tmp_path / "stray")
    assert "\n" not in str(info.value) and "model.safetensors" in str(info.value)


@pytest.mark.parametrize(
    "change,expect",
    [
        (lambda s: s.pop("visual_projection.weight"), "missing key 'visual_projection.weight'"),
        (
            lambda s: s.pop("vision_model.encoder.layers.1.mlp.fc2.bias"),
            "missing key 'vision_model.encoder.layers.1.mlp.fc2.bias'",
        ),
        (
            lambda s: s.update({"vision_model.pre_layrnorm.bias": np.zeros(31, np.float32)}),
            "'vision_model.pre_layrnorm.bias': shape (31,)",
        ),
        (
            lambda s: s.update({cv.POSITION_IDS: np.arange(17)[None] + 1}),
            "position_ids is not 0..16",
        ),
        (
            lambda s: s.update(
                {"vision_model.embeddings.position_embedding.weight": np.zeros((18, 32))}
            ),
            "18 positions are not 1 + a square grid",
        ),
    ],
)
def test_bad_files_fail_in_one_line(tmp_path, change, expect):
    state = tiny_state()
    change(state)
    write_folder(tmp_path / "bad", state)
    with pytest.raises(ConversionError) as info:
        cv.import_checkpoint(tmp_path / "bad")
    assert expect in str(info.value) and "\n" not in str(info.value)
    assert "model.safetensors" in str(info.value)


def test_config_must_agree(tmp_path):
    write_folder(tmp_path / "c", tiny_state(), config=dict(TINY_HF_CONFIG, num_hidden_layers=3))
    with pytest.raises(ConversionError, match="config.json: num_hidden_layers is 3"):
        cv.import_checkpoint(tmp_path / "c")
    write_folder(tmp_path / "c", tiny_state(), config=dict(TINY_HF_CONFIG, num_attention_heads=5))
    with pytest.raises(ConversionError, match="5 heads do not divide width 32"):
        cv.import_checkpoint(tmp_path / "c")
    write_folder(tmp_path / "c", tiny_state(), config=dict(TINY_HF_CONFIG, hidden_act="relu"))
    with pytest.raises(ConversionError, match="hidden_act 'relu'"):
        cv.import_checkpoint(tmp_path / "c")


def test_full_size_key_list_matches_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=768,
        hidden_act="quick_gelu",
    )
    with torch.device("meta"):
        model = transformers.CLIPVisionModelWithProjection(config)
    state = model.state_dict()
    rules = cv.rules_for(CLIP_VIT_L14)
    assert list(state) == [r.torch_key for r in rules]
    assert sum(v.numel() for v in state.values()) == 303_966_208


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_parity_with_transformers(tmp_path, precision):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.CLIPVisionConfig(**hf_fields(TINY_HF_CONFIG))
    model = reference(lambda: transformers.CLIPVisionModelWithProjection(hf_config), precision)
    state = numpy_state(model)
    write_folder(tmp_path / "m", state)
    variables = cv.import_checkpoint(tmp_path / "m")
    config = cv.clip_config(variables["model_config"])
    assert config == TINY_CLIP
    if precision == "float32":  # the exported folder is one transformers loads as it was
        cv.export_checkpoint(variables, tmp_path / "exported")
        loaded = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "exported")
        assert_same(numpy_state(loaded), state)
    params = to_params(state, cv.rules_for(config), cv.param_shapes(config), dtype=precision)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 28, 28)).astype(precision)
    with torch.no_grad():
        out = model(torch.from_numpy(pixels))
        tokens = model.visual_projection(model.vision_model.post_layernorm(out.last_hidden_state))
        want = (out.image_embeds.numpy(), out.last_hidden_state.numpy(), tokens.numpy())
    jdtype = getattr(jnp, precision)
    with jax.enable_x64(precision == "float64"):
        ours = CLIPVisionModelWithProjection(config, dtype=jdtype, param_dtype=jdtype)
        params = jax.tree.map(lambda a: jnp.asarray(a, jdtype), params)
        o = jax.jit(ours.apply)({"params": params}, pixels.transpose(0, 2, 3, 1))
        got = (o.image_embeds, o.last_hidden_state, o.token_embeds)
    names = ("image_embeds", "last_hidden_state", "token_embeds")
    found = {name: errors(g, w) for name, g, w in zip(names, got, want)}
    check("clip_vision", precision, found)
