"""Released LivePortrait (KwaiVGI/LivePortrait) state_dicts <-> jaxtalk variables.

One function per released network returns its `mapping.Rule`s, whose targets carry their
collection ("params/..." or "batch_stats/..."), for `mapping.import_variables` and
`mapping.export_state_dict`. Rules are listed in the release's state_dict order, so an
export writes the keys in the order PyTorch does. The config keywords are the Flax
module's fields (an unknown one is a TypeError from the module itself). BatchNorm
`num_batches_tracked` counters are not parameters: import skips them
(`mapping.is_batch_counter`) and keeps them as read in the "buffers" collection, export
writes a zero beside every `running_var` and `mapping.overlay` puts the kept ones back, so
a round trip reproduces the file key for key.

Releases `liveportrait` and `liveportrait_animals` (`jaxtalk import --release=NAME
--checkpoint=DIR`, `jaxtalk export --release=NAME --out=DIR`): `import_checkpoint` reads the
released directory (base_models/*.pth, retargeting_models/stitching_retargeting_module.pth)
into one variables tree whose groups are the training task's (params appearance, motion,
warping, spade, stitching, lip, eye; batch_stats appearance, warping, spade), reading every
network's sizes from its keys; `export_checkpoint` writes that directory back.
`run_variables` gathers the same tree from a `liveportrait` training run's groups (declared
in `RUN_VARIABLES`, which `jaxtalk export --workdir` looks up by the run's task).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxtalk import fs
from jaxtalk.convert import torch_pickle, weights
from jaxtalk.convert.mapping import (
    CONV2D,
    CONV3D,
    ConversionError,
    Layout,
    Rule,
    batch_norm,
    conv,
    count_indices,
    export_state_dict,
    import_variables,
    linear,
    norm,
    overlay,
    reshape,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.errors import one_line
from jaxtalk.models.layers.convnext import CONVNEXT_V2_TINY
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.generator import SPADEDecoder, feature_channels
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.retargeting import RetargetingMLP, mlp_config
from jaxtalk.models.liveportrait.warping import WarpingNetwork

# ----------------------------------------------------------------------------- M, G, S
# Motion extractor (base_models/motion_extractor.pth, keys `detector.*`), SPADE generator
# (base_models/spade_generator.pth; spectral-norm convs store weight_orig in params and
# weight_u / weight_v in batch_stats) and the stitching / retargeting MLPs
# (retargeting_models/stitching_retargeting_module.pth holds three state_dicts,
# retarget_shoulder / retarget_mouth / retarget_eye, keys `module.mlp.*`: pass
# prefix="module.").


def convnext_v2_rules(
    torch_prefix: str,
    path: str,
    depths: Sequence[int] = CONVNEXT_V2_TINY["depths"],
    dims: Sequence[int] = CONVNEXT_V2_TINY["dims"],
) -> list[Rule]:
    """A ConvNeXt-V2 trunk (`jaxtalk.models.layers.convnext.ConvNeXtV2` at params/`path`)
    from the reference implementation's `downsample_layers.*` and `stages.*` keys."""
    rules = conv(f"{torch_prefix}downsample_layers.0.0", f"{path}/stem")
    rules += norm(f"{torch_prefix}downsample_layers.0.1", f"{path}/stem_norm")
    for i in range(1, len(dims)):
        rules += norm(f"{torch_prefix}downsample_layers.{i}.0", f"{path}/down{i}_norm")
        rules += conv(f"{torch_prefix}downsample_layers.{i}.1", f"{path}/down{i}")
    for i, depth in enumerate(depths):
        width = 4 * dims[i]
        for j in range(depth):
            tk, fp = f"{torch_prefix}stages.{i}.{j}", f"{path}/stage{i}_{j}"
            rules += conv(f"{tk}.dwconv", f"{fp}/dwconv")
            rules += norm(f"{tk}.norm", f"{fp}/norm")
            rules += linear(f"{tk}.pwconv1", f"{fp}/pwconv1")
            grn = reshape((width,), (1, 1, 1, width))
            rules += [
                Rule(f"{tk}.grn.gamma", f"{fp}/grn/gamma", grn),
                Rule(f"{tk}.grn.beta", f"{fp}/grn/beta", grn),
            ]
            rules += linear(f"{tk}.pwconv2", f"{fp}/pwconv2")
    return rules


