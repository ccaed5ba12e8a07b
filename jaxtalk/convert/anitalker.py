"""Release `anitalker_stage2`: AniTalker's stage-2 checkpoints <-> DiffusionPredictor variables.

The released files (`stage2_*.ckpt`) are the Lightning module's state_dict saved with
torch.save, which the official demo loads with a strict `load_state_dict`: a buffer `x_T`
(32, 3, 256, 256) that inference never reads, `model.*` (online weights) and `ema_model.*`
(EMA weights, the ones the demo samples with). Which of the five infer_types a file holds,
and every size, is read from its keys and shapes.

BatchNorm running stats go to `batch_stats`. Import keeps the rest of the file: the copy
not chosen as "params" ("online" or "ema") and `x_T` and the `num_batches_tracked`
counters ("buffers", as read), so export writes the imported file back bit for bit. A
file jaxtalk trained gets zero counters and a zero `x_T` of the released shape.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from jaxtalk.convert import torch_pickle
from jaxtalk.convert.mapping import (
    LINEAR,
    ConversionError,
    Rule,
    conv1d,
    count_indices,
    is_batch_counter,
    linear,
    norm,
    overlay,
    running_stats,
    to_params,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release
from jaxtalk.models.anitalker.stage2 import (
    ATTRIBUTES,
    INFER_TYPES,
    DiffusionPredictor,
    attributes_for,
    init_inputs,
)

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "anitalker_stage2",
        {},
        (),
        "X-LANCE/AniTalker ckpts/stage2_*.ckpt (one per infer_type; EMA weights used)",
    ),
]

RELEASE = "anitalker_stage2"
PREFIXES = {"ema": "ema_model.", "model": "model."}
# The copy kept beside "params" when a file holds both, by the copy "params" holds.
OTHER_COPY = {"ema": ("online", "model"), "model": ("ema", "ema")}
# (conf.sample_size, 3, conf.img_size, conf.img_size) of the release's ffhq256_autoenc conf.
X_T_SHAPE = (32, 3, 256, 256)


# ----------------------------------------------------------------------------- rules


def conformer_rules(torch_prefix: str, path: str, num_blocks: int) -> tuple[list, list]:
    """(param rules, batch_stats rules) of an ESPnet conformer Encoder."""
    params, stats = [], []
    for i in range(num_blocks):
        t, p = f"{torch_prefix}.encoders.{i}", f"{path}/encoders_{i}"
        params += [
            Rule(f"{t}.self_attn.pos_bias_u", f"{p}/self_attn/pos_bias_u"),
            Rule(f"{t}.self_attn.pos_bias_v", f"{p}/self_attn/pos_bias_v"),
        ]
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            params += linear(f"{t}.self_attn.{name}", f"{p}/self_attn/{name}")
        params += linear(f"{t}.self_attn.linear_pos", f"{p}/self_attn/linear_pos", bias=False)
        for ff in ("feed_forward", "feed_forward_macaron"):
            params += linear(f"{t}.{ff}.w_1", f"{p}/{ff}/w_1")
            params += linear(f"{t}.{ff}.w_2", f"{p}/{ff}/w_2")
        for conv in ("pointwise_conv1", "depthwise_conv", "pointwise_conv2"):
            params += conv1d(f"{t}.conv_module.{conv}", f"{p}/conv_module/{conv}")
        params += norm(f"{t}.conv_module.norm", f"{p}/conv_module/norm")
        stats += running_stats(f"{t}.conv_module.norm", f"{p}/conv_module/norm")
        for name in ("norm_ff", "norm_mha", "norm_ff_macaron", "norm_conv", "norm_final"):
            params += norm(f"{t}.{name}", f"{p}/{name}")
    return params, stats


def lstm_regressor_rules(torch_prefix: str, path: str, num_layers: int) -> list[Rule]:
    rules = []
    for k in range(num_layers):
        t, p = f"{torch_prefix}.lstm", f"{path}/lstm/layer_{k}"
        rules += [
            Rule(f"{t}.weight_ih_l{k}", f"{p}/input_kernel", LINEAR),
            Rule(f"{t}.weight_hh_l{k}", f"{p}/hidden_kernel", LINEAR),
            Rule(f"{t}.bias_ih_l{k}", f"{p}/input_bias"),
            Rule(f"{t}.bias_hh_l{k}", f"{p}/hidden_bias"),
        ]
    return rules + linear(f"{torch_prefix}.fc", f"{path}/fc")


def rules_for(config: Mapping[str, Any]) -> tuple[list[Rule], list[Rule]]:
    """(param rules, batch_stats rules) for one DiffusionPredictor configuration, with the
    release's key names (without the `model.` / `ema_model.` prefix)."""
    model = DiffusionPredictor(**config)
    params, stats = [], []
    if model.audio_kind == "hubert":
        params.append(Rule("weights", "layer_mix/weights"))
        params += conv1d("down_sample1", "down_sample1")
        p, s = conformer_rules("speech_encoder", "speech_encoder", model.speech_layers)
        params, stats = params + p, stats + s
    else:
        params += conv1d("down_sample1", "down_sample1") + conv1d("down_sample2", "down_sample2")
    p, s = conformer_rules("coarse_decoder", "coarse_decoder", model.decoder_layers)
    params, stats = params + p, stats + s
    for attr in model.attributes:
        prefix = ATTRIBUTES[attr][1]
        for role in ("predictor", "encoder"):
            params += lstm_regressor_rules(
                f"{prefix}_{role}", f"variance_adapter/{prefix}_{role}", model.lstm_layers
            )
    for name in ("init_code_proj", "noisy_encoder", "t_encoder"):
        params += linear(f"{name}.0", name)  # nn.Sequential(nn.Linear) in the release
    params += linear("encoder_direction_code", "encoder_direction_code")
    params += linear("out_proj", "out_proj")
    return params, stats


