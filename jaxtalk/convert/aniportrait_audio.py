"""Releases `aniportrait_audio2mesh` and `aniportrait_audio2pose`: AniPortrait's
audio2mesh.pt / audio2pose.pt (the whole `Audio2MeshModel` / `Audio2PoseModel` state_dicts,
torch.save'd) <-> jaxtalk Audio2Mesh / Audio2Pose variables.

Both files hold their wav2vec2-base encoder under `audio_encoder.` (the HF Wav2Vec2Model
keys, mapped by jaxtalk/convert/hubert.py's rules; legacy `weight_g`/`weight_v` and the
newer parametrization names of the positional conv's weight norm both import). Audio2Pose
adds the packed attention projections of its torch.nn.TransformerDecoder, the identity
embedding and the `PPE.pe` position table: a buffer, checked against the table the model
computes and kept as read in "buffers", so export writes the file back bit for bit (a
trained model gets the computed table). Sizes are read from the shapes; what shapes cannot
tell (attention heads: 8 in the release, and wav2vec2's strides) follows the release.
Every key must be used and every parameter found, else one line names the file and keys.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import numpy as np
from flax import linen as nn

from jaxtalk.convert import hubert
from jaxtalk.convert.hf_files import float_dtype, read_state_dict, strict_params, write_layout
from jaxtalk.convert.mapping import (
    LINEAR,
    ConversionError,
    Rule,
    count_indices,
    linear,
    norm,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.models.aniportrait.audio2mesh import Audio2Mesh
from jaxtalk.models.aniportrait.audio2pose import POSITION_BUFFER, Audio2Pose, sinusoid_table

_HF = "https://huggingface.co/ZJYang/AniPortrait/resolve/main/"
RELEASES = [
    Release(
        f"aniportrait_audio2{kind}",
        {"kind": kind},
        (),
        f"ZJYang/AniPortrait audio2{kind}.pt (Zejun-Yang/AniPortrait, pretrained_model/)",
        # No published checksum found: the download reports the digest it got.
        files=(ReleaseFile("checkpoint", f"{_HF}audio2{kind}.pt", None, None),),
    )
    for kind in ("mesh", "pose")
]

KINDS = {"mesh": Audio2Mesh, "pose": Audio2Pose}
ENCODER = "audio_encoder."
POSITION_TABLE = POSITION_BUFFER
WEIGHTS_EXTENSIONS = (".pt", ".pth", ".bin", ".safetensors")


# ----------------------------------------------------------------------------- rules
def attention_rules(t: str, p: str) -> list[Rule]:
    """torch.nn.MultiheadAttention: packed in_proj (3d, d) -> kernel (d, 3d), out_proj."""
    return [
        Rule(f"{t}.in_proj_weight", f"{p}/in_proj_kernel", LINEAR),
        Rule(f"{t}.in_proj_bias", f"{p}/in_proj_bias"),
    ] + linear(f"{t}.out_proj", f"{p}/out_proj")


def decoder_layer_rules(t: str, p: str) -> list[Rule]:
    rules = attention_rules(f"{t}.self_attn", f"{p}/self_attn")
    rules += attention_rules(f"{t}.multihead_attn", f"{p}/multihead_attn")
    rules += linear(f"{t}.linear1", f"{p}/linear1") + linear(f"{t}.linear2", f"{p}/linear2")
    for i in (1, 2, 3):
        rules += norm(f"{t}.norm{i}", f"{p}/norm{i}")
    return rules


_ATTENTION_ORDER = {"k_proj": 0, "v_proj": 1, "q_proj": 2, "out_proj": 3}


def _wav2vec2_rank(key: str) -> tuple:
    """Where a Wav2Vec2Model key sits in its state_dict (module registration order)."""
    parts = key.split(".")
    if key == "masked_spec_embed":
        return (0,)
    if parts[0] in ("feature_extractor", "feature_projection"):
        return (1 if parts[0] == "feature_extractor" else 2,)
    if parts[1] == "pos_conv_embed":
        return (3, 0 if parts[-1] == "bias" else 1)
    if parts[1] == "layers":
        return (
            5,
            int(parts[2]),
            _ATTENTION_ORDER.get(parts[4], 4) if parts[3] == "attention" else 4,
        )
    return (4,)  # encoder.layer_norm


def encoder_rules(audio, weight_norm_keys: str) -> list[Rule]:
    """wav2vec2's rules (jaxtalk/convert/hubert.py) under `audio_encoder`, in its
    state_dict's order."""
    rules = sorted(
        hubert.rules_for(audio, weight_norm_keys), key=lambda r: _wav2vec2_rank(r.torch_key)
    )
    return [Rule(ENCODER + r.torch_key, "audio_encoder/" + r.param_path, r.layout) for r in rules]