def motion_rules(
    depths: Sequence[int] = CONVNEXT_V2_TINY["depths"],
    dims: Sequence[int] = CONVNEXT_V2_TINY["dims"],
    prefix: str = "detector.",
    **config,
) -> list[Rule]:
    """MotionExtractor (any num_kp / num_bins: the head sizes do not change key names)."""
    del config
    rules = convnext_v2_rules(prefix, "params/backbone", depths, dims)
    rules += norm(f"{prefix}norm", "params/norm")
    for head in ("kp", "scale", "pitch", "yaw", "roll", "t", "exp"):
        rules += linear(f"{prefix}fc_{head}", f"params/fc_{head}")
    return rules


def spectral_conv_rules(torch_prefix: str, path: str, bias: bool = True) -> list[Rule]:
    """A spectral_norm-wrapped conv (`SpectralNormConv` at `path`), in PyTorch's key order."""
    rules = [Rule(f"{torch_prefix}.bias", f"params/{path}/bias")] if bias else []
    return rules + [
        Rule(f"{torch_prefix}.weight_orig", f"params/{path}/kernel", CONV2D),
        Rule(f"{torch_prefix}.weight_u", f"batch_stats/{path}/u"),
        Rule(f"{torch_prefix}.weight_v", f"batch_stats/{path}/v"),
    ]


def spade_block_rules(torch_prefix: str, path: str, learned_shortcut: bool) -> list[Rule]:
    """A SPADEResnetBlock: its convs, then its SPADE norms (registration order)."""
    rules = spectral_conv_rules(f"{torch_prefix}.conv_0", f"{path}/conv_0")
    rules += spectral_conv_rules(f"{torch_prefix}.conv_1", f"{path}/conv_1")
    norms = ["norm_0", "norm_1"]
    if learned_shortcut:
        rules += spectral_conv_rules(f"{torch_prefix}.conv_s", f"{path}/conv_s", bias=False)
        norms.append("norm_s")
    for name in norms:
        tk, fp = f"{torch_prefix}.{name}", f"params/{path}/{name}"
        rules += conv(f"{tk}.mlp_shared.0", f"{fp}/mlp_shared")
        rules += conv(f"{tk}.mlp_gamma", f"{fp}/mlp_gamma")
        rules += conv(f"{tk}.mlp_beta", f"{fp}/mlp_beta")
    return rules


def generator_rules(
    upscale: int = 2,
    block_expansion: int = 64,
    max_features: int = 512,
    num_down_blocks: int = 2,
    out_channels: int = 64,
    num_middle_blocks: int = 6,
    **config,
) -> list[Rule]:
    """SPADEDecoder with the same config fields (spade_hidden does not change key names)."""
    del config
    c = feature_channels(block_expansion, max_features, num_down_blocks)
    rules = conv("fc", "params/fc")
    for i in range(num_middle_blocks):
        rules += spade_block_rules(f"G_middle_{i}", f"G_middle_{i}", False)
    rules += spade_block_rules("up_0", "up_0", True)
    rules += spade_block_rules("up_1", "up_1", c != out_channels)
    rules += conv("conv_img.0" if upscale > 1 else "conv_img", "params/conv_img")
    return rules


def retargeting_rules(hidden_sizes: Sequence[int], prefix: str = "", **config) -> list[Rule]:
    """A RetargetingMLP with `len(hidden_sizes)` hidden layers: `mlp.{2i}` <-> mlp_{2i}."""
    del config
    rules = []
    for i in range(len(hidden_sizes) + 1):
        rules += linear(f"{prefix}mlp.{2 * i}", f"params/mlp_{2 * i}")
    return rules


# ----------------------------------------------------------------------------- F and W (part B)


def _conv_norm(torch_prefix: str, path: str, layout: Layout = CONV2D) -> list[Rule]:
    """A block with `conv` and `norm` children (SameBlock2d, Down/UpBlock*d)."""
    return conv(f"{torch_prefix}.conv", f"params/{path}/conv", layout=layout) + batch_norm(
        f"{torch_prefix}.norm", f"{path}/norm"
    )


def _resblock_3d(torch_prefix: str, path: str) -> list[Rule]:
    """ResBlock3d in its state_dict order: conv1, conv2, norm1, norm2."""
    rules = []
    for i in (1, 2):
        rules += conv(f"{torch_prefix}.conv{i}", f"params/{path}/conv{i}", layout=CONV3D)
    for i in (1, 2):
        rules += batch_norm(f"{torch_prefix}.norm{i}", f"{path}/norm{i}")
    return rules


