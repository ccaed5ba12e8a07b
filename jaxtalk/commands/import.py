"""jaxtalk import: convert a released PyTorch checkpoint into a jaxtalk weights file.

The checkpoint is a file, or a directory for a release published as one (LivePortrait's
base_models/ and retargeting_models/). Reads it without PyTorch, maps every key (a missing, unexpected or mis-shaped key is
an error that lists them all) and writes `<weights dir>/<release>.safetensors` (or --out),
which training configs, metrics and `jaxtalk export` load.

Examples:
  jaxtalk import --release=anitalker_stage1 --checkpoint=ckpts/stage1.ckpt
  jaxtalk import --release=lia --checkpoint=vox.pt --out=weights/lia_vox.safetensors
  jaxtalk import --release=lpips_alex --checkpoint=alex.pth --backbone=alexnet-owt-7be5be79.pth
  jaxtalk import --release=liveportrait --checkpoint=pretrained_weights/liveportrait

Releases: run `jaxtalk import --list`.
"""

import numpy as np
from absl import flags

from jaxtalk.errors import InputError

_RELEASE = flags.DEFINE_string("release", None, "release name (see --list)")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "the released PyTorch file (or directory, for a release that is one)"
)
_OUT = flags.DEFINE_string(
    "out",
    None,
    "output .safetensors (default: "
    "$JAXTALK_WEIGHTS_DIR or ~/.cache/jaxtalk/weights, /<release>.safetensors)",
)
_WEIGHTS_DIR = flags.DEFINE_string("weights_dir", None, "directory for the default output")
_BACKBONE = flags.DEFINE_string("backbone", None, "lpips_*: the torchvision backbone file")
_LIST = flags.DEFINE_bool("list", False, "list the releases and where to get them")


def main(argv):
    from jaxtalk.convert import releases

    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}")
    if _LIST.value:
        for spec in releases.releases().values():
            print(f"{spec.name:<18} {spec.source}\n{'':<18} {spec.command()}")
        return
    if not _RELEASE.value or not _CHECKPOINT.value:
        raise InputError("--release and --checkpoint are required (see --list)")
    spec = releases.find_release(_RELEASE.value)  # an unknown release fails before any reading
    try:
        path = releases.import_release(
            _RELEASE.value,
            _CHECKPOINT.value,
            output=_OUT.value,
            weights_dir=_WEIGHTS_DIR.value,
            **_extra_files(spec),
        )
    except KeyError as e:  # a converter reading a key the file lacks: another model's file
        raise InputError(
            f"{_CHECKPOINT.value}: no key {e} (not a {_RELEASE.value} checkpoint?)"
        ) from None
    from jaxtalk.convert import weights

    stored = weights.load(path)
    count = sum(
        int(np.prod(v.shape))
        for c in ("params", "batch_stats")
        if c in stored
        for v in _leaves(stored[c])
    )
    print(
        f"imported {_RELEASE.value} from {_CHECKPOINT.value}: {count / 1e6:.2f}M values -> {path}"
    )


def _extra_files(spec) -> dict[str, str]:
    """The further files the release takes (--backbone), all given and no others."""
    given = {"backbone": _BACKBONE.value} if _BACKBONE.value else {}
    wrong = sorted(set(given) ^ set(spec.extra_files))  # missing or not taken
    if wrong:
        takes = " ".join(["--checkpoint"] + [f"--{f}" for f in spec.extra_files])
        raise InputError(f"--{wrong[0]}: --release={spec.name} takes {takes}")
    return given


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree
