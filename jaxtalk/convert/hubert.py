"""Release `hubert`: Hugging Face PyTorch HubertModel state_dicts <-> jaxtalk HubertModel.

Reads `pytorch_model.bin` (a torch.save zip archive) of any HuBERT large / base layout,
e.g. TencentGameMate/chinese-hubert-large (AniTalker's) or facebook/hubert-base-ls960.
Keys prefixed `hubert.` (HubertForCTC and friends) are accepted. The positional conv's
weight norm is kept as its two tensors: the legacy `weight_g` / `weight_v` names and the
newer `parametrizations.weight.original0` / `original1` names both import; export writes
the legacy names unless asked otherwise.

What the keys cannot tell (the transformer's LayerNorm placement, attention heads, conv
strides) follows the HF configs: a "layer"-norm conv encoder means the large, pre-LN
(stable layer norm) model; heads = hidden / 64; strides (5, 2, 2, 2, 2, 2, 2). Pass
`stable_layer_norm=`, `num_heads=` or `conv_stride=` to override.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import linen as nn

from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import (
    CONV1D,
    ConversionError,
    Rule,
    conv1d,
    count_indices,
    linear,
    norm,
    to_params,
    to_state_dict,
)
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.models.audio.hubert import HubertConfig, HubertModel

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "hubert",
        {},
        (),
        "a Hugging Face HuBERT checkpoint's pytorch_model.bin, e.g. "
        "TencentGameMate/chinese-hubert-large (what AniTalker uses)",
        # No published checksum found for it: the download reports the digest it got.
        files=(
            ReleaseFile(
                "checkpoint",
                "https://huggingface.co/TencentGameMate/chinese-hubert-large/resolve/main/"
                "pytorch_model.bin",
                None,
                None,
            ),
        ),
    ),
]

RELEASE = "hubert"
_WEIGHT_NORM_KEYS = {
    "legacy": ("encoder.pos_conv_embed.conv.weight_g", "encoder.pos_conv_embed.conv.weight_v"),
    "parametrizations": (
        "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    ),
}


def rules_for(config: HubertConfig, weight_norm_keys: str = "legacy") -> list[Rule]:
    rules = []
    for i in range(len(config.conv_dim)):
        t, p = f"feature_extractor.conv_layers.{i}", f"feature_extractor/conv_{i}"
        rules += conv1d(f"{t}.conv", p, config.conv_bias)
        if config.feat_extract_norm == "layer" or (config.feat_extract_norm == "group" and i == 0):
            rules += norm(f"{t}.layer_norm", f"feature_extractor/norm_{i}")
    if config.feat_proj_layer_norm:
        rules += norm("feature_projection.layer_norm", "feature_projection_norm")
    rules += linear("feature_projection.projection", "feature_projection")
    if config.masked_spec_embed:
        rules.append(Rule("masked_spec_embed", "masked_spec_embed"))
    g_key, v_key = _WEIGHT_NORM_KEYS[weight_norm_keys]
    rules += [
        Rule(g_key, "pos_conv_embed/weight_g", CONV1D),
        Rule(v_key, "pos_conv_embed/weight_v", CONV1D),
        Rule("encoder.pos_conv_embed.conv.bias", "pos_conv_embed/bias"),
    ]
    rules += norm("encoder.layer_norm", "encoder_layer_norm")
    for i in range(config.num_layers):
        t, p = f"encoder.layers.{i}", f"layers_{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            rules += linear(f"{t}.attention.{proj}", f"{p}/attention/{proj}")
        rules += norm(f"{t}.layer_norm", f"{p}/layer_norm")
        rules += linear(f"{t}.feed_forward.intermediate_dense", f"{p}/intermediate_dense")
        rules += linear(f"{t}.feed_forward.output_dense", f"{p}/output_dense")
        rules += norm(f"{t}.final_layer_norm", f"{p}/final_layer_norm")
    return rules


def detect_config(sd: Mapping[str, np.ndarray], **overrides) -> HubertConfig:
    try:
        n_conv = count_indices(sd, r"feature_extractor\.conv_layers\.(\d+)\.")
        convs = [sd[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in range(n_conv)]
        layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in sd
        group_norm = not layer_norm and "feature_extractor.conv_layers.0.layer_norm.weight" in sd
        hidden = int(sd["feature_projection.projection.weight"].shape[0])
        v = sd.get(_WEIGHT_NORM_KEYS["legacy"][1], sd.get(_WEIGHT_NORM_KEYS["parametrizations"][1]))
        if v is None:
            raise KeyError("encoder.pos_conv_embed.conv.weight_v")
        config = dict(
            hidden_size=hidden,
            num_layers=count_indices(sd, r"encoder\.layers\.(\d+)\."),
            num_heads=hidden // 64,
            intermediate_size=int(
                sd["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0]
            ),
            conv_dim=tuple(int(w.shape[0]) for w in convs),
            conv_kernel=tuple(int(w.shape[2]) for w in convs),
            conv_stride=(5,) + (2,) * (n_conv - 1),
            conv_bias="feature_extractor.conv_layers.0.conv.bias" in sd,
            feat_extract_norm="layer" if layer_norm else ("group" if group_norm else "none"),
            feat_proj_layer_norm="feature_projection.layer_norm.weight" in sd,
            stable_layer_norm=layer_norm,
            pos_conv_kernel=int(v.shape[2]),
            pos_conv_groups=hidden // int(v.shape[1]),
            masked_spec_embed="masked_spec_embed" in sd,
        )
    except KeyError as e:
        raise ConversionError(f"not a HuBERT state_dict: no key {e}") from e
    config.update(overrides)
    return HubertConfig(**config)


def _strip_prefix(sd: Mapping[str, np.ndarray]) -> dict:
    if any(k.startswith("hubert.") for k in sd):
        return {k[len("hubert.") :]: v for k, v in sd.items() if k.startswith("hubert.")}
    return dict(sd)


def variables_from_state_dict(
    sd: Mapping[str, np.ndarray], config: HubertConfig, source: str = "state_dict"
) -> dict:
    model = HubertModel(config)
    reference = nn.meta.unbox(
        jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 400), np.float32)))
    )["params"]
    style = "legacy" if _WEIGHT_NORM_KEYS["legacy"][0] in sd else "parametrizations"
    return {"params": to_params(sd, rules_for(config, style), reference, source=source)}


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """Returns {'params', 'model_config'} with model_config the HubertConfig fields."""
    sd = _strip_prefix(torch_pickle.load_state_dict(path))
    config = detect_config(sd, **overrides)
    out = variables_from_state_dict(sd, config, source=str(path))
    out["model_config"] = dataclasses.asdict(config)
    return out


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    model_config: Mapping[str, Any] | HubertConfig | None = None,
    weight_norm_keys: str = "legacy",
) -> None:
    config = model_config if model_config is not None else variables.get("model_config")
    if config is None:
        raise ValueError("export_checkpoint needs model_config")
    if not isinstance(config, HubertConfig):
        config = HubertConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        )
    torch_pickle.save(to_state_dict(variables["params"], rules_for(config, weight_norm_keys)), path)