def appearance_rules(**config) -> list[Rule]:
    """appearance_feature_extractor.pth <-> AppearanceFeatureExtractor(**config)."""
    model = AppearanceFeatureExtractor(**config)
    rules = _conv_norm("first", "first")
    for i in range(model.num_down_blocks):
        rules += _conv_norm(f"down_blocks.{i}", f"down_blocks_{i}")
    rules += conv("second", "params/second")
    for i in range(model.num_resblocks):
        rules += _resblock_3d(f"resblocks_3d.3dr{i}", f"resblocks_3d_{i}")
    return rules


def warping_rules(**config) -> list[Rule]:
    """warping_module.pth <-> WarpingNetwork(**config)."""
    model = WarpingNetwork(**config)
    dm = "dense_motion_network"  # the same name in the state_dict and the Flax tree
    rules = []
    for i in range(model.dense_num_blocks):
        rules += _conv_norm(
            f"{dm}.hourglass.encoder.down_blocks.{i}",
            f"{dm}/hourglass/encoder/down_blocks_{i}",
            CONV3D,
        )
    for i in range(model.dense_num_blocks):
        rules += _conv_norm(
            f"{dm}.hourglass.decoder.up_blocks.{i}", f"{dm}/hourglass/decoder/up_blocks_{i}", CONV3D
        )
    rules += _conv_norm(f"{dm}.hourglass.decoder", f"{dm}/hourglass/decoder", CONV3D)
    rules += conv(f"{dm}.mask", f"params/{dm}/mask", layout=CONV3D)
    rules += conv(f"{dm}.compress", f"params/{dm}/compress", layout=CONV3D)
    rules += batch_norm(f"{dm}.norm", f"{dm}/norm")
    if model.estimate_occlusion_map:
        rules += conv(f"{dm}.occlusion", f"params/{dm}/occlusion")
    rules += _conv_norm("third", "third")
    rules += conv("fourth", "params/fourth")
    return rules


# ----------------------------------------------------------------------------- the release
# The released weights are a directory, not a file (pretrained_weights/liveportrait/ of
# KwaiVGI/LivePortrait on Hugging Face): four base networks in base_models/ and the three
# retargeting MLPs in one file, keyed retarget_shoulder / retarget_mouth / retarget_eye.
# The animals release (pretrained_weights/liveportrait_animals/) has the same architecture;
# its current base networks sit in base_models_v1.1/ (the first version in base_models/).

RELEASES = [
    Release(
        "liveportrait",
        {},
        (),
        "KwaiVGI/LivePortrait pretrained_weights/liveportrait/ (the directory holding "
        "base_models/*.pth and retargeting_models/stitching_retargeting_module.pth)",
    ),
    Release(
        "liveportrait_animals",
        {"base_dirs": ("base_models_v1.1", "base_models")},
        (),
        "KwaiVGI/LivePortrait pretrained_weights/liveportrait_animals/ (the directory "
        "holding base_models_v1.1/ or base_models/, and retargeting_models/ if present)",
    ),
]

KIND = "liveportrait"
BASE_DIRS = ("base_models",)
RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"
# variables group -> entry of the retargeting file, in the release's order.
RETARGETING_ENTRIES = {
    "stitching": "retarget_shoulder",
    "lip": "retarget_mouth",
    "eye": "retarget_eye",
}
MODULE_PREFIX = "module."  # what DataParallel left on the keys of a file saved through it


class _Keys:
    """Shapes of a prefix-free state_dict, for size inference; a missing key is an error
    naming the file and the key as the file would hold it."""

    def __init__(self, state: Mapping[str, np.ndarray], source: str, prefix: str):
        self.state, self.source, self.prefix = state, source, prefix

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.state:
            raise ConversionError(f"{self.source}: missing key {self.prefix + key!r}")
        return tuple(int(s) for s in np.shape(self.state[key]))

    def count(self, pattern: str) -> int:
        return count_indices(self.state, pattern)


def _appearance_config(keys: _Keys) -> dict:
    max_features = keys.shape("second.weight")[0]
    channel = keys.shape("resblocks_3d.3dr0.conv1.weight")[0]
    return dict(
        block_expansion=keys.shape("first.conv.weight")[0],
        num_down_blocks=keys.count(r"down_blocks\.(\d+)\."),
        max_features=max_features,
        reshape_channel=channel,
        reshape_depth=max_features // channel,
        num_resblocks=keys.count(r"resblocks_3d\.3dr(\d+)\."),
    )


def _motion_config(keys: _Keys) -> dict:
    stages = keys.count(r"detector\.stages\.(\d+)\.")
    dims = [keys.shape("detector.downsample_layers.0.0.weight")[0]]
    dims += [keys.shape(f"detector.downsample_layers.{i}.1.weight")[0] for i in range(1, stages)]
    return dict(
        num_kp=keys.shape("detector.fc_kp.weight")[0] // 3,
        num_bins=keys.shape("detector.fc_pitch.weight")[0],
        depths=[keys.count(rf"detector\.stages\.{i}\.(\d+)\.") for i in range(stages)],
        dims=dims,
    )


def _widths(channels: int) -> dict:
    """block_expansion and num_down_blocks with block_expansion * 2^n = `channels`: n = 2 as
    released (64 * 4 = 256) when 4 divides it, else n = 0; only the product shapes W and G."""
    return (
        dict(block_expansion=channels // 4, num_down_blocks=2)
        if channels % 4 == 0
        else dict(block_expansion=channels, num_down_blocks=0)
    )


def _warping_config(keys: _Keys) -> dict:
    dm = "dense_motion_network"
    compress, channel = keys.shape(f"{dm}.compress.weight")[:2]
    max_features = keys.shape("third.conv.weight")[1]
    blocks = keys.count(rf"{dm}\.hourglass\.encoder\.down_blocks\.(\d+)\.")
    widths = [
        keys.shape(f"{dm}.hourglass.encoder.down_blocks.{i}.conv.weight")[0] for i in range(blocks)
    ]
    return dict(
        num_kp=keys.shape(f"{dm}.mask.weight")[0] - 1,
        max_features=max_features,
        reshape_channel=channel,
        reshape_depth=max_features // channel,
        estimate_occlusion_map=f"{dm}.occlusion.weight" in keys.state,
        dense_block_expansion=widths[0] // 2 if widths else 1,
        dense_max_features=max(widths, default=1),
        dense_num_blocks=blocks,
        compress=compress,
        **_widths(keys.shape("third.conv.weight")[0]),
    )


def _spade_config(keys: _Keys) -> dict:
    channels = keys.shape("fc.weight")[1]
    return dict(
        upscale=2 if "conv_img.0.weight" in keys.state else 1,
        max_features=2 * channels,
        out_channels=keys.shape("up_1.conv_1.weight_orig")[0],
        num_middle_blocks=keys.count(r"G_middle_(\d+)\."),
        spade_hidden=keys.shape("G_middle_0.norm_0.mlp_shared.0.weight")[0],
        **_widths(channels),
    )


@dataclasses.dataclass(frozen=True)
class _Network:
    """One base network: its variables group, file, module, rules and size inference."""

    group: str
    filename: str
    module: type
    rules: Callable[..., list[Rule]]
    infer: Callable[[_Keys], dict]

    def shapes(self, config: Mapping) -> dict:
        """{"params"[, "batch_stats"]} shapes of the module with `config` (no compute)."""
        model = self.module(**config)
        if self.group == "appearance":
            side = 4 * 2**model.num_down_blocks
            inputs = [jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)]
        elif self.group == "motion":
            inputs = [jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)]
        elif self.group == "warping":
            side = 2**model.dense_num_blocks
            volume = (1, model.reshape_depth, side, side, model.reshape_channel)
            kp = jax.ShapeDtypeStruct((1, model.num_kp, 3), jnp.float32)
            inputs = [jax.ShapeDtypeStruct(volume, jnp.float32), kp, kp]
        else:
            width = feature_channels(
                model.block_expansion, model.max_features, model.num_down_blocks
            )
            inputs = [jax.ShapeDtypeStruct((1, 4, 4, width), jnp.float32)]
        return variable_shapes(model, *inputs)


