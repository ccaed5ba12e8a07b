"""Stable Diffusion UNet state_dicts (diffusers key names) <-> jaxtalk UNet params.

Reads a diffusers folder (`unet/config.json` beside `diffusion_pytorch_model.safetensors`
or `.bin`, the pipeline root or the unet folder itself) or a single state_dict file holding
the diffusers keys (.safetensors, or .pth / .bin / .pt torch.save archives, as AniPortrait's
denoising_unet.pth and reference_unet.pth are), through jaxtalk's restricted readers only.
Strict both ways: a missing or unexpected key or a wrong shape is a one-line
`ConversionError` naming the file and the key; export writes the keys in diffusers' order
and the round trip is bit-exact.

The widths come from config.json in a folder and from the tensors' shapes in a single file
(what shapes cannot tell, the number of heads and GroupNorm groups, defaults to SD1.5's 8
and 32; pass `attention_heads=` / `norm_num_groups=` to override). A file without
conv_norm_out / conv_out is a ReferenceNet (AniPortrait), one whose last transformer ends
at norm1 is MegActor's. The UNet inflated over frames has the same keys plus its motion
modules (`motion_module_rules`, from the motion module's converter); AniPortrait's
denoising_unet.pth holds only the UNet's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import (
    ConversionError,
    Rule,
    conv,
    count_indices,
    flatten_params,
    linear,
    norm,
    to_params,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.errors import CheckpointError
from jaxtalk.export.safetensors_io import load_params
from jaxtalk.models.latent_diffusion.unet import UNet2DConditionModel, UNetConfig

RELEASES = [
    Release(
        "sd15_unet",
        {},
        (),
        "Stable Diffusion 1.5's UNet: a diffusers folder (unet/config.json + "
        "diffusion_pytorch_model.safetensors) or a single state_dict with the diffusers keys "
        "(AniPortrait's denoising_unet.pth / reference_unet.pth)",
        files=(
            ReleaseFile(
                "checkpoint",
                "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/"
                "unet/diffusion_pytorch_model.safetensors",
                None,
                None,
            ),
        ),
    ),
]

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
MotionRules = Callable[[str, str], list]  # (torch prefix, params path) -> rules


def flax_path(torch_prefix: str) -> str:
    """'down_blocks.0.attentions.1.to_out.0' -> 'down_blocks_0/attentions_1/to_out_0'."""
    return re.sub(r"\.(\d+)", r"_\1", torch_prefix).replace(".", "/")


def _conv(prefix):
    return conv(prefix, flax_path(prefix))


def _linear(prefix, bias=True):
    return linear(prefix, flax_path(prefix), bias)


def _norm(prefix):
    return norm(prefix, flax_path(prefix))


# ----------------------------------------------------------------------------- rules


def resnet_rules(prefix: str, shortcut: bool) -> list[Rule]:
    rules = _norm(f"{prefix}.norm1") + _conv(f"{prefix}.conv1")
    rules += _linear(f"{prefix}.time_emb_proj")
    rules += _norm(f"{prefix}.norm2") + _conv(f"{prefix}.conv2")
    return rules + (_conv(f"{prefix}.conv_shortcut") if shortcut else [])


def attention_rules(prefix: str) -> list[Rule]:
    rules = []
    for name in ("to_q", "to_k", "to_v"):
        rules += _linear(f"{prefix}.{name}", bias=False)
    return rules + _linear(f"{prefix}.to_out.0")


def transformer_block_rules(
    prefix: str, cut: bool = False, cross_attention: bool = True
) -> list[Rule]:
    rules = _norm(f"{prefix}.norm1")
    if cut:
        return rules
    rules += attention_rules(f"{prefix}.attn1")
    if cross_attention:
        rules += _norm(f"{prefix}.norm2") + attention_rules(f"{prefix}.attn2")
    rules += _norm(f"{prefix}.norm3")
    return rules + _linear(f"{prefix}.ff.net.0.proj") + _linear(f"{prefix}.ff.net.2")


def transformer_rules(
    prefix: str, layers: int, cut_last: bool = False, cross_attention: bool = True
) -> list[Rule]:
    """A Transformer2DModel's tensors; `cross_attention=False`: blocks without norm2 / attn2
    (AniPortrait's PoseGuider)."""
    rules = _norm(f"{prefix}.norm") + _conv(f"{prefix}.proj_in")
    for i in range(layers):
        cut = cut_last and i == layers - 1
        rules += transformer_block_rules(f"{prefix}.transformer_blocks.{i}", cut, cross_attention)
    return rules + ([] if cut_last else _conv(f"{prefix}.proj_out"))


def unet_rules(
    config: UNetConfig, motion_module_rules: MotionRules | None = None, motion_mid: bool = False
) -> list[Rule]:
    """Every tensor of the UNet, in diffusers' state_dict order (attentions, resnets, motion
    modules, resamplers within a block; down blocks, up blocks, mid block)."""
    widths, levels = config.block_out_channels, len(config.block_out_channels)
    layers = config.transformer_layers

    def motion(prefix, count):
        if motion_module_rules is None:
            return []
        return [
            r
            for j in range(count)
            for r in motion_module_rules(
                f"{prefix}.motion_modules.{j}", flax_path(f"{prefix}.motion_modules.{j}")
            )
        ]

    rules = _conv("conv_in")
    rules += _linear("time_embedding.linear_1") + _linear("time_embedding.linear_2")
    for i, width in enumerate(widths):
        p, count = f"down_blocks.{i}", config.layers_per_block
        if config.cross_attention[i]:
            rules += [
                r for j in range(count) for r in transformer_rules(f"{p}.attentions.{j}", layers)
            ]
        previous = widths[max(i - 1, 0)]
        rules += [
            r
            for j in range(count)
            for r in resnet_rules(f"{p}.resnets.{j}", j == 0 and previous != width)
        ]
        rules += motion(p, count)
        rules += _conv(f"{p}.downsamplers.0.conv") if i < levels - 1 else []
    for i, width in enumerate(reversed(widths)):
        p, count = f"up_blocks.{i}", config.layers_per_block + 1
        last = i == levels - 1
        if config.cross_attention[levels - 1 - i]:
            cut = config.cut_at_last_norm1 and last
            rules += [
                r
                for j in range(count)
                for r in transformer_rules(f"{p}.attentions.{j}", layers, cut and j == count - 1)
            ]
        rules += [r for j in range(count) for r in resnet_rules(f"{p}.resnets.{j}", True)]
        rules += motion(p, count)
        rules += _conv(f"{p}.upsamplers.0.conv") if not last else []
    rules += transformer_rules("mid_block.attentions.0", layers)
    rules += resnet_rules("mid_block.resnets.0", False) + resnet_rules("mid_block.resnets.1", False)
    rules += motion("mid_block", 1) if motion_mid else []
    if config.conv_out:
        rules += _norm("conv_norm_out") + _conv("conv_out")
    return rules


# ----------------------------------------------------------------------------- configs


def config_from_diffusers(
    cfg: Mapping[str, Any], source: str = "config.json", **overrides
) -> UNetConfig:
    """A UNetConfig from a diffusers UNet2DConditionModel config.json; features this UNet
    does not build are errors naming the file."""
    unsupported = {
        "use_linear_projection": False,
        "class_embed_type": None,
        "addition_embed_type": None,
        "encoder_hid_dim": None,
        "num_class_embeds": None,
        "time_cond_proj_dim": None,
        "dual_cross_attention": False,
        "upcast_attention": False,
        "only_cross_attention": False,
        "resnet_time_scale_shift": "default",
        "center_input_sample": False,
        "act_fn": "silu",
        "mid_block_type": "UNetMidBlock2DCrossAttn",
    }
    for key, supported in unsupported.items():
        if cfg.get(key, supported) != supported:
            raise ConversionError(
                f"{source}: {key}={cfg[key]!r} is not supported (only {supported!r})"
            )
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    layers = cfg.get("transformer_layers_per_block", 1)
    if not isinstance(heads, int) or not isinstance(layers, int):
        raise ConversionError(f"{source}: per-level heads or transformer layers are not supported")
    down = list(cfg.get("down_block_types", []))
    up = list(cfg.get("up_block_types", []))
    known = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
    if not down or any(t not in known for t in down):
        raise ConversionError(f"{source}: down_block_types {down} not supported")
    cross = tuple(known[t] for t in down)
    mirrored = ["CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(cross)]
    if up != mirrored:
        raise ConversionError(f"{source}: up_block_types {up} do not mirror {down}")
    values = dict(
        in_channels=cfg.get("in_channels", 4),
        out_channels=cfg.get("out_channels", 4),
        block_out_channels=tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280))),
        layers_per_block=cfg.get("layers_per_block", 2),
        cross_attention=cross,
        attention_heads=heads,
        transformer_layers=layers,
        cross_attention_dim=cfg.get("cross_attention_dim", 768),
        norm_num_groups=cfg.get("norm_num_groups", 32),
        norm_eps=cfg.get("norm_eps", 1e-5),
        flip_sin_to_cos=cfg.get("flip_sin_to_cos", True),
        freq_shift=cfg.get("freq_shift", 0),
    )
    values.update(overrides)
    return UNetConfig(**values)


