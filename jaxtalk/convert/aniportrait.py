"""AniPortrait's Lmk2Video release (Zejun-Yang/AniPortrait, ZJYang/AniPortrait on Hugging
Face) <-> one jaxtalk variables tree.

    jaxtalk import --release=aniportrait --checkpoint=pretrained_weights [--weights_dir=DIR]
    jaxtalk export --weights=DIR/aniportrait.safetensors --release=aniportrait --out=OUT_DIR

The release is a directory of four torch.save state_dicts:
- reference_unet.pth: the ReferenceNet, SD1.5's UNet without conv_norm_out / conv_out
  (diffusers keys; `sd_unet`);
- denoising_unet.pth: the denoising UNet's 2-D weights (the same 686 keys as SD1.5's UNet);
- motion_module.pth: its AnimateDiff v2 motion modules, mid block included (`motion_module`);
- pose_guider.pth: the PoseGuider (184 keys: parameters, BatchNorm running statistics and
  num_batches_tracked counters; jaxtalk.models.aniportrait.pose_guider).

Import gives {"params": {"reference", "denoiser" (UNet3DConditionModel params, the motion
modules in their slots), "pose_guider"}, "batch_stats": {"pose_guider"}, "buffers":
{"motion_module": position tables as read, "pose_guider": counters as read},
"model_config": {"kind", "reference", "denoiser" (UNetConfig fields), "motion_module",
"pose_guider" (PoseGuiderConfig fields), "dtypes" (each file's tensor dtype)}}. Strict both
ways through the shared converters: a missing or unexpected key or a wrong shape is a
one-line error naming the file and the key; export writes the four files back bit for bit
(counters and tables as read; zeros and the computed tables for a trained model).
`models(model_config)` builds the three Flax modules those params belong to.

What shapes cannot tell (attention heads, GroupNorm groups) defaults to the release's
(8 heads and 32 groups in the UNets, 16 heads and 32 groups in the PoseGuider); the import
options `attention_heads`, `norm_num_groups`, `pose_guider_heads` and
`pose_guider_norm_groups` override them for other files.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxtalk import fs
from jaxtalk.convert import motion_module as mm_convert
from jaxtalk.convert import sd_unet, torch_pickle
from jaxtalk.convert.mapping import (
    ConversionError,
    Rule,
    batch_norm,
    conv,
    count_indices,
    export_state_dict,
    flatten_params,
    overlay,
    to_params,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.convert.weights import module_options
from jaxtalk.errors import one_line
from jaxtalk.models.aniportrait.pose_guider import (
    PoseGuider,
    PoseGuiderConfig,
    level_specs,
    stem_specs,
)
from jaxtalk.models.latent_diffusion.unet import (
    ANIPORTRAIT_REFERENCE,
    SD15,
    UNet2DConditionModel,
    UNet3DConditionModel,
)

KIND = "aniportrait"
FILES = {
    "reference": "reference_unet.pth",
    "denoiser": "denoising_unet.pth",
    "motion_module": "motion_module.pth",
    "pose_guider": "pose_guider.pth",
}
RELEASES = [
    Release(
        KIND,
        {},
        (),
        "ZJYang/AniPortrait on Hugging Face: the directory holding denoising_unet.pth, "
        "reference_unet.pth, pose_guider.pth and motion_module.pth",
    ),
]
COUNTER = "num_batches_tracked"


# ----------------------------------------------------------------------------- PoseGuider


def _stack(torch_prefix: str, count: int) -> tuple[list[Rule], list[str]]:
    """An nn.Sequential of Conv2d, BatchNorm2d, ReLU: (rules, its BatchNorms' prefixes)."""
    rules, norms = [], []
    for j in range(count):
        path, norm = f"{torch_prefix}/layers_{j}", f"{torch_prefix}.{3 * j + 1}"
        rules += conv(f"{torch_prefix}.{3 * j}", f"params/{path}/conv")
        rules += batch_norm(norm, f"{path}/norm")
        norms.append(norm)
    return rules, norms


def pose_guider_layout(config: PoseGuiderConfig) -> tuple[list[Rule], list[str]]:
    """(rules in the release's state_dict order, the num_batches_tracked keys)."""
    rules, norms = [Rule("scale", "params/scale")], []
    stacks = [("conv_layers", len(stem_specs(config.stem)))]
    stacks += [
        (f"conv_layers_{i + 1}", len(specs))
        for i, specs in enumerate(level_specs(config.block_out_channels))
    ]
    for i, (prefix, count) in enumerate(stacks):
        stack_rules, stack_norms = _stack(prefix, count)
        rules += stack_rules
        norms += stack_norms
        if i == 0:
            rules += conv("final_proj", "params/final_proj")
    if config.attention:
        for i in range(len(config.block_out_channels)):
            rules += [
                dataclasses.replace(r, param_path=f"params/{r.param_path}")
                for r in sd_unet.transformer_rules(f"cross_attn{i + 1}", 1, cross_attention=False)
            ]
    return rules, [f"{n}.{COUNTER}" for n in norms]


def pose_guider_shapes(config: PoseGuiderConfig) -> dict:
    """{"params", "batch_stats"} shapes (jax.eval_shape: nothing is computed)."""
    side = 2 ** (len(config.stem) - 1 + len(config.block_out_channels))
    pose = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    return variable_shapes(PoseGuider(config), pose)


def detect_pose_guider(
    sd: Mapping[str, np.ndarray], source: str, heads: int = 16, norm_groups: int = 32
) -> PoseGuiderConfig:
    """The PoseGuiderConfig a pose_guider.pth's shapes give."""

    def out_width(key):
        if key not in sd:
            raise ConversionError(f"{source}: missing key {key!r}")
        return int(np.shape(sd[key])[0])

    convs = (count_indices(sd, r"conv_layers\.(\d+)\.") + 1) // 3
    widths = [out_width(f"conv_layers.{3 * j}.weight") for j in range(convs)]
    levels = count_indices(sd, r"conv_layers_(\d+)\.")
    if convs < 2 or levels < 2:
        raise ConversionError(f"{source}: no conv_layers / conv_layers_N keys (not a PoseGuider)")
    blocks = []
    for i in range(1, levels):
        last = 3 if f"conv_layers_{i}.3.weight" in sd else 0
        blocks.append(out_width(f"conv_layers_{i}.{last}.weight"))
    attention = "cross_attn1.proj_in.weight" in sd
    head_dim = 88
    if attention:
        inner = out_width("cross_attn1.proj_in.weight")
        if inner % heads:
            raise ConversionError(
                f"{source}: attention width {inner} is not a multiple of {heads} heads"
            )
        head_dim = inner // heads
    return PoseGuiderConfig(
        block_out_channels=tuple(blocks),
        stem=tuple(widths[1:-1:2]) + (widths[-1],),
        attention=attention,
        heads=heads,
        head_dim=head_dim,
        norm_groups=norm_groups,
    )


def import_pose_guider(
    sd: Mapping[str, np.ndarray], source: str, config: PoseGuiderConfig, dtype=np.float32
) -> tuple[dict, dict]:
    """({"params", "batch_stats"}, the counters as read) of a pose_guider.pth."""
    rules, counters = pose_guider_layout(config)
    missing = [k for k in counters if k not in sd]
    if missing:
        raise ConversionError(f"{source}: missing key {missing[0]!r}")
    tensors = {k: v for k, v in sd.items() if k not in counters}
    try:
        shapes = pose_guider_shapes(config)
    except (TypeError, ValueError) as e:
        raise ConversionError(f"{source}: inconsistent sizes {config}: {e}") from None
    sd_unet.check_keys(tensors, rules, shapes, source)
    variables = to_params(tensors, rules, shapes, source=source, dtype=dtype)
    return variables, {k: np.asarray(sd[k]) for k in counters}


def export_pose_guider(
    variables: Mapping, config: PoseGuiderConfig, counters: Mapping | None = None
) -> dict[str, np.ndarray]:
    """pose_guider.pth's state_dict: zero counters unless given (as read at import)."""
    rules, _ = pose_guider_layout(config)
    _check_tree(variables, pose_guider_shapes(config), "pose_guider")
    return overlay(export_state_dict(variables, rules), counters or {})


# ----------------------------------------------------------------------------- helpers


def _check_tree(tree: Mapping, shapes: Mapping, what: str) -> None:
    """One-line error for the first parameter the model lacks, misses or shapes otherwise."""
    want = {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}
    got = {k: tuple(np.shape(v)) for k, v in flatten_params(tree).items()}
    for key, shape in want.items():
        if got.get(key) != shape:
            have = "missing" if key not in got else f"shape {got[key]}"
            raise ConversionError(f"{what}: parameter {key} {have}, the model needs {shape}")
    extra = [k for k in got if k not in want]
    if extra:
        raise ConversionError(f"{what}: unexpected parameter {extra[0]}")


def _split_motion(params: Mapping) -> tuple[dict, dict]:
    """The denoiser's params without and with the motion modules."""
    flat = traverse_util.flatten_dict(dict(params))
    motion = {k: v for k, v in flat.items() if any(p.startswith("motion_modules_") for p in k)}
    rest = {k: v for k, v in flat.items() if k not in motion}
    return traverse_util.unflatten_dict(rest), traverse_util.unflatten_dict(motion)


def _merge(a: Mapping, b: Mapping) -> dict:
    flat = traverse_util.flatten_dict(dict(a))
    flat.update(traverse_util.flatten_dict(dict(b)))
    return traverse_util.unflatten_dict(flat)


def _dtype(sd: Mapping[str, np.ndarray]) -> str:
    """The floating dtype of a state_dict's tensors (float32 when mixed)."""
    kinds = {str(np.asarray(v).dtype) for v in sd.values() if np.asarray(v).dtype.kind == "f"}
    return kinds.pop() if len(kinds) == 1 else "float32"


def _cast(sd: Mapping[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
    return {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in sd.items()}


# ----------------------------------------------------------------------------- the release


def import_checkpoint(
    path: str | os.PathLike,
    attention_heads: int = 8,
    norm_num_groups: int = 32,
    pose_guider_heads: int = 16,
    pose_guider_norm_groups: int = 32,
    dtype: str = "float32",
) -> dict:
    """The release directory -> one variables tree (see the module docstring); `dtype`: the
    params' and statistics' (float64 for parity checks)."""
    root = os.fspath(path)
    if not fs.isdir(root):
        raise ConversionError(f"{root}: not a directory (the release's pretrained_weights/)")
    sources = {group: fs.join(root, name) for group, name in FILES.items()}
    absent = [s for s in sources.values() if not fs.exists(s)]
    if absent:
        raise ConversionError(f"{absent[0]}: missing (the release has {', '.join(FILES.values())})")
    states = {group: sd_unet.read_state_dict(s) for group, s in sources.items()}
    dtype = np.dtype(dtype)
    config = {"kind": KIND, "dtypes": {g: _dtype(sd) for g, sd in states.items()}}
    # The small files first: a wrong one is named before the UNets' shapes are traced.
    source = sources["pose_guider"]
    guider = detect_pose_guider(
        states["pose_guider"], source, pose_guider_heads, pose_guider_norm_groups
    )
    pg, counters = import_pose_guider(states["pose_guider"], source, guider, dtype)
    config["pose_guider"] = dataclasses.asdict(guider)
    source = sources["motion_module"]
    try:
        motion = mm_convert.import_state_dict(
            states["motion_module"], source, version="v2", dtype=dtype
        )
    except ConversionError as e:  # the shared mapping lists every problem, one per line
        raise ConversionError(one_line(e, 300)) from None
    config["motion_module"] = motion["model_config"]
    params = {"pose_guider": pg["params"]}
    unet_overrides = dict(attention_heads=attention_heads, norm_num_groups=norm_num_groups)
    for group in ("reference", "denoiser"):
        unet = sd_unet.detect_config(states[group], sources[group], **unet_overrides)
        params[group] = sd_unet.params_from_state_dict(
            states[group], unet, sources[group], dtype=dtype
        )
        config[group] = dataclasses.asdict(unet)
    if config["reference"]["conv_out"] or not config["denoiser"]["conv_out"]:
        raise ConversionError(
            f"{sources['reference']}: the ReferenceNet has no conv_out and the denoising UNet "
            "has one (are the two files swapped?)"
        )
    widths = tuple(motion["model_config"]["block_channels"])
    if widths != tuple(config["denoiser"]["block_out_channels"]):
        raise ConversionError(
            f"{source}: motion modules of widths {widths}, the denoising UNet's blocks are "
            f"{tuple(config['denoiser']['block_out_channels'])}"
        )
    params["denoiser"] = _merge(params["denoiser"], motion["params"])
    return {
        "params": params,
        "batch_stats": {"pose_guider": pg["batch_stats"]},
        "buffers": {"motion_module": motion["buffers"], "pose_guider": counters},
        "model_config": config,
    }


def configs(model_config: Mapping) -> dict[str, Any]:
    """{"reference", "denoiser": UNetConfig, "pose_guider": PoseGuiderConfig,
    "motion_module": dict} from a model_config (an import's, or the release's by default)."""
    model_config = dict(model_config or {})
    out: dict[str, Any] = {}
    for group, default in (("reference", ANIPORTRAIT_REFERENCE), ("denoiser", SD15)):
        given = model_config.get(group)
        try:
            out[group] = sd_unet.config_of(given) if given else default
        except TypeError as e:
            raise ConversionError(f"model_config[{group!r}]: {e}") from None
    given = model_config.get("pose_guider") or {}
    if not isinstance(given, Mapping):
        raise ConversionError("model_config['pose_guider'] must be a dict of PoseGuider options")
    out["pose_guider"] = PoseGuiderConfig(
        **module_options(PoseGuiderConfig, given, "model_config['pose_guider']")
    )
    out["motion_module"] = dict(model_config.get("motion_module") or {"mid_block": True})
    return out


def models(
    model_config: Mapping | None = None, dtype=jnp.float32, param_dtype=jnp.float32
) -> dict[str, nn.Module]:
    """The Flax modules the imported params belong to: "reference" (a ReferenceNet returning
    its bank), "denoiser" (the UNet inflated over frames with its motion modules) and
    "pose_guider"."""
    cfg = configs(model_config or {})
    mm = cfg["motion_module"]
    kw = dict(dtype=dtype, param_dtype=param_dtype)
    motion = mm_convert.module_factory(mm, **kw)
    return {
        "reference": UNet2DConditionModel(cfg["reference"], return_bank=True, **kw),
        "denoiser": UNet3DConditionModel(
            cfg["denoiser"], motion_module=motion, motion_mid=mm.get("mid_block", True), **kw
        ),
        "pose_guider": PoseGuider(cfg["pose_guider"], **kw),
    }


def export_state_dicts(
    variables: Mapping, model_config: Mapping | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """{file name: state_dict} of the four release files."""
    model_config = dict(model_config or variables.get("model_config") or {})
    cfg = configs(model_config)
    params = variables["params"]
    missing = [g for g in ("reference", "denoiser", "pose_guider") if g not in params]
    if missing:
        raise ConversionError(f"the variables have no {missing[0]!r} params to export")
    buffers = variables.get("buffers") or {}
    dtypes = model_config.get("dtypes") or {}
    unet, motion = _split_motion(params["denoiser"])
    out = {}
    for group, tree in (("reference", params["reference"]), ("denoiser", unet)):
        _check_tree(tree, sd_unet.param_shapes(cfg[group]), group)
        sd = to_state_dict(tree, sd_unet.unet_rules(cfg[group]))
        out[FILES[group]] = _cast(sd, dtypes.get(group, "float32"))
    mm = dict(cfg["motion_module"])
    mm.setdefault("block_channels", list(cfg["denoiser"].block_out_channels))
    out[FILES["motion_module"]] = mm_convert.export_state_dict(
        {"params": motion, "buffers": buffers.get("motion_module")}, mm
    )
    guider = {
        "params": params["pose_guider"],
        "batch_stats": (variables.get("batch_stats") or {}).get("pose_guider", {}),
    }
    sd = export_pose_guider(guider, cfg["pose_guider"], buffers.get("pose_guider"))
    out[FILES["pose_guider"]] = _cast(sd, dtypes.get("pose_guider", "float32"))
    return out


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping | None = None
) -> None:
    """Writes the release directory: the four .pth files (torch.load reads them)."""
    root = os.fspath(path)
    fs.makedirs(root)
    for name, sd in export_state_dicts(variables, model_config).items():
        torch_pickle.save(sd, fs.join(root, name), archive_name=name.removesuffix(".pth"))