BASE_NETWORKS = (
    _Network(
        "appearance",
        "appearance_feature_extractor.pth",
        AppearanceFeatureExtractor,
        appearance_rules,
        _appearance_config,
    ),
    _Network("motion", "motion_extractor.pth", MotionExtractor, motion_rules, _motion_config),
    _Network("warping", "warping_module.pth", WarpingNetwork, warping_rules, _warping_config),
    _Network("spade", "spade_generator.pth", SPADEDecoder, generator_rules, _spade_config),
)


def _prefixed(rules: list[Rule], prefix: str) -> list[Rule]:
    return [dataclasses.replace(r, torch_key=prefix + r.torch_key) for r in rules]


def _counters(rules: list[Rule]) -> list[str]:
    """The num_batches_tracked key beside every BatchNorm's running_var."""
    tail = "running_var"
    return [
        r.torch_key[: -len(tail)] + "num_batches_tracked"
        for r in rules
        if r.torch_key.endswith("." + tail)
    ]


def _state_dict(obj: Any, source: str) -> tuple[dict[str, np.ndarray], str]:
    """(the file's tensors by key, the `module.` prefix its keys share or "")."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{source}: expected a state_dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
    if bad:
        raise ConversionError(f"{source}: key {str(bad[0])[:80]!r} is not a named tensor")
    prefix = MODULE_PREFIX if obj and all(k.startswith(MODULE_PREFIX) for k in obj) else ""
    return dict(obj), prefix


def _import_network(
    state: Mapping[str, np.ndarray], prefix: str, rules_for: Callable, infer, shapes_for, source
) -> tuple[dict, dict, dict]:
    """(variables, config, kept counters) of one state_dict: sizes inferred from its keys,
    every key mapped and shape-checked against the module those sizes build."""
    plain = {k[len(prefix) :]: v for k, v in state.items()}
    try:
        config = infer(_Keys(plain, source, prefix))
    except ZeroDivisionError:
        raise ConversionError(f"{source}: a size read from the keys is zero") from None
    try:
        shapes = shapes_for(config)
    except (TypeError, ValueError) as e:  # sizes no module can have
        raise ConversionError(f"{source}: inconsistent sizes {config} ({one_line(e)})") from None
    rules = _prefixed(rules_for(**config), prefix)
    counters = _counters(rules)
    variables = import_variables(state, rules, shapes, source, ignore=set(counters).__contains__)
    missing = [k for k in counters if k not in state]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConversionError(f"{source}: missing key {missing[0]!r}{more}")
    return variables, config, {k: np.asarray(state[k]) for k in counters}


def _retargeting_config(keys: _Keys) -> dict:
    layers = keys.count(r"mlp\.(\d+)\.weight")
    sizes = [keys.shape(f"mlp.{i}.weight")[0] for i in range(0, layers, 2)]
    return dict(
        hidden_sizes=tuple(sizes[:-1]),
        output_size=sizes[-1] if sizes else 0,
        input_size=keys.shape("mlp.0.weight")[1],
    )


def _retargeting_shapes(config: Mapping) -> dict:
    model = RetargetingMLP(config["hidden_sizes"], config["output_size"])
    return variable_shapes(model, jax.ShapeDtypeStruct((1, config["input_size"]), jnp.float32))


def _retargeting_sizes(num_kp: int) -> dict[str, tuple[int, int]]:
    """(input, output) size of each MLP for `num_kp` keypoints (retargeting.py)."""
    k3 = 3 * num_kp
    return {"stitching": (2 * k3, k3 + 2), "lip": (k3 + 2, k3), "eye": (k3 + 3, k3)}


def _import_retargeting(path: str, num_kp: int, variables: dict, layout: dict) -> None:
    obj = torch_pickle.load(path)
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a dict of state_dicts, found {type(obj).__name__}")
    entries = set(RETARGETING_ENTRIES.values())
    extra = [k for k in obj if k not in entries]
    if extra:
        raise ConversionError(
            f"{path}: unexpected entry {str(extra[0])[:80]!r} (expected {sorted(entries)})"
        )
    for group, entry in RETARGETING_ENTRIES.items():
        source = f"{path} [{entry}]"
        if entry not in obj:
            raise ConversionError(f"{path}: missing entry {entry!r}")
        state, prefix = _state_dict(obj[entry], source)
        v, config, _ = _import_network(
            state, prefix, retargeting_rules, _retargeting_config, _retargeting_shapes, source
        )
        want = _retargeting_sizes(num_kp)[group]
        if (config["input_size"], config["output_size"]) != want:
            raise ConversionError(
                f"{source}: {prefix}mlp.0.weight and the last layer give "
                f"{config['input_size']} -> {config['output_size']}, but {num_kp} keypoints "
                f"(motion_extractor.pth) need {want[0]} -> {want[1]}"
            )
        variables["params"][group] = v["params"]
        layout["key_prefix"][group] = prefix


def _find_base_dir(root: str, base_dirs: Sequence[str]) -> str:
    if not fs.isdir(root):
        raise ConversionError(
            f"{root}: not a directory; the LivePortrait release is the directory holding "
            f"{base_dirs[0]}/ and retargeting_models/"
        )
    for name in base_dirs:
        if fs.isdir(fs.join(root, name)):
            return name
    raise ConversionError(
        f"{root}: no {' or '.join(n + '/' for n in base_dirs)} (give the release's directory, "
        "the one holding base_models/ and retargeting_models/)"
    )


def import_checkpoint(path: str | os.PathLike, base_dirs: Sequence[str] = BASE_DIRS) -> dict:
    """The released directory -> {"params": {appearance, motion, warping, spade[, stitching,
    lip, eye]}, "batch_stats": {appearance, warping, spade}, "buffers": {group: counters as
    read}, "model_config": {"kind": "liveportrait", the four networks' module options,
    "base_dir", "key_prefix"}}.

    Keys may carry `module.` prefixes (all of a state_dict's or none; export writes them back
    as read). Every network's sizes are read from its keys and every key is mapped and
    shape-checked; without retargeting_models/stitching_retargeting_module.pth the base
    alone is imported (with a warning). `base_dirs`: where the base networks may lie, the
    first found is read (the animals release: base_models_v1.1, then base_models).
    """
    root = os.fspath(path)
    base_dir = _find_base_dir(root, base_dirs)
    out: dict[str, Any] = {"params": {}, "batch_stats": {}, "buffers": {}}
    layout: dict[str, Any] = {"base_dir": base_dir, "key_prefix": {}}
    config: dict[str, Any] = {"kind": KIND}
    for net in BASE_NETWORKS:
        source = fs.join(root, base_dir, net.filename)
        state, prefix = _state_dict(torch_pickle.load(source), source)
        variables, config[net.group], kept = _import_network(
            state, prefix, net.rules, net.infer, net.shapes, source
        )
        for collection, tree in variables.items():
            out[collection][net.group] = tree
        if kept:
            out["buffers"][net.group] = kept
        layout["key_prefix"][net.group] = prefix
    retargeting = fs.join(root, RETARGETING_FILE)
    if fs.exists(retargeting):
        _import_retargeting(retargeting, config["motion"]["num_kp"], out, layout)
    else:
        logging.warning(
            "%s: no %s; imported the base networks only (no stitching, eye or lip retargeting)",
            root,
            RETARGETING_FILE,
        )
    out["model_config"] = {**config, **layout}
    return out


def _network_config(net: _Network, model_config: Mapping) -> dict:
    """The module options model_config gives a network (the release's where it gives none),
    type-checked; tuples where the module takes sequences."""
    given = model_config.get(net.group) or {}
    if not isinstance(given, Mapping):
        raise ConversionError(f"model_config[{net.group!r}] must be a dict of module options")
    return weights.module_options(net.module, given, f"model_config[{net.group!r}]")


def _export_network(variables: Mapping, rules: list[Rule], shapes: Mapping, kept, source) -> dict:
    """The state_dict of one network's variables, counters as kept, checked by importing it
    back (every parameter present, every shape the module's)."""
    try:
        state = overlay(export_state_dict(variables, rules), kept or {})
    except (KeyError, ConversionError) as e:  # a parameter the rules lack, or the reverse
        raise ConversionError(
            f"{source}: the variables do not fit the sizes model_config gives ({one_line(e)})"
        ) from None
    counters = set(_counters(rules))
    import_variables(state, rules, shapes, source, ignore=counters.__contains__)
    return state


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    model_config: Mapping | None = None,
    base_dirs: Sequence[str] = BASE_DIRS,
) -> None:
    """Writes the released directory: base_dir/*.pth (base_dir as imported when it is one of
    `base_dirs`, else the first) and, when the variables hold stitching, lip and eye,
    retargeting_models/stitching_retargeting_module.pth; keys prefixed as imported, kept
    counters as read (zeros for a trained model). Sizes come from model_config's module
    options (a training run's `model` config or an import's), the release's by default."""
    root = os.fspath(path)
    model_config = dict(model_config or variables.get("model_config") or {})
    params = variables["params"]
    stats = variables.get("batch_stats") or {}
    kept = variables.get("buffers") or {}
    prefixes = model_config.get("key_prefix") or {}
    base_dir = model_config.get("base_dir")
    base_dir = base_dir if base_dir in base_dirs else base_dirs[0]
    missing = [n.group for n in BASE_NETWORKS if n.group not in params]
    if missing:
        raise ConversionError(f"the variables have no {missing} networks to export")
    for net in BASE_NETWORKS:
        config = _network_config(net, model_config)
        prefix = prefixes.get(net.group, "")
        tree = {"params": params[net.group], "batch_stats": stats.get(net.group, {})}
        target = fs.join(root, base_dir, net.filename)
        rules = _prefixed(net.rules(**config), prefix)
        state = _export_network(tree, rules, net.shapes(config), kept.get(net.group), target)
        torch_pickle.save(state, target, archive_name=net.filename[: -len(".pth")])
    present = [g for g in RETARGETING_ENTRIES if g in params]
    if not present:
        return
    if len(present) < len(RETARGETING_ENTRIES):
        raise ConversionError(
            f"the variables hold {present} but the retargeting file needs all of "
            f"{list(RETARGETING_ENTRIES)}"
        )
    target = fs.join(root, RETARGETING_FILE)
    obj = {}
    for group, entry in RETARGETING_ENTRIES.items():
        config = mlp_config(params[group])
        config["input_size"] = int(np.shape(params[group]["mlp_0"]["kernel"])[0])
        rules = _prefixed(retargeting_rules(**config), prefixes.get(group, MODULE_PREFIX))
        shapes = _retargeting_shapes(config)
        obj[entry] = _export_network(
            {"params": params[group]}, rules, shapes, None, f"{target} [{entry}]"
        )
    torch_pickle.save(obj, target, archive_name="stitching_retargeting_module")


# ----------------------------------------------------------------------------- training runs
# A stage-1 run keeps F, M, W, G in its `generator` group; a stitching run keeps them as the
# frozen `base` group ({network: {params[, batch_stats]}}, from the stage-1 run it started
# from) beside its trained `stitching`, `lip` and `eye` MLPs (and the `ratio` regressor, which
# is a training aid, not a released network).


def run_variables(
    config: Mapping,
    read_group: Callable[[str], Mapping],
    group: str | None = None,
    source: str = "the run",
) -> dict:
    """A `liveportrait` run's networks in `import_checkpoint`'s layout ({"params": {appearance,
    motion, warping, spade[, stitching, lip, eye]}, "batch_stats": {appearance, warping,
    spade}}), what `export_checkpoint` writes as the released directory.

    `config`: the run's saved config (its `stage` says which groups hold what);
    `read_group(name)`: a group's variables as `checkpoints.group_variables` gives them (EMA
    over live where kept). `group`: None for the whole model (a stitching run's base with its
    MLPs), or the run's base group, `generator` (stage 1) or `base` (stitching), for the four
    base networks alone; any other group is an error naming the choices."""
    stage = config.get("stage", "base")
    base_group = "generator" if stage == "base" else "base"
    if group not in (None, base_group):
        run = "stage-1" if stage == "base" else stage
        raise ConversionError(
            f"{source}: group {group!r} of a liveportrait {run} run is not a released model "
            f"(no group: the whole model; group {base_group!r}: its base networks alone)"
        )
    if stage == "base":
        v = read_group("generator")  # its "online" copy (live weights beside an EMA) stays
        return {k: v[k] for k in ("params", "batch_stats") if k in v}
    base = read_group("base")["params"]
    variables = {
        "params": {n.group: base[n.group]["params"] for n in BASE_NETWORKS},
        "batch_stats": {
            n.group: base[n.group]["batch_stats"]
            for n in BASE_NETWORKS
            if "batch_stats" in base[n.group]
        },
    }
    if group is None:
        for name in RETARGETING_ENTRIES:
            variables["params"][name] = read_group(name)["params"]
    return variables


# task name -> how its runs become the variables this module's releases export
RUN_VARIABLES = {KIND: run_variables}
