"""Releases `hubert` and `wav2vec2_base`: Hugging Face PyTorch HubertModel / Wav2Vec2Model
state_dicts <-> jaxtalk HubertModel (the two share one network; see models/audio/hubert.py).

Reads a transformers folder (config.json + model.safetensors or pytorch_model.bin) or a
weights file (safetensors, or a torch.save zip archive) of any HuBERT large / base or
wav2vec2 layout, e.g. TencentGameMate/chinese-hubert-large (AniTalker's),
facebook/hubert-base-ls960 or facebook/wav2vec2-base-960h (AniPortrait's). Task models'
keys (HubertForCTC, Wav2Vec2ForCTC, Wav2Vec2ForPreTraining) are accepted: the encoder under
`hubert.` / `wav2vec2.` and a known head (`lm_head.*`, `quantizer.*`, `project_q.*`,
`project_hid.*`, ...), kept as read in "buffers"; any other key is an error. The positional
conv's weight norm is kept as its two tensors: the legacy `weight_g` / `weight_v` names and
the newer `parametrizations.weight.original0` / `original1` names both import; export
writes the names, prefix and head that were read (legacy names and none for weights that
were not imported), so a round trip gives the file back key for key.

What the keys cannot tell (the transformer's LayerNorm placement, attention heads, conv
strides) comes from config.json when there is one, else follows the HF configs: a
"layer"-norm conv encoder means the large, pre-LN (stable layer norm) model; heads =
hidden / 64; strides (5, 2, 2, 2, 2, 2, 2). Pass `stable_layer_norm=`, `num_heads=` or
`conv_stride=` to override.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np
from flax import linen as nn

from jaxtalk.convert.hf_files import (
    config_value,
    float_dtype,
    locate,
    read_config,
    read_state_dict,
    split_prefixed,
    strict_params,
    write_layout,
)
from jaxtalk.convert.mapping import (
    CONV1D,
    ConversionError,
    Rule,
    conv1d,
    count_indices,
    linear,
    norm,
    to_state_dict,
)
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.models.audio.hubert import HubertConfig, HubertModel
from jaxtalk.models.param_hook import eval_shape_init

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
    Release(
        "wav2vec2_base",
        {},
        (),
        "the folder of facebook/wav2vec2-base-960h (config.json + "
        "model.safetensors|pytorch_model.bin) or its weights file: AniPortrait's audio encoder",
    ),
]

RELEASE = "hubert"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
WEIGHTS_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")
# Task models wrap the encoder under these prefixes and add these heads (CTC, pretraining).
MODEL_PREFIXES = ("hubert.", "wav2vec2.")
HEAD_PREFIXES = (
    "lm_head.",
    "quantizer.",
    "project_q.",
    "project_hid.",
    "final_proj.",
    "label_embs",
)
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


def _split_model_keys(
    sd: Mapping[str, np.ndarray], source: str
) -> tuple[dict[str, np.ndarray], str, dict[str, np.ndarray]]:
    """(the encoder's keys without their prefix, that prefix, the known task heads' keys as
    read). A file of HubertForCTC / Wav2Vec2ForCTC / Wav2Vec2ForPreTraining prefixes the
    encoder (`hubert.` / `wav2vec2.`) and adds its head; any other key is an error."""
    prefix = next((p for p in MODEL_PREFIXES if any(k.startswith(p) for k in sd)), "")
    if not prefix:
        return dict(sd), "", {}
    model, heads = split_prefixed(sd, prefix, HEAD_PREFIXES, source)
    return model, prefix, heads


def _read_config(hf_config: Mapping | None, source: str) -> dict:
    """HubertConfig fields a transformers config.json gives that the keys do not."""
    if not hf_config:
        return {}
    out = {}
    heads = config_value(hf_config, "num_attention_heads", int, None, source)
    if heads is not None:
        out["num_heads"] = heads
    stable = config_value(hf_config, "do_stable_layer_norm", bool, None, source)
    if stable is not None:
        out["stable_layer_norm"] = stable
    strides = hf_config.get("conv_stride")
    if strides is not None:
        if not isinstance(strides, list) or not all(type(v) is int for v in strides):
            raise ConversionError(f"{source}: 'conv_stride' must be a list of integers")
        out["conv_stride"] = tuple(strides)
    return out


def variables_from_state_dict(
    sd: Mapping[str, np.ndarray], config: HubertConfig, source: str = "state_dict"
) -> dict:
    model = HubertModel(config)
    reference = nn.meta.unbox(
        eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 400), np.float32)))
    )["params"]
    rules = rules_for(config, weight_norm_style(sd))
    return {"params": strict_params(sd, rules, reference, source)}


def weight_norm_style(sd: Mapping[str, np.ndarray]) -> str:
    return "legacy" if _WEIGHT_NORM_KEYS["legacy"][0] in sd else "parametrizations"


def import_checkpoint(path: str | os.PathLike, **overrides) -> dict:
    """A transformers folder (config.json + model.safetensors | pytorch_model.bin) or a
    weights file -> {'params', 'model_config': the HubertConfig fields and the file's
    layout (key prefix, weight-norm key names, file name)}, and 'buffers': a task head's
    tensors (lm_head, quantizer, ...) as read, so that export writes the same file."""
    where = locate(path, ("",), WEIGHTS_NAMES)
    state, metadata = read_state_dict(where.weights)
    sd, prefix, heads = _split_model_keys(state, where.weights)
    hf_config = read_config(where.config) if where.config else None
    found = _read_config(hf_config, where.config or "")
    config = detect_config(sd, **{**found, **overrides})
    out = variables_from_state_dict(sd, config, source=where.weights)
    out["model_config"] = dict(
        dataclasses.asdict(config),
        key_prefix=prefix,
        weight_norm_keys=weight_norm_style(sd),
        weights_file=os.path.basename(where.weights),
        hf_config=hf_config,
        safetensors_metadata=metadata,
        float_dtype=float_dtype(state),
    )
    if heads:
        out["buffers"] = heads
    return out


def hubert_config(model_config: Mapping[str, Any] | HubertConfig) -> HubertConfig:
    """The HubertConfig of an import's model_config (its layout entries and JSON lists
    aside)."""
    if isinstance(model_config, HubertConfig):
        return model_config
    names = {f.name for f in dataclasses.fields(HubertConfig)}
    return HubertConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in model_config.items() if k in names}
    )


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    model_config: Mapping[str, Any] | HubertConfig | None = None,
    weight_norm_keys: str | None = None,
) -> None:
    """The transformers layout: keys prefixed and weight-norm keys named as imported (by
    default the legacy names, no prefix), a head kept on import written back; a path with a
    weights extension is a file (safetensors or torch archive), any other a folder with
    config.json (as read, when one was)."""
    config = model_config if model_config is not None else variables.get("model_config")
    if config is None:
        raise ValueError("export_checkpoint needs model_config")
    layout = {} if isinstance(config, HubertConfig) else dict(config)
    config = hubert_config(config)
    style = weight_norm_keys or layout.get("weight_norm_keys") or "legacy"
    prefix = layout.get("key_prefix") or ""
    state = {
        prefix + k: v
        for k, v in to_state_dict(variables["params"], rules_for(config, style)).items()
    }
    state.update({k: np.asarray(v) for k, v in (variables.get("buffers") or {}).items()})
    write_layout(state, path, layout, WEIGHTS_EXTENSIONS, WEIGHTS_NAMES[1])
