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
"""

from __future__ import annotations

from typing import Sequence

from jaxtalk.convert.mapping import (
    CONV2D,
    CONV3D,
    Layout,
    Rule,
    batch_norm,
    conv,
    linear,
    norm,
    reshape,
)
from jaxtalk.models.layers.convnext import CONVNEXT_V2_TINY
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.generator import feature_channels
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
