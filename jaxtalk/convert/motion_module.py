"""AnimateDiff motion modules (`jaxtalk.models.latent_diffusion.motion_module`) <-> their
released state_dicts.

`module_rules(torch_prefix, path)` maps one module, e.g. `down_blocks.1.motion_modules.0.*`
to params `down_blocks_1/motion_modules_0/*`, for the inflated UNet's converter. The whole
files (AnimateDiff's mm_sd_v15_v2.ckpt and v3_sd15_mm.ckpt, AniPortrait's motion_module.pth,
MegActor's motion modules) hold one module after every resnet/attention pair of the SD1.5
UNet: down blocks 320, 320, 640, 640, 1280, 1280, 1280, 1280 channels; up blocks 1280 x 6,
640 x 3, 320 x 3; v2 also one in the mid block (1280). 21 modules are 588 keys and
453,209,280 parameters, 20 are 560 keys and 417,137,600 parameters; the keys include every
attention's `pos_encoder.pe` buffer (1, max_len, C), which the module recomputes: import
checks each against the table and keeps it as read in "buffers" for an exact export.

Releases `animatediff_motion_v2` (with the mid-block module) and `animatediff_motion_v3`
(`jaxtalk import --release=NAME --checkpoint=FILE`). The file's tensor dtype is kept in
model_config so that export writes float16 files back as float16.
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import (
    ConversionError,
    Rule,
    flatten_params,
    linear,
    norm,
    to_params,
    to_state_dict,
)
from jaxtalk.convert.releases import Release
from jaxtalk.models.latent_diffusion.motion_module import MotionModule, position_table
from jaxtalk.models.param_hook import eval_shape_init

KIND = "animatediff_motion_modules"
SD15_DOWN = (320, 640, 1280, 1280)  # per down block, 2 modules each; up blocks reversed, 3 each
PE_TOLERANCE = 2e-3  # a float16 file's table is within 5e-4 of the float64 one
RELEASES = [
    Release(
        "animatediff_motion_v2",
        {"version": "v2"},
        (),
        "AnimateDiff v2 motion modules with the mid-block one: guoyww/animatediff "
        "mm_sd_v15_v2.ckpt, or AniPortrait's motion_module.pth",
    ),
    Release(
        "animatediff_motion_v3",
        {"version": "v3"},
        (),
        "AnimateDiff v3 motion modules (no mid-block one): guoyww/animatediff "
        "v3_sd15_mm.ckpt, as MegActor starts from",
    ),
]


def _join(prefix: str, sep: str, name: str) -> str:
    return f"{prefix}{sep}{name}" if prefix else name


def module_rules(
    torch_prefix: str, path: str, num_blocks: int = 1, attention_blocks: int = 2
) -> list[Rule]:
    """One module's parameters (not the `pos_encoder.pe` buffers, see `position_keys`), in
    the release's key order; `path` is the module's params path ("params/..." in a
    variables tree). The release's `temporal_transformer.` level has no params level
    (`MotionModule` is the transformer itself)."""
    t, p = _join(torch_prefix, ".", "temporal_transformer"), path
    rules = norm(f"{t}.norm", f"{p}/norm") + linear(f"{t}.proj_in", f"{p}/proj_in")
    for b in range(num_blocks):
        tb, pb = f"{t}.transformer_blocks.{b}", f"{p}/transformer_blocks_{b}"
        for j in range(attention_blocks):
            ta, pa = f"{tb}.attention_blocks.{j}", f"{pb}/attention_blocks_{j}"
            for name in ("to_q", "to_k", "to_v"):
                rules += linear(f"{ta}.{name}", f"{pa}/{name}", bias=False)
            rules += linear(f"{ta}.to_out.0", f"{pa}/to_out_0")
        for j in range(attention_blocks):
            rules += norm(f"{tb}.norms.{j}", f"{pb}/norms_{j}")
        rules += linear(f"{tb}.ff.net.0.proj", f"{pb}/ff/net_0/proj")
        rules += linear(f"{tb}.ff.net.2", f"{pb}/ff/net_2")
        rules += norm(f"{tb}.ff_norm", f"{pb}/ff_norm")
    return rules + linear(f"{t}.proj_out", f"{p}/proj_out")


def position_keys(torch_prefix: str, num_blocks: int = 1, attention_blocks: int = 2) -> list[str]:
    """The module's `pos_encoder.pe` buffer keys."""
    t = _join(torch_prefix, ".", "temporal_transformer")
    return [
        f"{t}.transformer_blocks.{b}.attention_blocks.{j}.pos_encoder.pe"
        for b in range(num_blocks)
        for j in range(attention_blocks)
    ]