def rules_for(kind: str, options: Mapping[str, Any], weight_norm_keys: str) -> list[Rule]:
    """The release's key order: encoder, then the model's own layers as constructed."""
    rules = encoder_rules(hubert.hubert_config(options["audio"]), weight_norm_keys)
    if kind == "mesh":
        return rules + linear("in_fn", "in_fn") + linear("out_fn", "out_fn")
    rules += linear("pose_map", "pose_map") + linear("in_fn", "in_fn")
    for i in range(options["num_layers"]):
        rules += decoder_layer_rules(f"transformer_decoder.layers.{i}", f"layers_{i}")
    rules += linear("pose_map_r", "pose_map_r")
    return rules + [Rule("id_embed.weight", "id_embed/embedding")]


# ----------------------------------------------------------------------------- detection
def detect_kind(sd: Mapping[str, np.ndarray], source: str) -> str:
    if "out_fn.weight" in sd:
        return "mesh"
    if "pose_map_r.weight" in sd:
        return "pose"
    raise ConversionError(
        f"{source}: neither an Audio2Mesh (out_fn.weight) nor an Audio2Pose "
        "(pose_map_r.weight) state_dict"
    )


def detect_options(kind: str, sd: Mapping[str, np.ndarray], source: str, **overrides) -> dict:
    """The model's constructor options read from the keys' shapes (JSON-able); an `audio`
    override holds HubertConfig fields (e.g. {"num_heads": 2}) for the encoder."""
    encoder = {k[len(ENCODER) :]: v for k, v in sd.items() if k.startswith(ENCODER)}
    if not encoder:
        raise ConversionError(f"{source}: no {ENCODER}* keys (the wav2vec2 encoder)")
    try:
        options = {
            "audio": dataclasses.asdict(
                hubert.detect_config(encoder, **dict(overrides.pop("audio", None) or {}))
            ),
            "latent_dim": int(sd["in_fn.weight"].shape[0]),
        }
        if kind == "mesh":
            options["out_dim"] = int(sd["out_fn.weight"].shape[0])
        else:
            layer = "transformer_decoder.layers.0."
            options.update(
                out_dim=int(sd["pose_map_r.weight"].shape[0]),
                num_layers=count_indices(sd, r"transformer_decoder\.layers\.(\d+)\."),
                ffn_dim=int(sd[layer + "linear1.weight"].shape[0]),
                num_ids=int(sd["id_embed.weight"].shape[0]),
                max_len=int(np.shape(sd[POSITION_TABLE])[1]),
            )
    except (KeyError, IndexError) as e:
        raise ConversionError(f"{source}: not an AniPortrait audio2{kind} state_dict: no {e}")
    options.update(overrides)
    return options


