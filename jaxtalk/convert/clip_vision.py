"""Releases `clip_vision` and `sd_image_variations_image_encoder`: transformers CLIP image
towers with projection <-> jaxtalk `CLIPVisionModelWithProjection` params.

Reads a transformers folder (`config.json` + `model.safetensors` or `pytorch_model.bin`),
the `image_encoder/` subfolder of a diffusers pipeline folder (lambdalabs/
sd-image-variations-diffusers, AniPortrait's image encoder), or a weights file alone.
A full CLIP checkpoint (openai/clip-vit-large-patch14: `CLIPModel`) also has the text
tower: its keys (`text_model.*`, `text_projection.weight`, `logit_scale`) are skipped and
nothing else is, so any other stray key is an error. Older files hold the
`vision_model.embeddings.position_ids` buffer: it must be 0..N-1 and is written back on
export when it was read. Sizes come from the keys; heads, activation and LayerNorm eps
from config.json (`vision_config` of a full CLIP config), else ViT-L/14's.

Export (`export_checkpoint`): the vision tower with its projection only, as a single file
for a path with a weights extension, else a transformers folder (config.json as read for
a vision-only file, written from the config for a full CLIP one; weights named as read).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.convert import hf_files
from jaxtalk.convert.mapping import (
    CONV2D,
    ConversionError,
    Rule,
    count_indices,
    linear,
    norm,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.models.latent_diffusion.clip_vision import (
    ACTIVATIONS,
    CLIP_VIT_L14,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

RELEASES = [
    Release(
        "clip_vision",
        {},
        (),
        "a transformers CLIP image tower with projection, e.g. the folder of "
        "openai/clip-vit-large-patch14 (config.json + model.safetensors|pytorch_model.bin; "
        "the text tower's keys are skipped) or the weights file alone",
    ),
    Release(
        "sd_image_variations_image_encoder",
        {},
        (),
        "the folder of lambdalabs/sd-image-variations-diffusers (its image_encoder/ is "
        "read) or that image_encoder/ folder: AniPortrait's CLIP ViT-L/14 image encoder",
    ),
]

KIND = "clip_vision"
SUBFOLDERS = ("", "image_encoder")
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
WEIGHTS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")
PREFIX = "vision_model."
PROJECTION = "visual_projection.weight"
POSITION_IDS = "vision_model.embeddings.position_ids"
# A full CLIPModel checkpoint's text side: skipped on import, never exported.
TEXT_KEYS = ("text_model.", "text_projection.", "logit_scale")


def rules_for(config: CLIPVisionConfig) -> list[Rule]:
    """Every parameter key of the transformers state_dict, in its order, to its param."""
    e, p = "vision_model.embeddings", "embeddings"
    rules = [
        Rule(f"{e}.class_embedding", f"{p}/class_embedding"),
        Rule(f"{e}.patch_embedding.weight", f"{p}/patch_embedding/kernel", CONV2D),
        Rule(f"{e}.position_embedding.weight", f"{p}/position_embedding"),
    ]
    rules += norm("vision_model.pre_layrnorm", "pre_layrnorm")
    for i in range(config.num_hidden_layers):
        t, p = f"vision_model.encoder.layers.{i}", f"layers_{i}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            rules += linear(f"{t}.self_attn.{proj}", f"{p}/self_attn/{proj}")
        rules += norm(f"{t}.layer_norm1", f"{p}/layer_norm1")
        rules += linear(f"{t}.mlp.fc1", f"{p}/fc1")
        rules += linear(f"{t}.mlp.fc2", f"{p}/fc2")
        rules += norm(f"{t}.layer_norm2", f"{p}/layer_norm2")
    rules += norm("vision_model.post_layernorm", "post_layernorm")
    rules += linear("visual_projection", "visual_projection", bias=False)
    return rules


def param_shapes(config: CLIPVisionConfig) -> dict:
    side = config.image_size
    example = jax.ShapeDtypeStruct((1, side, side, config.num_channels), jnp.float32)
    return variable_shapes(CLIPVisionModelWithProjection(config), example)["params"]


def _shape(state: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"{source}: missing key {key!r} (not a CLIP vision state_dict?)")
    return tuple(int(s) for s in np.shape(state[key]))


def _vision_config(hf_config: Mapping, source: str) -> dict:
    """The vision fields of a CLIPVisionConfig or a full CLIPConfig (its vision_config)."""
    vision = hf_config.get("vision_config", hf_config)
    if not isinstance(vision, Mapping):
        raise ConversionError(f"{source}: 'vision_config' must be a JSON object")
    return dict(vision)


def detect_config(
    state: Mapping[str, Any], source: str, hf_config: Mapping | None = None, config_source=""
) -> CLIPVisionConfig:
    """Sizes from the keys; heads, activation and eps from the config (ViT-L/14's without)."""
    hidden, channels, patch, _ = _shape(
        state, "vision_model.embeddings.patch_embedding.weight", source
    )
    positions = _shape(state, "vision_model.embeddings.position_embedding.weight", source)[0]
    side = math.isqrt(max(positions - 1, 0))
    if side * side != positions - 1:
        raise ConversionError(f"{source}: {positions} positions are not 1 + a square grid")
    vision = _vision_config(hf_config or {}, config_source)
    value = lambda key, kind, default: hf_files.config_value(  # noqa: E731
        vision, key, kind, default, config_source
    )
    heads = value("num_attention_heads", int, max(hidden // 64, 1))
    act = value("hidden_act", str, CLIP_VIT_L14.hidden_act)
    if act not in ACTIVATIONS:
        raise ConversionError(
            f"{config_source}: hidden_act {act!r} is not one of {list(ACTIVATIONS)}"
        )
    if heads < 1 or hidden % heads:
        raise ConversionError(f"{config_source}: {heads} heads do not divide width {hidden}")
    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=_shape(state, "vision_model.encoder.layers.0.mlp.fc1.weight", source)[0],
        num_hidden_layers=count_indices(state, r"vision_model\.encoder\.layers\.(\d+)\."),
        num_attention_heads=heads,
        num_channels=channels,
        image_size=side * patch,
        patch_size=patch,
        projection_dim=_shape(state, PROJECTION, source)[0],
        layer_norm_eps=float(value("layer_norm_eps", float, CLIP_VIT_L14.layer_norm_eps)),
        hidden_act=act,
    )
    for key in ("hidden_size", "image_size", "patch_size", "num_hidden_layers"):
        given = vision.get(key)
        if given is not None and given != getattr(config, key):
            raise ConversionError(
                f"{config_source}: {key} is {given!r} but the weights have {getattr(config, key)}"
            )
    return config


def _check_position_ids(state: Mapping[str, Any], config: CLIPVisionConfig, source: str) -> bool:
    """Whether the file holds the position_ids buffer (then it must be 0..N-1)."""
    if POSITION_IDS not in state:
        return False
    ids = np.asarray(state[POSITION_IDS])
    if ids.shape != (1, config.num_positions) or not np.array_equal(
        ids[0], np.arange(config.num_positions)
    ):
        raise ConversionError(f"{source}: {POSITION_IDS} is not 0..{config.num_positions - 1}")
    return True


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """{"params", "model_config": CLIPVisionConfig fields + how the file was laid out}."""
    where = hf_files.locate(path, SUBFOLDERS, WEIGHTS_NAMES)
    state, metadata = hf_files.read_state_dict(where.weights)
    hf_config = hf_files.read_config(where.config) if where.config else None
    config = detect_config(state, where.weights, hf_config, where.config or "")
    config = dataclasses.replace(config, **overrides)
    position_ids = _check_position_ids(state, config, where.weights)
    text = [k for k in state if k.startswith(TEXT_KEYS)]
    skipped = set(text) | {POSITION_IDS}
    params = hf_files.strict_params(
        state, rules_for(config), param_shapes(config), where.weights, skipped.__contains__
    )
    model_config = dataclasses.asdict(config)
    model_config.update(
        kind=KIND,
        position_ids=position_ids,
        position_ids_dtype=str(np.asarray(state[POSITION_IDS]).dtype) if position_ids else None,
        weights_file=os.path.basename(where.weights),
        hf_config=None if text else hf_config,  # a full CLIP config does not fit the export
        safetensors_metadata=metadata,
        float_dtype=hf_files.float_dtype(state),
    )
    return {"params": params, "model_config": model_config}


def clip_config(model_config: Mapping) -> CLIPVisionConfig:
    names = {f.name for f in dataclasses.fields(CLIPVisionConfig)}
    return CLIPVisionConfig(**{k: v for k, v in model_config.items() if k in names})


def _transformers_config(config: CLIPVisionConfig) -> dict:
    out = dataclasses.asdict(config)
    out.update(architectures=["CLIPVisionModelWithProjection"], model_type="clip_vision_model")
    return out


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping | None = None
) -> None:
    model_config = dict(model_config or variables.get("model_config") or {})
    config = clip_config(model_config)
    state = to_state_dict(variables["params"], rules_for(config))
    if model_config.get("position_ids"):
        dtype = np.dtype(model_config.get("position_ids_dtype") or np.int64)
        state[POSITION_IDS] = np.arange(config.num_positions, dtype=dtype)[None]
    hf_files.write_layout(
        state,
        path,
        model_config,
        WEIGHTS_EXTENSIONS,
        WEIGHTS_NAMES[0],
        _transformers_config(config),
    )
