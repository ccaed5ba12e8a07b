"""Release `sd_vae`: Stable Diffusion VAE weights <-> jaxtalk `AutoencoderKL` params.

Reads the diffusers folder layout (`config.json` + `diffusion_pytorch_model.safetensors` or
`.bin`, the folder itself or the `vae/` subfolder of a pipeline folder such as
stable-diffusion-v1-5) or a single file: a diffusers-named state_dict, or a "single file"
in the original CompVis / Stability names (`encoder.down.0.block.0...`, `mid.attn_1.q` as
1x1 convs; vae-ft-mse-840000-ema-pruned.safetensors / .ckpt, where a training file's
`state_dict` entry is read), or a whole SD 1.x checkpoint whose `first_stage_model.*` keys
are the VAE (its UNet, text encoder, EMA copy and schedule buffers are skipped, any other
key is an error). .safetensors are read by safetensors, anything else as a torch archive.

Key spellings: diffusers >= 0.14 writes `to_q` / `to_k` / `to_v` / `to_out.0`, older
files (sd-vae-ft-mse's .bin among them) `query` / `key` / `value` / `proj_attn`, the
original files their own names; all import, and export writes the spelling (and the
`first_stage_model.` prefix) that was read: diffusers' new names for weights that were not
imported. Sizes come from the keys; `norm_num_groups` and `scaling_factor` (which no key
shows) from config.json, else SD's 32 and 0.18215.

Export (`export_checkpoint`): a path ending in a weights extension gets a single file; any
other path becomes a diffusers folder (config.json as read, or one written from the
config, beside the weights file named as read, by default
diffusion_pytorch_model.safetensors) that diffusers' `from_pretrained` loads.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.convert import hf_files, torch_pickle
from jaxtalk.convert.mapping import (
    ConversionError,
    Layout,
    Rule,
    conv,
    count_indices,
    linear,
    norm,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.models.latent_diffusion.vae import SD_VAE, AutoencoderKL, VAEConfig

RELEASES = [
    Release(
        "sd_vae",
        {},
        (),
        "an SD VAE: the diffusers folder of stabilityai/sd-vae-ft-mse (config.json + "
        "diffusion_pytorch_model.safetensors|.bin), a pipeline folder with vae/, its weights "
        "file alone, or an original single file (vae-ft-mse-840000-ema-pruned.safetensors, "
        "a whole SD 1.x checkpoint)",
    ),
]

KIND = "sd_vae"
SUBFOLDERS = ("", "vae")
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
WEIGHTS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# The attention projections' key names: diffusers >= 0.14 and before.
ATTENTION_KEYS = {
    "new": {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"},
    "old": {"q": "query", "k": "key", "v": "value", "out": "proj_attn"},
}
# The original (CompVis / Stability "single file") names of diffusers' modules, below
# encoder. / decoder.; block indices are handled by `_ldm_key` / `_diffusers_key`.
LDM_NAMES = (
    ("mid_block.resnets.0.", "mid.block_1."),
    ("mid_block.resnets.1.", "mid.block_2."),
    ("mid_block.attentions.0.group_norm.", "mid.attn_1.norm."),
    ("mid_block.attentions.0.to_q.", "mid.attn_1.q."),
    ("mid_block.attentions.0.to_k.", "mid.attn_1.k."),
    ("mid_block.attentions.0.to_v.", "mid.attn_1.v."),
    ("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out."),
    ("conv_norm_out.", "norm_out."),
)
LDM_ATTENTION = (
    ".attn_1.q.weight",
    ".attn_1.k.weight",
    ".attn_1.v.weight",
    ".attn_1.proj_out.weight",
)
# A whole SD checkpoint holds the VAE under this prefix beside the parts skipped here.
LDM_PREFIX = "first_stage_model."
LDM_OTHER_PARTS = ("model.diffusion_model.", "cond_stage_model.", "model_ema.")
LDM_SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)
# LDM's attention projections are 1x1 convs: (C, C, 1, 1) <-> a Dense kernel (C, C).
CONV1X1_LINEAR = Layout(
    "conv1x1_linear", lambda w: w[:, :, 0, 0].T, lambda w: w.T[:, :, None, None]
)


def _ldm_key(key: str, blocks: int) -> str:
    """diffusers name -> original name; the decoder's up blocks count the other way."""
    side, rest = key.split(".", 1)
    for ours, theirs in LDM_NAMES:
        if rest.startswith(ours):
            return f"{side}.{theirs}{rest[len(ours) :]}"
    rest = rest.replace(".conv_shortcut.", ".nin_shortcut.")
    if m := re.match(
        r"(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|downsamplers\.0|upsamplers\.0)\.", rest
    ):
        index = int(m.group(2)) if m.group(1) == "down" else blocks - 1 - int(m.group(2))
        inner = f"block.{m.group(4)}" if m.group(4) else m.group(3)[: -len("rs.0")]
        return f"{side}.{m.group(1)}.{index}.{inner}.{rest[m.end() :]}"
    return key