def model_from_options(kind: str, options: Mapping[str, Any], **kw) -> nn.Module:
    """The Flax model for `kind` ("mesh" / "pose") and its options (as `detect_options`
    gives them, or a weights file's model_config)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    fields = {f.name for f in dataclasses.fields(KINDS[kind])} - {"parent", "name"}
    args = {k: v for k, v in options.items() if k in fields}
    args["audio"] = hubert.hubert_config(options["audio"])
    return KINDS[kind](**args, **kw)


def init_inputs(kind: str, frames: int = 4):
    """Example inputs for `init`: half a second of audio and `frames` frames."""
    wav = np.zeros((1, 8000), np.float32)
    if kind == "mesh":
        return (wav, frames)
    return (wav, np.zeros((1, frames, 6), np.float32), np.zeros((1,), np.int32))


def reference_params(model: nn.Module, kind: str) -> dict:
    inputs = init_inputs(kind)
    if kind == "pose":  # the pose width comes from the model, not the example
        inputs = (inputs[0], np.zeros((1, 4, model.out_dim), np.float32), inputs[2])
    return variable_shapes(model, *inputs)["params"]


# ----------------------------------------------------------------------------- import / export
def _check_position_table(table: np.ndarray, options: Mapping[str, Any], source: str) -> None:
    want = sinusoid_table(options["max_len"], options["latent_dim"])
    if np.shape(table) != (1,) + want.shape:
        raise ConversionError(
            f"{source}: {POSITION_TABLE} has shape {np.shape(table)}, expected {(1,) + want.shape}"
        )
    # torch's float32 exp / sin differ from numpy's in the last bits; a half-precision file
    # rounds the table further.
    kind = np.asarray(table).dtype
    atol = 1e-4 + (float(np.finfo(kind).eps) if kind.kind == "f" else 0.0)
    if not np.allclose(np.asarray(table, np.float32)[0], want, atol=atol):
        raise ConversionError(
            f"{source}: {POSITION_TABLE} is not the sinusoidal table the model computes"
        )


def variables_from_state_dict(
    sd: Mapping[str, np.ndarray], kind: str | None = None, source: str = "state_dict", **overrides
) -> dict:
    """{'params', 'model_config', 'buffers' (pose: PPE.pe as read)} from a state_dict."""
    found = detect_kind(sd, source)
    if kind is not None and kind != found:
        raise ConversionError(f"{source}: holds an audio2{found} model, not audio2{kind}")
    options = detect_options(found, sd, source, **overrides)
    style = hubert.weight_norm_style({k[len(ENCODER) :]: v for k, v in sd.items()})
    model = model_from_options(found, options)
    buffers = {}
    if found == "pose":
        _check_position_table(sd[POSITION_TABLE], options, source)
        buffers[POSITION_TABLE] = np.asarray(sd[POSITION_TABLE])
    params = strict_params(
        sd,
        rules_for(found, options, style),
        reference_params(model, found),
        source,
        ignore=lambda k: k in buffers,
    )
    config = dict(options, kind=f"aniportrait_audio2{found}", weight_norm_keys=style)
    return {"params": params, "model_config": config, "buffers": buffers}


def import_checkpoint(path: str | os.PathLike, kind: str | None = None, **overrides) -> dict:
    """audio2mesh.pt / audio2pose.pt (or a safetensors file of the same keys) ->
    {'params', 'model_config', 'buffers'}; `kind` ("mesh" / "pose") is checked against the
    keys when given; overrides (e.g. num_heads=) set what the keys cannot tell."""
    path = os.fspath(path)
    state, _ = read_state_dict(path)
    out = variables_from_state_dict(state, kind, source=path, **overrides)
    out["model_config"].update(weights_file=os.path.basename(path), float_dtype=float_dtype(state))
    return out


def state_dict_from_variables(variables: Mapping, model_config: Mapping[str, Any]) -> dict:
    """The release's state_dict (float32) of {'params', 'buffers'}."""
    kind = kind_of(model_config)
    style = model_config.get("weight_norm_keys") or "legacy"
    state = to_state_dict(variables["params"], rules_for(kind, model_config, style))
    if kind == "pose":
        buffers = variables.get("buffers") or {}
        table = buffers.get(POSITION_TABLE)
        if table is None:
            table = sinusoid_table(model_config["max_len"], model_config["latent_dim"])[None]
        state = _insert_after(state, "in_fn.bias", POSITION_TABLE, np.asarray(table))
    return state


def _insert_after(state: dict, after: str, key: str, value) -> dict:
    """`state` with key: value placed after `after` (the torch module's registration order)."""
    out = {}
    for k, v in state.items():
        out[k] = v
        if k == after:
            out[key] = value
    return out


def kind_of(model_config: Mapping[str, Any]) -> str:
    kind = str(model_config.get("kind", "")).removeprefix("aniportrait_audio2")
    if kind not in KINDS:
        raise ValueError(
            f"model_config kind {model_config.get('kind')!r} is not an AniPortrait audio model"
        )
    return kind


def export_checkpoint(
    variables: Mapping, path: str | os.PathLike, model_config: Mapping[str, Any] | None = None
) -> None:
    """Writes audio2mesh.pt / audio2pose.pt (a torch archive, or safetensors for a
    .safetensors path), in the dtype that was imported."""
    config = dict(model_config or variables.get("model_config") or {})
    if not config:
        raise ValueError("export_checkpoint needs model_config")
    path = os.fspath(path)
    if not path.endswith(WEIGHTS_EXTENSIONS):
        raise ValueError(
            f"{path}: export writes one weights file ({', '.join(WEIGHTS_EXTENSIONS)})"
        )
    state = state_dict_from_variables(variables, config)
    write_layout(state, path, {"float_dtype": config.get("float_dtype")}, WEIGHTS_EXTENSIONS, "")
