"""Released LivePortrait state_dicts (KwaiVGI/LivePortrait base_models/*.pth) <-> jaxtalk
variables, one rule list per released network.

Every function returns `list[mapping.Rule]` whose targets carry their collection
("params/..." or "batch_stats/..."), in the release's state_dict order, for
`mapping.import_variables` / `mapping.export_state_dict`. The config keywords are the
Flax module's fields (an unknown one is a TypeError from the module itself). BatchNorm
`num_batches_tracked` counters are not parameters: import skips them
(`mapping.is_batch_counter`) and keeps them as read in the "buffers" collection, export
writes a zero beside every `running_var` and `mapping.overlay` puts the kept ones back, so
a round trip reproduces the file key for key.
"""

from __future__ import annotations

from jaxtalk.convert.mapping import CONV2D, CONV3D, Layout, Rule, batch_norm, conv
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.warping import WarpingNetwork

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
