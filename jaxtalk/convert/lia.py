"""Released LIA / AniTalker stage-1 checkpoints <-> jaxtalk params.

Releases (`kind`):
- `lia`: wyhsirius/LIA, a `torch.save` dict whose 'gen' entry is the Generator state_dict
  (the trainer also stored 'dis', 'g_optim', 'd_optim', 'args'; only 'gen' is read unless
  `discriminator=True`, which maps 'dis' to `jaxtalk.models.lia.discriminator`).
- `anitalker_stage1`: X-LANCE/AniTalker's stage-1 checkpoint: a flat dict (the Lightning
  module's state_dict, which the official `load_lightning_model` iterates; a Lightning
  file's 'state_dict' also imports) whose keys carry the prefix `lia.`; its LIA_Model adds
  `enc.net_app.fc{1,2,3}`, `enc.net_app.ws.weights` and `enc.net_decouping.*`.

Every parameter key is mapped (including the unused `dec.to_rgb1`); the blur-kernel
buffers (`*.kernel`) carry no information and are checked against the values the release
computes. Import keeps them as read (and the training-only keys `ignore_extra` skips) in
"buffers", so export reproduces the imported state_dict bit for bit, key for key, in the
release's order; weights without kept buffers get the computed kernels. Equalized-lr scales stay runtime scales (jaxtalk
keeps the raw weights) and the direction matrix is stored raw (QR is taken at run time
as in the release), so every layout change is a pure transpose/reshape and round trips
are bit-exact.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping

import numpy as np

from jaxtalk.convert import release_file, torch_pickle
from jaxtalk.convert.mapping import (
    CONV2D,
    ConversionError,
    Layout,
    Rule,
    linear,
    overlay,
    reshape,
    to_params,
    to_state_dict,
    variable_shapes,
)
from jaxtalk.convert.releases import Release, ReleaseFile
from jaxtalk.models.layers.upfirdn import make_kernel
from jaxtalk.models.lia.generator import CHANNELS

# The public files this converter imports (`jaxtalk import --release=NAME`).
RELEASES = [
    Release(
        "lia",
        {"kind": "lia"},
        (),
        "wyhsirius/LIA released checkpoints (vox.pt, taichi.pt, ted.pt): torch dict with 'gen'",
    ),
    Release(
        "anitalker_stage1",
        {"kind": "anitalker_stage1"},
        (),
        "X-LANCE/AniTalker ckpts/stage1.ckpt (Lightning; keys prefixed 'lia.')",
        # No published checksum found for it: the download reports the digest it got.
        files=(
            ReleaseFile(
                "checkpoint",
                "https://huggingface.co/taocode/anitalker_ckpts/resolve/main/stage1.ckpt",
                None,
                None,
            ),
        ),
    ),
]

KINDS = ("lia", "anitalker_stage1")
BLUR = (1, 3, 3, 1)

# Modulated conv weight (1, O, I, k, k) <-> HWIO; ConstantInput (1, C, s, s) <-> (1, s, s, C).
MODCONV = Layout(
    "modconv", lambda w: w[0].transpose(2, 3, 1, 0), lambda w: w.transpose(3, 2, 0, 1)[None]
)
CONST = Layout("const_nchw", lambda w: w.transpose(0, 2, 3, 1), lambda w: w.transpose(0, 3, 1, 2))


def _bias(c: int) -> Layout:
    return reshape((c,), (1, c, 1, 1))


def default_config(**overrides) -> dict:
    cfg = dict(size=256, style_dim=512, motion_dim=20, width=1.0)
    cfg.update(overrides)
    return cfg


def _channels(width: float) -> dict[int, int]:
    return {r: max(1, int(round(c * width))) for r, c in CHANNELS.items()}


def key_spec(
    kind: str = "lia",
    size: int = 256,
    style_dim: int = 512,
    motion_dim: int = 20,
    width: float = 1.0,
) -> list[Rule | tuple[str, np.ndarray]]:
    """The release's state_dict in order: `Rule`s for parameters and (key, value) pairs
    for the blur-kernel buffers. Keys are without the `lia.` prefix."""
    if kind not in KINDS:
        raise ValueError(f"unknown LIA checkpoint kind {kind!r}; known: {KINDS}")
    ch = _channels(width)
    log = int(math.log2(size))
    down = make_kernel(BLUR)
    up = make_kernel(BLUR) * 4
    spec: list[Any] = []

    def conv_layer(tk, fp, cout, downsample, activate=True, bias=True):
        i = 0
        if downsample:
            spec.append((f"{tk}.{i}.kernel", down))
            i += 1
        spec.append(Rule(f"{tk}.{i}.weight", f"{fp}/conv/kernel", CONV2D))
        if not (bias and activate):
            if bias:
                spec.append(Rule(f"{tk}.{i}.bias", f"{fp}/conv/bias"))
            return
        spec.append(Rule(f"{tk}.{i + 1}.bias", f"{fp}/act/bias", _bias(cout)))

    def equal_linear(tk, fp):
        spec.extend(linear(tk, fp))

    # ---- encoder: appearance network
    app = "enc/net_app"
    conv_layer("enc.net_app.convs.0", f"{app}/convs_0", ch[size], False)
    stage_ch = [ch[size]]
    cin = ch[size]
    for n, i in enumerate(range(log, 2, -1), start=1):
        cout = ch[2 ** (i - 1)]
        conv_layer(f"enc.net_app.convs.{n}.conv1", f"{app}/convs_{n}/conv1", cin, False)
        conv_layer(f"enc.net_app.convs.{n}.conv2", f"{app}/convs_{n}/conv2", cout, True)
        conv_layer(
            f"enc.net_app.convs.{n}.skip",
            f"{app}/convs_{n}/skip",
            cout,
            True,
            activate=False,
            bias=False,
        )
        stage_ch.append(cout)
        cin = cout
    spec.append(
        Rule(f"enc.net_app.convs.{log - 1}.weight", f"{app}/convs_{log - 1}/kernel", CONV2D)
    )
    stage_ch.append(style_dim)
    if kind == "anitalker_stage1":
        n_fc = 0
        for c in stage_ch:
            if c != style_dim:
                n_fc += 1
                equal_linear(f"enc.net_app.fc{n_fc}", f"enc/hal/fc{n_fc}")
        spec.append(Rule("enc.net_app.ws.weights", "enc/hal/ws"))
        for net in ("identity_net", "identity_net_density", "identity_excluded_net"):
            for t, f in (("0", "fc_in"), ("2", "fc_out")):
                equal_linear(f"enc.net_decouping.{net}.{t}", f"enc/net_decouping/{net}/{f}")
    for j in range(5):
        equal_linear(f"enc.fc.{j}", f"enc/fc_{j}")

    # ---- decoder
    spec.append(Rule("dec.direction.weight", "dec/direction/weight"))
    spec.append(Rule("dec.input.input", "dec/input/input", CONST))

    def styled_conv(tk, fp, cout, upsample):
        spec.append(Rule(f"{tk}.conv.weight", f"{fp}/conv/kernel", MODCONV))
        if upsample:
            spec.append((f"{tk}.conv.blur.kernel", up))
        equal_linear(f"{tk}.conv.modulation", f"{fp}/conv/modulation")
        spec.append(Rule(f"{tk}.noise.weight", f"{fp}/noise/weight"))
        spec.append(Rule(f"{tk}.activate.bias", f"{fp}/activate/bias", _bias(cout)))

    def to_rgb(tk, fp, upsample):
        spec.append(Rule(f"{tk}.bias", f"{fp}/bias", _bias(3)))
        if upsample:
            spec.append((f"{tk}.upsample.kernel", up))
        spec.append(Rule(f"{tk}.conv.0.weight", f"{fp}/conv/conv/kernel", CONV2D))
        spec.append(Rule(f"{tk}.conv.1.bias", f"{fp}/conv/act/bias", _bias(3)))

    styled_conv("dec.conv1", "dec/conv1", ch[4], False)
    to_rgb("dec.to_rgb1", "dec/to_rgb1", False)
    for j, i in enumerate(range(3, log + 1)):
        c = ch[2**i]
        styled_conv(f"dec.convs.{2 * j}", f"dec/convs_{2 * j}", c, True)
        styled_conv(f"dec.convs.{2 * j + 1}", f"dec/convs_{2 * j + 1}", c, False)
    for j in range(log - 2):
        to_rgb(f"dec.to_rgbs.{j}", f"dec/to_rgbs_{j}", True)
    for j in range(log - 2):
        tk, fp = f"dec.to_flows.{j}", f"dec/to_flows_{j}"
        spec.append(Rule(f"{tk}.bias", f"{fp}/bias", _bias(3)))
        spec.append((f"{tk}.upsample.kernel", up))
        spec.append(Rule(f"{tk}.conv.weight", f"{fp}/conv/kernel", MODCONV))
        equal_linear(f"{tk}.conv.modulation", f"{fp}/conv/modulation")
    return spec


def rules(kind: str = "lia", **config) -> list[Rule]:
    return [r for r in key_spec(kind, **default_config(**config)) if isinstance(r, Rule)]


def buffers(kind: str = "lia", **config) -> dict[str, np.ndarray]:
    return {
        k: v
        for k, v in (
            r for r in key_spec(kind, **default_config(**config)) if not isinstance(r, Rule)
        )
    }


def build_model(kind: str = "lia", **config):
    """The Flax module for a kind and config (LIAGenerator or AniTalkerMotion)."""
    from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
    from jaxtalk.models.lia.generator import LIAGenerator

    cls = LIAGenerator if kind == "lia" else AniTalkerMotion
    return cls(**default_config(**config))


def reference_params(kind: str = "lia", **config):
    """The params tree's shapes (jax.eval_shape, no compute)."""
    import jax
    import jax.numpy as jnp

    cfg = default_config(**config)
    model = build_model(kind, **cfg)
    x = jax.ShapeDtypeStruct((1, cfg["size"], cfg["size"], 3), jnp.float32)
    return variable_shapes(model, x, x)["params"]