def _diffusers_key(key: str, blocks: int) -> str:
    """original name -> diffusers name (the inverse of `_ldm_key`)."""
    side, _, rest = key.partition(".")
    for ours, theirs in LDM_NAMES:
        if rest.startswith(theirs):
            return f"{side}.{ours}{rest[len(theirs) :]}"
    rest = rest.replace(".nin_shortcut.", ".conv_shortcut.")
    if m := re.match(r"(down|up)\.(\d+)\.(block\.(\d+)|downsample|upsample)\.", rest):
        index = int(m.group(2)) if m.group(1) == "down" else blocks - 1 - int(m.group(2))
        inner = f"resnets.{m.group(4)}" if m.group(4) else f"{m.group(3)}rs.0"
        return f"{side}.{m.group(1)}_blocks.{index}.{inner}.{rest[m.end() :]}"
    return key


def _resnet_rules(torch_prefix: str, path: str, shortcut: bool) -> list[Rule]:
    rules = norm(f"{torch_prefix}.norm1", f"{path}/norm1")
    rules += conv(f"{torch_prefix}.conv1", f"{path}/conv1")
    rules += norm(f"{torch_prefix}.norm2", f"{path}/norm2")
    rules += conv(f"{torch_prefix}.conv2", f"{path}/conv2")
    if shortcut:
        rules += conv(f"{torch_prefix}.conv_shortcut", f"{path}/conv_shortcut")
    return rules


def _mid_block_rules(torch_prefix: str, path: str, config: VAEConfig, style: str) -> list[Rule]:
    rules = []
    if config.mid_block_add_attention:  # diffusers registers the attentions first
        names = ATTENTION_KEYS[style]
        t, p = f"{torch_prefix}.attentions.0", f"{path}/attentions_0"
        rules += norm(f"{t}.group_norm", f"{p}/group_norm")
        for ours, theirs in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out", "out")):
            rules += linear(f"{t}.{names[theirs]}", f"{p}/{ours}")
    for i in range(2):
        rules += _resnet_rules(f"{torch_prefix}.resnets.{i}", f"{path}/resnets_{i}", False)
    return rules


def _side_rules(side: str, widths, resnets: int, sampler: str, config, style) -> list[Rule]:
    """The encoder's down blocks (sampler "downsamplers") or the decoder's up blocks
    ("upsamplers") with their mid block, conv_in first and the output head last, in the
    state_dict's order (the decoder registers its up blocks before its mid block)."""
    blocks = "down_blocks" if sampler == "downsamplers" else "up_blocks"
    rules = conv(f"{side}.conv_in", f"{side}/conv_in")
    previous = widths[0]
    for i, width in enumerate(widths):
        for j in range(resnets):
            rules += _resnet_rules(
                f"{side}.{blocks}.{i}.resnets.{j}",
                f"{side}/{blocks}_{i}_resnets_{j}",
                previous != width,
            )
            previous = width
        if i < len(widths) - 1:
            rules += conv(
                f"{side}.{blocks}.{i}.{sampler}.0.conv", f"{side}/{blocks}_{i}_{sampler}_0/conv"
            )
    rules += _mid_block_rules(f"{side}.mid_block", f"{side}/mid_block", config, style)
    rules += norm(f"{side}.conv_norm_out", f"{side}/conv_norm_out")
    return rules + conv(f"{side}.conv_out", f"{side}/conv_out")


