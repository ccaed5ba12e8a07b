"""MegActor's released checkpoint (megvii-research/megactor v1, weights/checkpoint-steps9000.ckpt
from HVSiniX/RawVideoDriven) <-> the params of `jaxtalk.models.megactor.MegActor`.

The release's train.py saves `{"epoch", "global_step", "state_dict": model.state_dict()}`
with `model` the DeepSpeed-wrapped MagicAnimate module, so the state_dict keys are
`module.<submodule>.*`; its loader (animate.py) takes `module.unet.*` and
`module.appearance_encoder.*` and ignores the rest. Here:

- `module.unet.*`: the 13-channel inflated UNet with its motion modules and, as
  `module.unet.condition_input_layer.*`, the DrivenEncoder -> params "unet" and
  "driven_encoder"; the motion modules' `pos_encoder.pe` tables are buffers, checked
  against the sinusoid table and kept as read ("buffers");
- `module.appearance_encoder.*`: the ReferenceNet (no conv_out, last block cut at norm1)
  -> params "reference_net";
- the frozen submodules MagicAnimate also registers (`module.text_encoder.*`,
  `module.vae.*`) and everything outside the state_dict (epoch, global_step) are kept as
  read ("rest" and "layout", `release_file`), so export writes the file back whole;
- any other key, a missing key or a wrong shape is a one-line `ConversionError` naming the
  file and the key.

A bare state_dict (no "state_dict" entry) and keys without the `module.` prefix are read
too, as the release's loader reads them. The widths come from the tensors' shapes (heads
and GroupNorm groups default to SD1.5's). Tensors are imported as float32; export writes
each key in the dtype it was read in (model_config "dtype", with "dtype_exceptions"), in the
release's key order (its module registration order), so the round trip is bit-exact.
`jaxtalk import --release=megactor --checkpoint=checkpoint-steps9000.ckpt`.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import re
from typing import Any, Mapping

import numpy as np

from jaxtalk.convert import motion_module as mm_convert
from jaxtalk.convert import release_file, sd_unet, torch_pickle
from jaxtalk.convert.mapping import (
    ConversionError,
    Rule,
    conv,
    count_indices,
    linear,
    to_params,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.megactor import driven_encoder as de
from jaxtalk.models.megactor.denoiser import MegActor, MegActorConfig

KIND = "megactor"
UNET, REFERENCE = "unet.", "appearance_encoder."
DRIVEN = UNET + "condition_input_layer."
KEPT_SUBMODULES = ("text_encoder.", "vae.")  # MagicAnimate's frozen modules: kept as read
RELEASES = [
    Release(
        "megactor",
        {},
        (),
        "MegActor v1's trained UNet (13-channel conv_in, DrivenEncoder, v3 motion modules) and "
        "appearance encoder: weights/checkpoint-steps9000.ckpt of "
        "huggingface.co/HVSiniX/RawVideoDriven",
    ),
]


# ----------------------------------------------------------------------------- rules


def driven_encoder_rules(cfg: de.DrivenEncoderConfig, prefix: str = DRIVEN) -> list[Rule]:
    """The DrivenEncoder's tensors in the release's order (its ConvInputLayer registers the
    driving convs, spatial_conv_out, then the FiLM branch)."""

    def torch_name(name):  # "spatial_conv_layers_0_2" -> "spatial_conv_layers.0.2"
        return re.sub(r"_(\d+)", r".\1", name)

    p = "params/driven_encoder"
    rules = [
        r
        for name, *_ in de.driving_convs(cfg)
        for r in conv(prefix + torch_name(name), f"{p}/spatial/{name}")
    ]
    rules += conv(prefix + "spatial_conv_out", f"{p}/spatial_conv_out")
    if cfg.film:
        for name, *_ in de.reference_convs(cfg):
            rules += conv(prefix + torch_name(name), f"{p}/film/convs/{name}")
        rules += linear(prefix + "refer_linears.0", f"{p}/film/refer_linears_0")
        rules += linear(prefix + "refer_linears_out.0", f"{p}/film/refer_linears_out_0")
    return rules


def _prefixed(rules: list[Rule], torch_prefix: str, path_prefix: str) -> list[Rule]:
    return [Rule(torch_prefix + r.torch_key, path_prefix + r.param_path, r.layout) for r in rules]


# The release's 3-D transformer blocks (its attention.py) register attn1 before norm1.
_BLOCK_ORDER = {"attn1": 0, "norm1": 1, "attn2": 2, "norm2": 3, "ff": 4, "norm3": 5}
_BLOCK = re.compile(r"(.*\.transformer_blocks\.\d+)\.(\w+)\.")


def _release_block_order(rules: list[Rule]) -> list[Rule]:
    """Each spatial transformer block's tensors in the release's registration order."""

    def block(rule):  # the transformer block a key belongs to, else the key itself
        m = _BLOCK.match(rule.torch_key)
        return m.group(1) if m and ".motion_modules." not in rule.torch_key else rule.torch_key

    def rank(rule):
        return (
            _BLOCK_ORDER[_BLOCK.match(rule.torch_key).group(2)]
            if block(rule) != rule.torch_key
            else 0
        )

    return [r for _, group in itertools.groupby(rules, key=block) for r in sorted(group, key=rank)]


def unet_rules(cfg: MegActorConfig) -> list[Rule]:
    """`unet.*` in the release's order: conv_in, the DrivenEncoder, then the rest of the
    inflated UNet (its motion modules within their blocks, attn1 before norm1)."""
    motion = mm_convert.module_rules if cfg.motion_modules else None
    rules = _prefixed(sd_unet.unet_rules(cfg.unet, motion), UNET, "params/unet/")
    return rules[:2] + driven_encoder_rules(cfg.driven) + _release_block_order(rules[2:])


def reference_rules(cfg: MegActorConfig) -> list[Rule]:
    return _prefixed(sd_unet.unet_rules(cfg.reference), REFERENCE, "params/reference_net/")


_TO_OUT = re.compile(r".*\.motion_modules\.\d+\..*\.attention_blocks\.\d+\.to_out\.0\.bias$")


def position_keys(cfg: MegActorConfig) -> list[str]:
    """The motion modules' `pos_encoder.pe` buffer keys, one beside each attention."""
    return [
        r.torch_key.removesuffix("to_out.0.bias") + "pos_encoder.pe"
        for r in unet_rules(cfg)
        if _TO_OUT.match(r.torch_key)
    ]