def infer_config(state_dict: Mapping[str, np.ndarray]) -> dict:
    """size, style_dim, motion_dim and width read from a (prefix-free) state_dict."""
    try:
        n_convs = len({k.split(".")[3] for k in state_dict if k.startswith("enc.net_app.convs.")})
        size = 2**n_convs
        style_dim, motion_dim = state_dict["dec.direction.weight"].shape
        width = state_dict["enc.net_app.convs.0.0.weight"].shape[0] / CHANNELS[size]
    except (KeyError, ValueError) as e:
        raise ConversionError(f"not a LIA generator state_dict ({e!r})") from e
    return dict(
        size=int(size), style_dim=int(style_dim), motion_dim=int(motion_dim), width=float(width)
    )


def detect_kind(obj: Any) -> str:
    if isinstance(obj, Mapping) and "gen" in obj:
        return "lia"
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if isinstance(sd, Mapping) and any(str(k).startswith("lia.") for k in sd):
        return "anitalker_stage1"
    raise ConversionError(
        "neither a LIA checkpoint (dict with 'gen') nor an AniTalker stage-1 "
        "checkpoint (keys prefixed 'lia.')"
    )


def state_dict_to_params(
    state_dict: Mapping[str, np.ndarray], kind: str = "lia", source: str = "state_dict", **config
) -> dict:
    """A prefix-free generator state_dict -> params (every key checked)."""
    cfg = default_config(**(config or infer_config(state_dict)))
    bufs = buffers(kind, **cfg)
    problems = []
    for key, value in bufs.items():
        if key not in state_dict:
            problems.append(f"missing buffer {key!r}")
        elif np.shape(state_dict[key]) != value.shape or not np.allclose(
            np.asarray(state_dict[key], np.float32), value, atol=1e-6
        ):
            problems.append(f"buffer {key!r} differs from the release's blur kernel")
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))
    return to_params(
        state_dict,
        rules(kind, **cfg),
        reference_params(kind, **cfg),
        source=source,
        ignore=lambda k: k in bufs,
    )