def sd15_modules(mid_block: bool, block_channels=SD15_DOWN) -> list[tuple[str, int]]:
    """(torch prefix, channels) of every module of the SD1.5 inflated UNet (or one with other
    `block_channels`), in the release's state_dict order: down blocks (2 modules each), up
    blocks (3 each, channels reversed), then the mid block."""
    chans = tuple(block_channels)
    out = [(f"down_blocks.{i}.motion_modules.{j}", c) for i, c in enumerate(chans) for j in (0, 1)]
    out += [
        (f"up_blocks.{i}.motion_modules.{j}", c)
        for i, c in enumerate(reversed(chans))
        for j in (0, 1, 2)
    ]
    return out + ([("mid_block.motion_modules.0", chans[-1])] if mid_block else [])


def _modules(config: Mapping) -> list[tuple[str, int]]:
    return sd15_modules(config["mid_block"], config.get("block_channels", SD15_DOWN))


def param_path(torch_prefix: str) -> str:
    """'down_blocks.1.motion_modules.0' -> 'down_blocks_1/motion_modules_0'."""
    return re.sub(r"\.(\d+)", r"_\1", torch_prefix).replace(".", "/")


def _module(channels: int, config: Mapping, **kw) -> MotionModule:
    return MotionModule(
        channels,
        heads=config.get("heads", 8),
        num_blocks=config.get("num_blocks", 1),
        attention_blocks=config.get("attention_blocks", 2),
        max_len=config.get("max_len", 32),
        position_encoding=config.get("position_encoding", True),
        norm_groups=math.gcd(32, channels),  # shapes do not depend on it; small files may
        **kw,
    )


def module_factory(config: Mapping, **kw) -> Callable[[int], MotionModule]:
    """The inflated UNet's `motion_module` factory for the modules a file's model_config
    describes; `kw`: dtype / param_dtype / remat."""
    return functools.partial(_module, config=config, **kw)


def module_shapes(channels: int, config: Mapping | None = None) -> dict:
    """One module's params shapes (jax.eval_shape: nothing is computed)."""
    module = _module(channels, config or {})
    x = jax.ShapeDtypeStruct((2, 1, 1, channels), jnp.float32)
    shapes = eval_shape_init(lambda rng, x: module.init(rng, x, 2), jax.random.PRNGKey(0), x)
    return nn.unbox(shapes)["params"]


def file_shapes(config: Mapping) -> dict:
    """{"params": tree} shapes of a whole file's modules."""
    tree: dict[str, Any] = {}
    cache: dict[int, dict] = {}
    for prefix, channels in _modules(config):
        if channels not in cache:
            cache[channels] = module_shapes(channels, config)
        node = tree
        *parents, leaf = param_path(prefix).split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = cache[channels]
    return {"params": tree}


def file_rules(config: Mapping) -> list[Rule]:
    blocks = (config.get("num_blocks", 1), config.get("attention_blocks", 2))
    return [
        rule
        for prefix, _ in _modules(config)
        for rule in module_rules(prefix, f"params/{param_path(prefix)}", *blocks)
    ]


def file_position_keys(config: Mapping) -> list[str]:
    if not config.get("position_encoding", True):
        return []
    blocks = (config.get("num_blocks", 1), config.get("attention_blocks", 2))
    return [k for prefix, _ in _modules(config) for k in position_keys(prefix, *blocks)]


def state_shapes(config: Mapping) -> dict[str, tuple[int, ...]]:
    """Every key of the release's file and its tensor shape, in the release's order (each
    attention's position table right after its to_out)."""
    flat = flatten_params(file_shapes(config))
    out: dict[str, tuple[int, ...]] = {}
    for rule in file_rules(config):
        shape = tuple(flat[rule.param_path].shape)
        out[rule.torch_key] = shape[::-1] if rule.layout.name == "linear" else shape
        if rule.torch_key.endswith(".to_out.0.bias") and config.get("position_encoding", True):
            pe = rule.torch_key[: -len("to_out.0.bias")] + "pos_encoder.pe"
            out[pe] = (1, config.get("max_len", 32), shape[0])
    return out


def count_parameters(config: Mapping) -> int:
    shapes = file_shapes(config)["params"]
    return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes))


# ----------------------------------------------------------------------------- files


def _state_dict(obj: Any, source: str) -> dict[str, np.ndarray]:
    """The tensors of a motion-module file: a bare state_dict or one under "state_dict"
    (AnimateDiff's training checkpoints)."""
    key = "state_dict" if isinstance(obj, Mapping) and "state_dict" in obj else None
    return torch_pickle.state_dict_of(obj, source, key)