# ----------------------------------------------------------------------------- detection


def detect_config(state_dict: Mapping[str, np.ndarray]) -> dict:
    """DiffusionPredictor constructor options read from a (prefix-free) state_dict."""
    sd = state_dict
    try:
        hubert = "weights" in sd
        if "location_predictor.fc.weight" in sd:
            control = "full_control"
        elif "pose_predictor.fc.weight" in sd:
            control = "pose_only"
        else:
            control = "audio_only"
        infer_type = f"{'hubert' if hubert else 'mfcc'}_{control}"
        if infer_type not in INFER_TYPES:
            raise ConversionError(f"keys describe {infer_type}, which the release does not have")
        dec = "coarse_decoder.encoders.0."
        config = dict(
            infer_type=infer_type,
            motion_dim=int(sd["out_proj.weight"].shape[0]),
            motion_start_dim=int(sd["init_code_proj.0.weight"].shape[1]),
            fusion_dim=int(sd["noisy_encoder.0.weight"].shape[0]),
            decoder_layers=count_indices(sd, r"coarse_decoder\.encoders\.(\d+)\."),
            num_heads=int(sd[dec + "self_attn.pos_bias_u"].shape[0]),
            kernel_size=int(sd[dec + "conv_module.depthwise_conv.weight"].shape[-1]),
        )
        if hubert:
            config.update(
                hubert_layers=int(sd["weights"].shape[0]),
                hubert_dim=int(sd["down_sample1.weight"].shape[1]),
                speech_dim=int(sd["down_sample1.weight"].shape[0]),
                speech_layers=count_indices(sd, r"speech_encoder\.encoders\.(\d+)\."),
            )
        else:
            config.update(
                mfcc_dim=int(sd["down_sample1.weight"].shape[1]),
                mfcc_hidden=int(sd["down_sample1.weight"].shape[0]),
                speech_dim=int(sd["down_sample2.weight"].shape[0]),
            )
        if control != "audio_only":
            config.update(
                lstm_hidden=int(sd["pose_predictor.lstm.weight_hh_l0"].shape[1]),
                lstm_layers=count_indices(sd, r"pose_predictor\.lstm\.weight_ih_l(\d+)$"),
            )
    except KeyError as e:
        raise ConversionError(f"not an AniTalker stage-2 state_dict: no key {e}") from e
    return config


# ----------------------------------------------------------------------------- import / export


def _reference_variables(config: Mapping[str, Any]) -> dict:
    model = DiffusionPredictor(**config)
    return variable_shapes(model, *init_inputs(model))


def _is_batch_stat(key: str) -> bool:
    return key.endswith((".running_mean", ".running_var"))


def variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any], source: str = "state_dict"
) -> dict:
    """Prefix-free state_dict -> {'params', 'batch_stats'} (key-complete, shape-checked)."""
    reference = _reference_variables(config)
    param_rules, stat_rules = rules_for(config)
    params = to_params(
        state_dict,
        param_rules,
        reference["params"],
        source=source,
        ignore=lambda k: _is_batch_stat(k) or is_batch_counter(k),
    )
    stats = to_params(
        state_dict,
        stat_rules,
        reference["batch_stats"],
        source=source,
        ignore=lambda k: not _is_batch_stat(k),
    )
    return {"params": params, "batch_stats": stats}


def state_dict_from_variables(variables: Mapping, config: Mapping[str, Any]) -> dict:
    """{'params', 'batch_stats'} -> prefix-free released state_dict (exact inverse)."""
    param_rules, stat_rules = rules_for(config)
    sd = to_state_dict(variables["params"], param_rules)
    sd.update(to_state_dict(variables["batch_stats"], stat_rules))
    for key in [k for k in sd if k.endswith(".running_var")]:
        sd[key[: -len("running_var")] + "num_batches_tracked"] = np.asarray(0, np.int64)
    return sd


def import_checkpoint(
    path: str | os.PathLike, weights: str = "ema", infer_type: str | None = None
) -> dict:
    """Reads a released stage-2 checkpoint.

    weights: "ema" (default, the weights the release samples with) or "model" (online).
    infer_type: checked against the one the keys describe when given.
    Returns {'params', 'batch_stats', 'model_config', 'buffers'} and, when the file holds
    both copies, the other one as 'online' (or 'ema'); 'model_config' holds the
    DiffusionPredictor constructor options.
    """
    if weights not in PREFIXES:
        raise ValueError(f"weights must be one of {sorted(PREFIXES)}, got {weights!r}")
    obj = torch_pickle.load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # a Lightning .ckpt rather than the bare state_dict
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state_dict, found {type(obj).__name__}")
    full = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    source = str(path)
    unexpected = [k for k in full if k != "x_T" and not k.startswith(tuple(PREFIXES.values()))]
    if unexpected:
        raise ConversionError(
            f"{source}: unexpected keys {unexpected[:10]} (expected model.*, ema_model.* and x_T)"
        )
    copies = {
        name: {k[len(p) :]: v for k, v in full.items() if k.startswith(p)}
        for name, p in PREFIXES.items()
    }
    if not copies[weights]:
        raise ConversionError(f"{source}: no {PREFIXES[weights]}* keys")
    if copies["model"] and copies["ema"] and set(copies["model"]) != set(copies["ema"]):
        diff = sorted(set(copies["model"]) ^ set(copies["ema"]))[:10]
        raise ConversionError(f"{source}: model.* and ema_model.* differ in keys: {diff}")
    state_dict = copies[weights]
    config = detect_config(state_dict)
    if infer_type is not None and infer_type != config["infer_type"]:
        raise ConversionError(f"{source}: holds {config['infer_type']}, not {infer_type}")
    variables = variables_from_state_dict(state_dict, config, source=f"{source} ({weights})")
    variables["model_config"] = config
    other, other_weights = OTHER_COPY[weights]
    if copies[other_weights]:
        variables[other] = variables_from_state_dict(
            copies[other_weights], config, source=f"{source} ({other_weights})"
        )
    variables["buffers"] = {k: v for k, v in full.items() if k == "x_T" or is_batch_counter(k)}
    return variables


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    model_config: Mapping[str, Any] | None = None,
    ema_variables: Mapping | None = None,
) -> None:
    """Writes the released layout, in the Lightning module's order: `x_T`, `model.*` from
    `variables['online']` (else `variables`), `ema_model.*` from `ema_variables`
    (else `variables['ema']`, else `variables`); the buffers `variables` kept from an
    import are written as read, missing ones as zeros of the released shapes."""
    config = dict(model_config or variables.get("model_config") or {})
    if "infer_type" not in config:
        raise ValueError("export_checkpoint needs model_config (DiffusionPredictor options)")
    attributes_for(config["infer_type"])
    copies = {
        "model": variables.get("online") or variables,
        "ema_model": ema_variables or variables.get("ema") or variables,
    }
    out = {"x_T": np.zeros(X_T_SHAPE, np.float32)}
    for name, copy in copies.items():
        sd = state_dict_from_variables(copy, config)
        out.update({f"{name}.{k}": v for k, v in sd.items()})
    torch_pickle.save(overlay(out, variables.get("buffers") or {}), path)