def params_to_state_dict(params: Mapping, kind: str = "lia", **config) -> dict[str, np.ndarray]:
    """params -> the released generator state_dict (prefix-free), in the release's order."""
    cfg = default_config(**config)
    spec = key_spec(kind, **cfg)
    converted = to_state_dict(params, [r for r in spec if isinstance(r, Rule)])
    out = {}
    for r in spec:
        if isinstance(r, Rule):
            out[r.torch_key] = converted[r.torch_key].astype(np.float32)
        else:
            out[r[0]] = np.asarray(r[1], np.float32)
    return out


def import_checkpoint(
    path: str | os.PathLike,
    kind: str = "auto",
    discriminator: bool = False,
    ignore_extra: bool = False,
) -> dict:
    """Reads a released checkpoint -> {'params', 'model_config', 'buffers', 'layout',
    'rest' (+ 'discriminator_params')}.

    `kind`: 'auto' | 'lia' | 'anitalker_stage1'. For AniTalker, keys without the `lia.`
    prefix (training-only modules) are an error unless `ignore_extra`, which keeps them
    in 'buffers' for export. 'buffers' holds the tensors no parameter holds, by their key
    in the file's generator state_dict ('gen' for lia, the flat file or a Lightning
    file's 'state_dict' for stage 1); 'layout' and 'rest' the rest of the file
    (`release_file.keep`).
    """
    path = os.fspath(path)
    obj = torch_pickle.load(path)
    kind = detect_kind(obj) if kind == "auto" else kind
    out: dict[str, Any] = {}
    if kind == "lia":
        if not isinstance(obj, Mapping) or not isinstance(obj.get("gen"), Mapping):
            raise ConversionError(f"{path}: no 'gen' entry (not a LIA checkpoint)")
        container = obj["gen"]
        sd = dict(container)
    elif kind == "anitalker_stage1":
        container = obj.get("state_dict", obj) if isinstance(obj, Mapping) else {}
        if not isinstance(container, Mapping):
            raise ConversionError(f"{path}: 'state_dict' is not a mapping")
        full = {k: v for k, v in container.items() if isinstance(v, np.ndarray)}
        extra = sorted(k for k in full if not k.startswith("lia."))
        if extra and not ignore_extra:
            raise ConversionError(
                f"{path}: {len(extra)} key(s) outside the 'lia.' generator, "
                f"e.g. {extra[:5]}; pass ignore_extra=True to skip them"
            )
        sd = {k[len("lia.") :]: v for k, v in full.items() if k.startswith("lia.")}
        out["buffers"] = {k: full[k] for k in extra}
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    cfg = infer_config(sd)
    out["params"] = state_dict_to_params(sd, kind, source=path, **cfg)
    out["model_config"] = dict(cfg, kind=kind)
    prefix = "lia." if kind == "anitalker_stage1" else ""
    kept = {prefix + k: np.asarray(sd[k]) for k in buffers(kind, **cfg)}
    out["buffers"] = {**kept, **out.get("buffers", {})}
    # the rest of the file (LIA's 'dis', optimizer states and 'args'; a Lightning file's
    # counters and states; non-tensor entries) and its order, for export
    generated = set(out["buffers"]) | {prefix + r.torch_key for r in rules(kind, **cfg)}
    out["layout"], out["rest"] = release_file.keep(obj, container, generated.__contains__, path)
    if discriminator:
        if kind != "lia" or "dis" not in obj:
            raise ConversionError(f"{path}: no 'dis' entry to import")
        out["discriminator_params"] = discriminator_to_params(
            dict(obj["dis"]), size=cfg["size"], width=cfg["width"], source=path
        )
    return out