def rules_for(config: VAEConfig, attention_keys: str = "new") -> list[Rule]:
    """Every key of the diffusers state_dict, in its order, to its param; attention_keys
    "new" / "old" spell the attention keys as diffusers does since / before 0.14, "ldm"
    gives every key its original name (`ldm_rules`)."""
    if attention_keys == "ldm":
        return ldm_rules(config)
    widths, n = config.block_out_channels, config.layers_per_block
    rules = _side_rules("encoder", widths, n, "downsamplers", config, attention_keys)
    rules += _side_rules(
        "decoder", tuple(reversed(widths)), n + 1, "upsamplers", config, attention_keys
    )
    if config.use_quant_conv:
        rules += conv("quant_conv", "quant_conv")
    if config.use_post_quant_conv:
        rules += conv("post_quant_conv", "post_quant_conv")
    return rules


def ldm_rules(config: VAEConfig) -> list[Rule]:
    """`rules_for` under the original names, the attention projections as 1x1 convs."""
    blocks = len(config.block_out_channels)
    return [
        Rule(
            key := _ldm_key(r.torch_key, blocks),
            r.param_path,
            CONV1X1_LINEAR if key.endswith(LDM_ATTENTION) else r.layout,
        )
        for r in rules_for(config, "new")
    ]


def param_shapes(config: VAEConfig) -> dict:
    side = 2 ** (len(config.block_out_channels) - 1)
    example = jax.ShapeDtypeStruct((1, side, side, config.in_channels), jnp.float32)
    return variable_shapes(AutoencoderKL(config), example)["params"]


def key_style(state: Mapping[str, Any], source: str) -> str:
    """ "new" or "old" (diffusers, after and before 0.14) or "ldm" (the original names):
    which spelling the keys use (one of them, not several)."""
    found = (
        {"ldm"} if any(k.startswith(("encoder.down.", "encoder.mid.")) for k in state) else set()
    )
    found |= {
        style
        for style, names in ATTENTION_KEYS.items()
        for key in state
        if key.endswith(f".attentions.0.{names['q']}.weight")
    }
    if len(found) > 1:
        raise ConversionError(f"{source}: keys in more than one spelling ({sorted(found)})")
    return found.pop() if found else "new"