def infer_config(state: Mapping[str, np.ndarray], source: str, version: str | None = None) -> dict:
    """Module options read from the keys: mid-block module, blocks per module, attention
    blocks per block, position table length; `version` ("v2": mid required, "v3": none)."""
    mid = any(k.startswith("mid_block.motion_modules.") for k in state)
    if version is not None and mid != (version == "v2"):
        want = "a mid-block module" if version == "v2" else "no mid-block module"
        raise ConversionError(f"{source}: AnimateDiff {version} motion modules have {want}")
    first = "down_blocks.0.motion_modules.0.temporal_transformer"
    blocks = {
        int(m.group(1))
        for k in state
        if (m := re.match(rf"{re.escape(first)}\.transformer_blocks\.(\d+)\.", k))
    }
    attn = {
        int(m.group(1))
        for k in state
        if (
            m := re.match(
                rf"{re.escape(first)}\.transformer_blocks\.0\.attention_blocks\.(\d+)\.", k
            )
        )
    }
    if not blocks or not attn:
        raise ConversionError(
            f"{source}: no {first}.transformer_blocks.0.attention_blocks.* keys (not a motion-module file)"
        )
    pe = state.get(f"{first}.transformer_blocks.0.attention_blocks.0.pos_encoder.pe")
    if pe is not None and (pe.ndim != 3 or pe.shape[0] != 1):
        raise ConversionError(
            f"{source}: position table of shape {pe.shape}, expected (1, max_len, C)"
        )
    channels = []
    for i in range(len(SD15_DOWN)):
        weight = state.get(f"down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight")
        if weight is None:
            raise ConversionError(
                f"{source}: missing key 'down_blocks.{i}.motion_modules.0.temporal_transformer.norm.weight'"
            )
        channels.append(int(np.shape(weight)[0]))
    dtypes = {str(np.asarray(v).dtype) for v in state.values()}
    return {
        "kind": KIND,
        "mid_block": mid,
        "num_blocks": max(blocks) + 1,
        "attention_blocks": max(attn) + 1,
        "heads": 8,
        "block_channels": channels,
        "position_encoding": pe is not None,
        "max_len": int(pe.shape[1]) if pe is not None else 32,
        "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
    }


def _check_tables(
    state: Mapping[str, np.ndarray], keys: list[str], max_len: int, source: str
) -> dict:
    """The files's position tables, as read, after checking each is the sinusoid table."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConversionError(
            f"{source}: missing key {missing[0]!r} ({len(missing)} position tables missing)"
        )
    kept, tables = {}, {}
    for key in keys:
        value = np.asarray(state[key])
        dim = value.shape[-1]
        if dim not in tables:
            tables[dim] = position_table(max_len, dim)
        if value.shape != (1, max_len, dim):
            raise ConversionError(
                f"{source}: {key!r} has shape {value.shape}, expected (1, {max_len}, {dim})"
            )
        err = float(np.max(np.abs(value.astype(np.float64)[0] - tables[dim])))
        if not err <= PE_TOLERANCE:
            raise ConversionError(
                f"{source}: {key!r} is not the sinusoidal position table (off by {err:.3g})"
            )
        kept[key] = value
    return kept


def import_state_dict(
    state: Mapping[str, np.ndarray], source: str, version: str | None = None, dtype=np.float32
) -> dict:
    """{"params", "buffers" (the position tables as read), "model_config"} of a motion
    module state_dict; strict: every key mapped, every shape the SD1.5 layout's. `dtype`:
    the params' (float64 for parity checks)."""
    config = infer_config(state, source, version)
    pe_keys = file_position_keys(config)
    kept = _check_tables(state, pe_keys, config["max_len"], source)
    params_state = {k: v for k, v in state.items() if k not in kept}
    variables = to_params(
        params_state, file_rules(config), file_shapes(config), source=source, dtype=dtype
    )
    return {"params": variables["params"], "buffers": kept, "model_config": config}


def import_checkpoint(path: str | os.PathLike, version: str | None = None) -> dict:
    source = os.fspath(path)
    return import_state_dict(_state_dict(torch_pickle.load(source), source), source, version)


def export_state_dict(
    variables: Mapping, model_config: Mapping | None = None
) -> dict[str, np.ndarray]:
    """The release's state_dict, keys in its order: parameters from params, position
    tables as imported (or the computed table where none was kept), in the file's dtype."""
    config = dict(model_config or variables.get("model_config") or {})
    if "mid_block" not in config:
        config["mid_block"] = "mid_block" in variables["params"]
    dtype = np.dtype(config.get("dtype", "float32"))
    tree = {"params": variables["params"]}
    want = {k: tuple(v.shape) for k, v in flatten_params(file_shapes(config)).items()}
    got = {k: tuple(np.shape(v)) for k, v in flatten_params(tree).items()}
    problems = [
        f"{k}: shape {got.get(k)}, the layout needs {s}" for k, s in want.items() if got.get(k) != s
    ]
    problems += [f"unexpected parameter {k}" for k in got if k not in want]
    if problems:
        raise ConversionError(
            f"params do not hold the motion modules model_config describes: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    params_state = to_state_dict(tree, file_rules(config))
    kept = variables.get("buffers") or {}
    out: dict[str, np.ndarray] = {}
    for key, shape in state_shapes(config).items():
        if key in params_state:
            out[key] = params_state[key].astype(dtype)
        elif key in kept:
            out[key] = np.asarray(kept[key])
        else:
            out[key] = position_table(shape[1], shape[2])[None].astype(dtype)
    return out


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping | None = None
) -> None:
    torch_pickle.save(export_state_dict(variables, model_config), path)