def export_checkpoint(
    variables: Mapping,
    path: str | os.PathLike,
    kind: str = "lia",
    model_config: Mapping | None = None,
    discriminator_params: Mapping | None = None,
) -> None:
    """Writes the released layout: {'gen': state_dict[, 'dis': ...]} for 'lia', the flat
    {'lia.' + key: ...} that the official loader reads for 'anitalker_stage1'; the
    'buffers' an import kept are written as read, and the rest of the imported file
    ('layout' and 'rest': LIA's discriminator, optimizer states and arguments, a Lightning
    file's other entries) around the generator as it was; `discriminator_params` replace
    a kept 'dis'."""
    params = variables.get("params", variables)
    cfg = {
        k: v
        for k, v in dict(model_config or {}).items()
        if k in ("size", "style_dim", "motion_dim", "width")
    }
    sd = params_to_state_dict(params, kind, **cfg)
    kept = variables.get("buffers") or {}
    if kind == "lia":
        sd = overlay(sd, kept)
        obj: dict[str, Any] = {"gen": sd}
        if discriminator_params is not None:
            full = default_config(**cfg)
            obj["dis"] = discriminator_to_state_dict(
                discriminator_params, size=full["size"], width=full["width"]
            )
    elif kind == "anitalker_stage1":
        sd = overlay({"lia." + k: v for k, v in sd.items()}, kept)
        obj = sd
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    if variables.get("layout") is not None:
        whole = release_file.rebuild(
            variables["layout"], variables.get("rest") or {}, sd, source=f"{kind} weights"
        )
        if "dis" in obj:
            if not isinstance(whole, Mapping):
                raise ConversionError(f"{kind} weights: the kept release file is not a dict")
            whole["dis"] = obj["dis"]
        obj = whole
    torch_pickle.save(obj, path)