def release_keys(cfg: MegActorConfig) -> list[str]:
    """Every `unet.*` and `appearance_encoder.*` key of the release's state_dict, in order
    (each position table right after its attention's to_out)."""
    tables = {k.removesuffix("pos_encoder.pe") + "to_out.0.bias": k for k in position_keys(cfg)}
    keys = []
    for rule in unet_rules(cfg) + reference_rules(cfg):
        keys.append(rule.torch_key)
        if rule.torch_key in tables:
            keys.append(tables[rule.torch_key])
    return keys


# ----------------------------------------------------------------------------- configs


def _shape(sd: Mapping, key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"{source}: missing key {key!r}")
    return tuple(np.shape(sd[key]))


def _driven_config(sd: Mapping[str, np.ndarray], source: str) -> de.DrivenEncoderConfig:
    """The DrivenEncoder's widths from its tensors: the driving stages' second convs; the
    reference pyramid's first conv and its stride-2 convs (torch indices 2, 6, 10, ...)."""
    out = lambda key: _shape(sd, DRIVEN + key, source)[0]  # noqa: E731
    stages = count_indices(sd, re.escape(DRIVEN) + r"spatial_conv_layers\.(\d+)\.")
    film = f"{DRIVEN}refer_linears.0.weight" in sd
    if not film:
        return de.DrivenEncoderConfig(
            widths=tuple(out(f"spatial_conv_layers.{i}.2.weight") for i in range(stages)),
            film=False,
            out_channels=out("spatial_conv_out.weight"),
        )
    convs = (count_indices(sd, re.escape(DRIVEN) + r"refer_convs\.(\d+)\.") + 1) // 2
    levels = convs // 2
    return de.DrivenEncoderConfig(
        widths=tuple(out(f"spatial_conv_layers.{i}.2.weight") for i in range(stages)),
        reference_widths=(out("refer_convs.0.weight"),)
        + tuple(out(f"refer_convs.{2 + 4 * m}.weight") for m in range(levels - 1)),
        film_hidden=out("refer_linears.0.weight"),
        out_channels=out("spatial_conv_out.weight"),
    )


