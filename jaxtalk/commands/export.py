"""jaxtalk export: hand weights back in the released PyTorch layout, or pull them out of a run.

Two sources:
  --weights=FILE.safetensors       a file written by `jaxtalk import` or by --workdir below
  --workdir=RUN [--step=N] --group=G   a training run: the group's EMA parameters when the
                                       run keeps them, else the live ones; G may name a
                                       sub-tree, e.g. generator/model
  --workdir=RUN [--step=N]         a run whose model spans groups (liveportrait): the whole
                                   model, as the run's kind says (a stage-1 run's F, M, W, G;
                                   a stitching run's frozen base with its stitching, lip and
                                   eye MLPs); --group=generator / --group=base: the base alone

and four targets (--format, or the --out suffix):
  --release=NAME --out=FILE.pt     the release's PyTorch checkpoint layout (torch.load reads it);
                                   a directory for a release that is one (liveportrait)
  --out=FILE.safetensors           a jaxtalk weights file
  --out=FILE.jaxfn                 a serialized jax.export function that runs without jaxtalk:
                                   the weights' animator's `export_function` (video-driven
                                   stage-1 weights, lia, anitalker_stage1 or an anitalker_stage1
                                   run: frames = f(source image, motion codes); liveportrait:
                                   frames = f(source, first driving frame, driving frames))
  --format=onnx --out=FILE.onnx    the same function as an ONNX graph (opset 18, the frame
                                   axis T dynamic) for ONNX Runtime / TensorRT; checked
                                   against jax in ONNX Runtime on random inputs when
                                   onnxruntime is installed (pip install jaxtalk[onnx])

Examples:
  jaxtalk export --weights=weights/lia.safetensors --release=lia --out=lia_roundtrip.pt
  jaxtalk export --workdir=runs/s1 --group=generator/model --out=weights/s1.safetensors
  jaxtalk export --workdir=runs/s1 --group=generator/model --release=anitalker_stage1 --out=s1.ckpt
  jaxtalk export --weights=weights/lia_vox.safetensors --out=lia_vox.jaxfn
  jaxtalk export --weights=weights/anitalker_stage1.safetensors --format=onnx --out=s1.onnx
  jaxtalk export --weights=weights/liveportrait.safetensors --release=liveportrait --out=lp_dir
  jaxtalk export --workdir=runs/lp_stitching --release=liveportrait --out=lp_dir
"""

from absl import flags

from jaxtalk.errors import InputError

_WEIGHTS = flags.DEFINE_string("weights", None, "a jaxtalk weights file (.safetensors)")
_WORKDIR = flags.DEFINE_string("workdir", None, "a training run directory")
_STEP = flags.DEFINE_integer("step", None, "checkpoint step (default: the latest)")
_GROUP = flags.DEFINE_string(
    "group",
    None,
    "parameter group of the run to export (a liveportrait run: none, the whole model)",
)
_RELEASE = flags.DEFINE_string("release", None, "write this release's PyTorch layout")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "output file (.pt/.pth/.ckpt with --release, or the directory of a release that is one; "
    "else .safetensors)",
)


FORMATS = ("safetensors", "torch", "jaxfn", "onnx")
_FORMAT = flags.DEFINE_enum(
    "format",
    None,
    list(FORMATS),
    "what to write; default from --out: .jaxfn, .onnx, a release's .pt/.pth/.ckpt "
    "(with --release), else .safetensors",
)
_OPSET = flags.DEFINE_integer("opset", None, "--format=onnx: the ONNX opset (default 18)")
_CHECK = flags.DEFINE_bool(
    "check", True, "--format=onnx: compare with jax in ONNX Runtime on random inputs"
)


def output_format(out: str, fmt: str | None, release: str | None) -> str:
    """--format, else the one --out's suffix names."""
    if fmt:
        return fmt
    for suffix in (".jaxfn", ".onnx"):
        if out.endswith(suffix):
            return suffix[1:]
    return "torch" if release else "safetensors"