# ----------------------------------------------------------------------------- discriminator


def discriminator_key_spec(
    size: int = 256, width: float = 1.0
) -> list[Rule | tuple[str, np.ndarray]]:
    """The release's StyleGAN2 Discriminator state_dict ('dis') in order."""
    ch = _channels(width)
    log = int(math.log2(size))
    down = make_kernel(BLUR)
    spec: list[Any] = [
        Rule("convs.0.0.weight", "convs_0/conv/kernel", CONV2D),
        Rule("convs.0.1.bias", "convs_0/act/bias", _bias(ch[size])),
    ]
    for n, i in enumerate(range(log, 2, -1), start=1):
        cin, cout = ch[2**i], ch[2 ** (i - 1)]
        spec += [
            Rule(f"convs.{n}.conv1.0.weight", f"convs_{n}/conv1/conv/kernel", CONV2D),
            Rule(f"convs.{n}.conv1.1.bias", f"convs_{n}/conv1/act/bias", _bias(cin)),
            (f"convs.{n}.conv2.0.kernel", down),
            Rule(f"convs.{n}.conv2.1.weight", f"convs_{n}/conv2/conv/kernel", CONV2D),
            Rule(f"convs.{n}.conv2.2.bias", f"convs_{n}/conv2/act/bias", _bias(cout)),
            (f"convs.{n}.skip.0.kernel", down),
            Rule(f"convs.{n}.skip.1.weight", f"convs_{n}/skip/conv/kernel", CONV2D),
        ]
    spec += [
        Rule("final_conv.0.weight", "final_conv/conv/kernel", CONV2D),
        Rule("final_conv.1.bias", "final_conv/act/bias", _bias(ch[4])),
    ]
    for j in range(2):
        spec += linear(f"final_linear.{j}", f"final_linear_{j}")
    return spec


def discriminator_reference_params(size: int = 256, width: float = 1.0):
    import jax
    import jax.numpy as jnp

    from jaxtalk.models.lia.discriminator import Discriminator

    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return variable_shapes(Discriminator(size, width), x)["params"]


def discriminator_to_params(
    state_dict: Mapping[str, np.ndarray], size: int = 256, width: float = 1.0, source: str = "dis"
) -> dict:
    spec = discriminator_key_spec(size, width)
    bufs = {k: v for k, v in (r for r in spec if not isinstance(r, Rule))}
    bad = [
        k
        for k, v in bufs.items()
        if k not in state_dict or not np.allclose(np.asarray(state_dict[k], np.float32), v)
    ]
    if bad:
        raise ConversionError(f"{source}: missing or wrong blur buffers {bad[:5]}")
    return to_params(
        state_dict,
        [r for r in spec if isinstance(r, Rule)],
        discriminator_reference_params(size, width),
        source=source,
        ignore=lambda k: k in bufs,
    )


def discriminator_to_state_dict(
    params: Mapping, size: int = 256, width: float = 1.0
) -> dict[str, np.ndarray]:
    spec = discriminator_key_spec(size, width)
    converted = to_state_dict(params, [r for r in spec if isinstance(r, Rule)])
    return {
        (r.torch_key if isinstance(r, Rule) else r[0]): (
            converted[r.torch_key] if isinstance(r, Rule) else np.asarray(r[1], np.float32)
        )
        for r in spec
    }