def detect_config(
    sd: Mapping[str, np.ndarray], source: str = "state_dict", **overrides
) -> MegActorConfig:
    """The widths of every part from the tensors of a (prefix-free) release state_dict;
    `overrides` are UNetConfig fields for both UNets (what shapes cannot tell: heads,
    GroupNorm groups)."""
    unet = {k[len(UNET) :]: v for k, v in sd.items() if k.startswith(UNET)}
    reference = {k[len(REFERENCE) :]: v for k, v in sd.items() if k.startswith(REFERENCE)}
    if not unet or not reference:
        which = UNET if not unet else REFERENCE
        raise ConversionError(f"{source}: no {which}* keys (not a MegActor checkpoint)")
    plain = {
        k: v
        for k, v in unet.items()
        if ".motion_modules." not in k and not k.startswith("condition_input_layer.")
    }
    tables = [k for k in unet if k.endswith(".pos_encoder.pe")]
    try:
        return MegActorConfig(
            unet=dataclasses.replace(
                sd_unet.detect_config(plain, f"{source} ({UNET}*)", **overrides), video_norm=True
            ),
            reference=sd_unet.detect_config(reference, f"{source} ({REFERENCE}*)", **overrides),
            driven=_driven_config(sd, source),
            motion_modules=any(".motion_modules." in k for k in unet),
            motion_max_len=int(np.shape(unet[tables[0]])[1]) if tables else 32,
        )
    except (ValueError, IndexError) as e:
        if isinstance(e, ConversionError):
            raise
        raise ConversionError(f"{source}: {e}") from None


def config_to_dict(cfg: MegActorConfig) -> dict:
    """A JSON-able model_config (weights-file metadata)."""
    return {"kind": KIND, **dataclasses.asdict(cfg)}


def config_of(model_config: Mapping[str, Any] | MegActorConfig) -> MegActorConfig:
    """The MegActorConfig of a model_config that `config_to_dict` wrote."""
    if isinstance(model_config, MegActorConfig):
        return model_config

    def tuples(d):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    parts = {"unet": ld.UNetConfig, "reference": ld.UNetConfig, "driven": de.DrivenEncoderConfig}
    fields = {f.name for f in dataclasses.fields(MegActorConfig)}
    values = {}
    try:
        for key, value in model_config.items():
            if key in parts:
                values[key] = parts[key](**tuples(value))
            elif key in fields:
                values[key] = value
    except (TypeError, ValueError) as e:
        raise ConversionError(f"megactor model_config: {e}") from None
    return MegActorConfig(**values)


# ----------------------------------------------------------------------------- import


def param_shapes(cfg: MegActorConfig) -> dict:
    """{"params": tree} shapes of the whole MegActor (jax.eval_shape: nothing computed)."""
    import jax
    import jax.numpy as jnp

    side = 2 ** (len(cfg.unet.block_out_channels) - 1)
    px, r = side * cfg.driven.downsampling, cfg.driven.reference_side
    f32 = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)  # noqa: E731
    args = (
        f32(1, 1, side, side, 4),
        f32(1),
        f32(1, 1, cfg.unet.cross_attention_dim),
        f32(1, 1, px, px, 3),
        f32(1, r, r, 3),
        f32(1, side, side, 4),
        f32(1, side, side, 4),
        f32(1, side, side, 1),
    )
    return {"params": variable_shapes(MegActor(cfg), *args)["params"]}


def _container(obj: Any, source: str) -> Mapping:
    """The file's state_dict: its "state_dict" entry or the file itself."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    if isinstance(obj, Mapping):
        return obj
    raise ConversionError(f"{source}: not a checkpoint dict ({type(obj).__name__})")


def _strip(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _dtypes(state: Mapping[str, np.ndarray], keys: list[str]) -> dict:
    """The file's dtype ("dtype": the most common one, "dtype_exceptions": the others)."""
    names = {k: str(np.asarray(state[k]).dtype) for k in keys}
    common = collections.Counter(names.values()).most_common(1)[0][0] if names else "float32"
    return {"dtype": common, "dtype_exceptions": {k: d for k, d in names.items() if d != common}}