def _shape(state: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise ConversionError(f"{source}: missing key {key!r} (not an AutoencoderKL state_dict?)")
    return tuple(int(s) for s in np.shape(state[key]))


def detect_config(
    state: Mapping[str, Any], source: str, hf_config: Mapping | None = None, config_source=""
) -> VAEConfig:
    """Sizes from the keys; groups and latent scale from the diffusers config, which must
    agree with the keys where both say something."""
    blocks = max(count_indices(state, r"encoder\.down_blocks\.(\d+)\."), 1)
    widths = tuple(
        _shape(state, f"encoder.down_blocks.{i}.resnets.0.conv1.weight", source)[0]
        for i in range(blocks)
    )
    hf_config = hf_config or {}
    found = dict(
        in_channels=_shape(state, "encoder.conv_in.weight", source)[1],
        out_channels=_shape(state, "decoder.conv_out.weight", source)[0],
        latent_channels=_shape(state, "decoder.conv_in.weight", source)[1],
        block_out_channels=widths,
        layers_per_block=count_indices(state, r"encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        mid_block_add_attention=any(".mid_block.attentions.0." in k for k in state),
        use_quant_conv="quant_conv.weight" in state,
        use_post_quant_conv="post_quant_conv.weight" in state,
    )
    for key, value in found.items():
        given = hf_config.get(key)
        given = tuple(given) if isinstance(given, list) else given
        if given is not None and given != value:
            raise ConversionError(
                f"{config_source}: {key} is {given!r} but the weights have {value!r}"
            )
    groups = hf_files.config_value(hf_config, "norm_num_groups", int, 32, config_source)
    scale = hf_files.config_value(
        hf_config, "scaling_factor", float, SD_VAE.scaling_factor, config_source
    )
    return VAEConfig(**found, norm_num_groups=groups, scaling_factor=float(scale))


def _diffusers_config(config: VAEConfig) -> dict:
    """A diffusers AutoencoderKL config.json for `config` (when none was read)."""
    n = len(config.block_out_channels)
    out = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    del out["norm_eps"]  # fixed at 1e-6 in diffusers' VAE blocks
    out.update(
        _class_name="AutoencoderKL",
        act_fn="silu",
        block_out_channels=list(config.block_out_channels),
        down_block_types=["DownEncoderBlock2D"] * n,
        up_block_types=["UpDecoderBlock2D"] * n,
    )
    return out


def _vae_keys(state: Mapping[str, Any], source: str) -> tuple[dict, str]:
    """(the VAE's keys, their prefix): a whole SD checkpoint's first_stage_model.* with
    its UNet, text encoder, EMA copy and schedule buffers skipped; any other key is an error."""
    if not any(k.startswith(LDM_PREFIX) for k in state):
        return dict(state), ""
    vae, _ = hf_files.split_prefixed(
        state, LDM_PREFIX, LDM_OTHER_PARTS + LDM_SCHEDULE_BUFFERS, source
    )
    return vae, LDM_PREFIX


def _state_dict(obj: Any, source: str) -> dict:
    """A torch file's state_dict: the object itself or, in a training checkpoint, its
    `state_dict` entry."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    return torch_pickle.state_dict_of(obj, source)


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """{"params", "model_config": VAEConfig fields + how the file was laid out}."""
    where = hf_files.locate(path, SUBFOLDERS, WEIGHTS_NAMES)
    if where.weights.endswith(hf_files.SAFETENSORS):
        state, metadata = hf_files.read_state_dict(where.weights)
    else:
        state, metadata = _state_dict(torch_pickle.load(where.weights), where.weights), None
    state, prefix = _vae_keys(state, where.weights)
    style = key_style(state, where.weights)
    named = state
    if style == "ldm":
        blocks = count_indices(state, r"encoder\.down\.(\d+)\.")
        named = {_diffusers_key(k, blocks): v for k, v in state.items()}
    hf_config = hf_files.read_config(where.config) if where.config else None
    config = detect_config(named, where.weights, hf_config, where.config or "")
    config = dataclasses.replace(config, **overrides)
    rules = [
        dataclasses.replace(r, torch_key=prefix + r.torch_key) for r in rules_for(config, style)
    ]
    state = {prefix + k: v for k, v in state.items()}
    params = hf_files.strict_params(state, rules, param_shapes(config), where.weights)
    model_config = dataclasses.asdict(config)
    model_config.update(
        kind=KIND,
        attention_keys=style,
        key_prefix=prefix,
        weights_file=os.path.basename(where.weights),
        hf_config=hf_config,
        safetensors_metadata=metadata,
        float_dtype=hf_files.float_dtype(state),
    )
    return {"params": params, "model_config": model_config}


def vae_config(model_config: Mapping) -> VAEConfig:
    """The VAEConfig fields of an import's model_config (lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(VAEConfig)}
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items()}
    return VAEConfig(**{k: v for k, v in fields.items() if k in names})


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping | None = None
) -> None:
    model_config = dict(model_config or variables.get("model_config") or {})
    config = vae_config(model_config)
    style = model_config.get("attention_keys", "new")
    prefix = model_config.get("key_prefix") or ""
    state = {
        prefix + k: v
        for k, v in to_state_dict(variables["params"], rules_for(config, style)).items()
    }
    hf_files.write_layout(
        state, path, model_config, WEIGHTS_EXTENSIONS, WEIGHTS_NAMES[0], _diffusers_config(config)
    )