def config_to_diffusers(config: UNetConfig) -> dict:
    """The diffusers config.json of a UNet with a conv_out (the fields this UNet reads)."""
    return {
        "_class_name": "UNet2DConditionModel",
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "block_out_channels": list(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "down_block_types": [
            "CrossAttnDownBlock2D" if c else "DownBlock2D" for c in config.cross_attention
        ],
        "up_block_types": [
            "CrossAttnUpBlock2D" if c else "UpBlock2D" for c in reversed(config.cross_attention)
        ],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "attention_head_dim": config.attention_heads,
        "transformer_layers_per_block": config.transformer_layers,
        "cross_attention_dim": config.cross_attention_dim,
        "norm_num_groups": config.norm_num_groups,
        "norm_eps": config.norm_eps,
        "flip_sin_to_cos": config.flip_sin_to_cos,
        "freq_shift": config.freq_shift,
        "use_linear_projection": False,
    }


def detect_config(
    sd: Mapping[str, np.ndarray], source: str = "state_dict", **overrides
) -> UNetConfig:
    """A UNetConfig from the tensors of a diffusers-keyed state_dict."""
    try:
        levels = count_indices(sd, r"down_blocks\.(\d+)\.")
        widths = tuple(
            int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in range(levels)
        )
        cross = tuple(f"down_blocks.{i}.attentions.0.norm.weight" in sd for i in range(levels))
        attn2 = next(k for k in sd if k.endswith("attn2.to_k.weight"))
        top = f"up_blocks.{levels - 1}"
        attentions = count_indices(sd, re.escape(top) + r"\.attentions\.(\d+)\.")
        last = f"{top}.attentions.{attentions - 1}"
        values = dict(
            in_channels=int(sd["conv_in.weight"].shape[1]),
            out_channels=int(sd["conv_out.weight"].shape[0]) if "conv_out.weight" in sd else 4,
            block_out_channels=widths,
            layers_per_block=count_indices(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
            cross_attention=cross,
            transformer_layers=count_indices(
                sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."
            ),
            cross_attention_dim=int(sd[attn2].shape[1]),
            conv_out="conv_out.weight" in sd,
            cut_at_last_norm1=f"{last}.norm.weight" in sd and f"{last}.proj_out.weight" not in sd,
        )
    except (KeyError, StopIteration) as e:
        raise ConversionError(f"{source}: not a diffusers UNet state_dict (no key {e})") from None
    values.update(overrides)
    return UNetConfig(**values)


# ----------------------------------------------------------------------------- import / export


def param_shapes(config: UNetConfig, motion_module=None, motion_mid: bool = False) -> dict:
    """The params tree's shapes (jax.eval_shape; nothing is computed)."""
    model = UNet2DConditionModel(config, motion_module=motion_module, motion_mid=motion_mid)
    side = 2 ** (len(config.block_out_channels) - 1)
    sample = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
    context = jax.ShapeDtypeStruct((1, 1, config.cross_attention_dim), jnp.float32)
    timestep = jax.ShapeDtypeStruct((1,), jnp.float32)
    return variable_shapes(model, sample, timestep, context)["params"]


def check_keys(
    sd: Mapping[str, np.ndarray], rules: list[Rule], reference: Mapping, source: str
) -> None:
    """One-line errors naming `source` and the first offending key: missing, unexpected,
    or of the wrong shape."""
    wanted = {r.torch_key: r for r in rules}
    shapes = {k: tuple(v.shape) for k, v in flatten_params(reference).items()}

    def fail(kind, keys):
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        raise ConversionError(f"{source}: {kind} key {keys[0]!r}{more}")

    missing = [k for k in wanted if k not in sd]
    if missing:
        fail("missing", missing)
    unexpected = [k for k in sd if k not in wanted]
    if unexpected:
        fail("unexpected", unexpected)
    for key, rule in wanted.items():
        expected = rule.layout.to_torch(
            np.broadcast_to(np.zeros((), np.int8), shapes[rule.param_path])
        ).shape
        if tuple(np.shape(sd[key])) != tuple(expected):
            raise ConversionError(
                f"{source}: key {key!r} has shape {tuple(np.shape(sd[key]))}, expected {tuple(expected)}"
            )


def params_from_state_dict(
    sd: Mapping[str, np.ndarray],
    config: UNetConfig,
    source: str = "state_dict",
    motion_module=None,
    motion_module_rules: MotionRules | None = None,
    motion_mid: bool = False,
    dtype=np.float32,
) -> dict:
    rules = unet_rules(config, motion_module_rules, motion_mid)
    reference = param_shapes(config, motion_module, motion_mid)
    check_keys(sd, rules, reference, source)
    return to_params(sd, rules, reference, source=source, dtype=dtype)


def _weights_in(folder: str) -> tuple[str, str]:
    """(config.json, weights file) of a diffusers pipeline or unet folder."""
    for base in (fs.join(folder, "unet"), folder):
        config = fs.join(base, "config.json")
        if fs.exists(config):
            for name in WEIGHT_FILES:
                if fs.exists(fs.join(base, name)):
                    return config, fs.join(base, name)
            raise CheckpointError(f"{base}: no {' or '.join(WEIGHT_FILES)} beside config.json")
    raise CheckpointError(f"{folder}: no unet/config.json (not a diffusers folder)")


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file or a torch.save archive, through the restricted
    readers."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        tree, _ = load_params(path)
        nested = [k for k, v in tree.items() if not isinstance(v, np.ndarray)]
        if nested:
            raise CheckpointError(
                f"{path}: key {nested[0]!r} holds '/' (not a diffusers state_dict)"
            )
        return tree
    return torch_pickle.load_state_dict(path)


def _read_json(path: str) -> dict:
    value = fs.read_json(path)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """{'params', 'model_config'} from a diffusers folder or a single state_dict file;
    `overrides` are UNetConfig fields."""
    path = os.fspath(path)
    if fs.isdir(path):
        config_path, weights_path = _weights_in(path)
        config = config_from_diffusers(_read_json(config_path), config_path, **overrides)
        sd, source = read_state_dict(weights_path), weights_path
    else:
        sd, source = read_state_dict(path), path
        config = detect_config(sd, path, **overrides)
    params = params_from_state_dict(sd, config, source)
    return {"params": params, "model_config": dataclasses.asdict(config)}


def config_of(model_config: Mapping[str, Any] | UNetConfig) -> UNetConfig:
    if isinstance(model_config, UNetConfig):
        return model_config
    return UNetConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
    )


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    model_config: Mapping[str, Any] | UNetConfig | None = None,
    dtype: str | None = None,
) -> None:
    """Writes the diffusers state_dict: a folder (config.json +
    diffusion_pytorch_model.safetensors) when `path` has no suffix, else one .safetensors
    or torch.save (.pth / .bin / .pt) file. `dtype` casts floating tensors (e.g. float16)."""
    config = config_of(model_config if model_config is not None else variables["model_config"])
    sd = to_state_dict(variables["params"], unet_rules(config))
    if dtype is not None:
        sd = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in sd.items()}
    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        fs.makedirs(path)
        fs.write_text(
            fs.join(path, "config.json"), json.dumps(config_to_diffusers(config), indent=2)
        )
        path = fs.join(path, WEIGHT_FILES[0])
    if path.endswith(".safetensors"):
        from safetensors.numpy import save_file

        with fs.local_output(path) as tmp:
            save_file(sd, tmp, metadata={"format": "pt"})
    else:
        torch_pickle.save(sd, path)