def import_state_dict(
    container: Mapping, source: str, dtype=np.float32, **overrides
) -> tuple[dict, list[str]]:
    """(variables without layout/rest, the file keys the model produces) of the file's
    state_dict mapping; floating tensors become `dtype`."""
    tensors = torch_pickle.state_dict_of(container, source)
    stripped = {}
    for key, value in tensors.items():
        name = _strip(key)
        if name in stripped:
            raise ConversionError(f"{source}: key {key!r} appears with and without 'module.'")
        stripped[name] = (key, value)
    model = {k: v for k, (_, v) in stripped.items() if k.startswith((UNET, REFERENCE))}
    unexpected = [
        orig
        for name, (orig, _) in stripped.items()
        if not name.startswith((UNET, REFERENCE) + KEPT_SUBMODULES)
    ]
    if unexpected:
        raise ConversionError(f"{source}: unexpected key {unexpected[0]!r}")
    cfg = detect_config(model, source, **overrides)
    tables = position_keys(cfg)
    buffers = mm_convert._check_tables(model, tables, cfg.motion_max_len, source)
    rules = unet_rules(cfg) + reference_rules(cfg)
    params_sd = {k: v for k, v in model.items() if k not in buffers}
    shapes = param_shapes(cfg)
    sd_unet.check_keys(params_sd, rules, shapes, source)
    params = to_params(params_sd, rules, shapes, source=source, dtype=dtype)["params"]
    prefix = {name: orig[: len(orig) - len(name)] for name, (orig, _) in stripped.items()}
    produced = [prefix[k] + k for k in model]
    config = config_to_dict(cfg)
    config.update(_dtypes(model, release_keys(cfg)))
    config["prefix"] = "module." if all(p == "module." for p in prefix.values()) else ""
    variables = {
        "params": params,
        "buffers": {prefix[k] + k: v for k, v in buffers.items()},
        "model_config": config,
    }
    return variables, produced


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """{"params" ({"unet", "driven_encoder", "reference_net"}), "buffers" (the position
    tables as read), "model_config", "layout", "rest"} of the released file; `overrides`
    are UNetConfig fields (`attention_heads=`, `norm_num_groups=`) for files that are not
    SD1.5-sized."""
    source = os.fspath(path)
    obj = torch_pickle.load(source)
    container = _container(obj, source)
    variables, produced = import_state_dict(container, source, **overrides)
    generated = set(produced)
    variables["layout"], variables["rest"] = release_file.keep(
        obj, container, generated.__contains__, source
    )
    return variables


# ----------------------------------------------------------------------------- export


def export_state_dict(variables: Mapping, model_config: Mapping | None = None) -> dict:
    """The release's `unet.*` + `appearance_encoder.*` tensors (with the model_config's
    prefix, "module." for the released file), in its order and dtypes."""
    raw = dict(model_config or variables.get("model_config") or {})
    cfg = config_of(raw)
    rules = unet_rules(cfg) + reference_rules(cfg)
    converted = to_state_dict({"params": variables["params"]}, rules)
    prefix = raw.get("prefix", "module.")
    common = np.dtype(raw.get("dtype", "float32"))
    exceptions = raw.get("dtype_exceptions") or {}
    kept = variables.get("buffers") or {}
    out = {}
    for key in release_keys(cfg):
        name = prefix + key
        if key in converted:
            out[name] = converted[key].astype(np.dtype(exceptions.get(key, common)))
        elif name in kept:
            out[name] = np.asarray(kept[name])
        else:  # a position table an import did not keep: the sinusoid table
            dim = int(converted[key.removesuffix("pos_encoder.pe") + "to_out.0.bias"].shape[0])
            table = mm_convert.position_table(cfg.motion_max_len, dim)[None]
            out[name] = table.astype(np.dtype(exceptions.get(key, common)))
    return out


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping | None = None
) -> None:
    """Writes the release's file: the imported file whole (epoch, global_step, the kept
    text encoder and VAE) around the converted state_dict, or, for params that were not
    imported, `{"state_dict": ...}` as train.py saves it (without the frozen modules)."""
    sd = export_state_dict(variables, model_config)
    if variables.get("layout") is not None:
        obj = release_file.rebuild(
            variables["layout"], variables.get("rest") or {}, sd, source="megactor weights"
        )
    else:
        obj = torch_pickle.PlainDict(state_dict=sd)
    torch_pickle.save(obj, path)