def _export_function(variables: dict, source: str, out: str, fmt: str) -> None:
    """The weights' animator's inference function as a .jaxfn or an ONNX file."""
    from jaxtalk import inference
    from jaxtalk.export import jax_function

    config = variables.get("model_config") or {}
    kind = config.get("kind") or _RELEASE.value or variables.get("release", "")
    animator = inference.animator_class(kind, source)
    if not animator.exports:
        raise animator.not_exportable(source)
    spec = animator.from_stored(dict(variables, release=kind), source).export_function()
    if fmt == "jaxfn":
        jax_function.export_function(
            spec.fn,
            spec.params,
            spec.input_specs,
            out,
            input_names=spec.input_names,
            output_names=spec.output_names,
            metadata=spec.metadata,
        )
        return
    from jaxtalk.export import onnx_export

    summary = onnx_export.export_onnx(spec, out, opset=_OPSET.value or onnx_export.OPSET)
    print(
        f"ONNX opset {summary['opset']}: {summary['nodes']} nodes, "
        f"{summary['bytes'] / 2**20:.1f} MiB; inputs "
        + ", ".join(
            f"{n} {onnx_export.shape_text(s)}" for n, s in zip(spec.input_names, spec.input_specs)
        )
    )
    if _CHECK.value:
        try:
            error = onnx_export.check_onnx(out, spec)
        except ImportError:
            print("onnxruntime is not installed: not checked (pip install jaxtalk[onnx])")
        else:
            print(f"ONNX Runtime vs jax on random inputs: max abs error {error:.2e}")


def _run_variables(config: dict, step: int) -> dict:
    """The run's weights to export: a family whose model spans groups gathers them by the
    run's kind (`releases.run_exporter`; with --release, or without --group), else --group's."""
    from jaxtalk.convert import releases
    from jaxtalk.train import checkpoints

    workdir, group, release = _WORKDIR.value, _GROUP.value, _RELEASE.value
    task = config.get("task", "")
    found = releases.run_exporter(task)
    if found and (release or not group):
        converter, run_variables = found
        if release and releases.find_release(release).converter != converter:
            names = sorted(n for n, r in releases.releases().items() if r.converter == converter)
            raise InputError(
                f"{workdir}: a {task} run exports to --release={' or --release='.join(names)}, "
                f"not {release}"
            )
        return run_variables(
            config, lambda g: checkpoints.group_variables(workdir, g, step), group, workdir
        )
    if not group:
        raise InputError("--workdir needs --group (e.g. generator)")
    return checkpoints.group_variables(workdir, group, step)


def main(argv):
    from jaxtalk.convert import releases, weights
    from jaxtalk.train import checkpoints

    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    if bool(_WEIGHTS.value) == bool(_WORKDIR.value):
        raise InputError("give exactly one of --weights or --workdir")
    if not _OUT.value:
        raise InputError("--out is required")
    try:
        if _WEIGHTS.value:
            variables = weights.load(_WEIGHTS.value)
        else:
            # Default: the newest checkpoint that can be read (older after a damaged one).
            step = checkpoints.resolve_step(_WORKDIR.value, _STEP.value)
            config = checkpoints.run_config(_WORKDIR.value, step)
            variables = _run_variables(config, step)
            # The constructor settings travel with the weights, so animate/import can
            # rebuild the model (e.g. a tiny 64x64 generator).
            variables["model_config"] = dict(config.get("model", {}), kind=config.get("task", ""))
        fmt = output_format(_OUT.value, _FORMAT.value, _RELEASE.value)
        if fmt in ("jaxfn", "onnx"):
            _export_function(variables, _WEIGHTS.value or _WORKDIR.value, _OUT.value, fmt)
        elif fmt == "torch":
            if not _RELEASE.value:
                raise InputError("--format=torch needs --release (the layout to write)")
            releases.export_release(_RELEASE.value, variables, _OUT.value)
        else:
            if not _OUT.value.endswith(".safetensors"):
                raise InputError("without --release the output is a .safetensors weights file")
            weights.save(variables, _OUT.value, release=variables.get("release", ""))
    except (OSError, ValueError, KeyError) as e:
        raise InputError(str(e).strip("'\"")) from None
    print(f"exported to {_OUT.value}")
