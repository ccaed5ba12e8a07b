"""Public PyTorch checkpoints jaxtalk imports, by release name.

    jaxtalk import --release=lpips_alex --checkpoint=alex.pth --backbone=alexnet-owt-7be5be79.pth

A release names the converter module (`jaxtalk/convert/<module>.py`, with
`import_checkpoint(path, **options)`), the extra files it needs and where users get the
file. `import_release` converts once and writes `<weights dir>/<release>.safetensors`.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
from pathlib import Path

from jaxtalk.convert import weights as weights_store


@dataclasses.dataclass(frozen=True)
class Release:
    """A public PyTorch weights file and the converter that imports it."""

    name: str
    converter: str  # module in jaxtalk.convert with import_checkpoint(path, **options)
    options: dict  # fixed options for import_checkpoint
    extra_files: tuple[str, ...]  # further file options the user must pass (e.g. backbone)
    source: str  # where the public file comes from (shown in errors and the README)

    def command(self) -> str:
        extra = "".join(f" --{f}=<path>" for f in self.extra_files)
        return f"jaxtalk import --release={self.name} --checkpoint=<path>{extra}"


RELEASES = {r.name: r for r in [
    Release("lpips_alex", "lpips", {"net": "alex"}, ("backbone",),
            "lpips package file lpips/weights/v0.1/alex.pth (pip install lpips) + torchvision "
            "alexnet-owt-7be5be79.pth as --backbone"),
    Release("lpips_vgg", "lpips", {"net": "vgg"}, ("backbone",),
            "lpips package file lpips/weights/v0.1/vgg.pth + torchvision vgg16-397923af.pth "
            "as --backbone"),
    Release("arcface_r100", "arcface", {"arch": "iresnet100"}, (),
            "insightface arcface_torch model zoo, e.g. ms1mv3_arcface_r100_fp16/backbone.pth"),
    Release("syncnet_v2", "syncnet", {}, (),
            "joonson/syncnet_python download_model.sh: data/syncnet_v2.model"),
    Release("inception_fid", "inception", {}, (),
            "pytorch-fid release pt_inception-2015-12-05-6726825d.pth"),
    Release("vgg16", "torchvision_vgg", {"config": "vgg16"}, (),
            "torchvision vgg16-397923af.pth"),
    Release("vgg19", "torchvision_vgg", {"config": "vgg19"}, (),
            "torchvision vgg19-dcbb9e9d.pth"),
    # Model families.
    Release("lia", "lia", {"kind": "lia"}, (),
            "wyhsirius/LIA released checkpoints (vox.pt, taichi.pt, ted.pt): torch dict with 'gen'"),
    Release("anitalker_stage1", "lia", {"kind": "anitalker_stage1"}, (),
            "X-LANCE/AniTalker ckpts/stage1.ckpt (Lightning; keys prefixed 'lia.')"),
    Release("anitalker_stage2", "anitalker", {}, (),
            "X-LANCE/AniTalker ckpts/stage2_*.ckpt (one per infer_type; EMA weights used)"),
    Release("hubert", "hubert", {}, (),
            "a Hugging Face HuBERT checkpoint's pytorch_model.bin, e.g. "
            "TencentGameMate/chinese-hubert-large (what AniTalker uses)"),
]}


def import_release(release: str, checkpoint: str | os.PathLike, output: str | None = None,
                   weights_dir: str | None = None, **files: str) -> Path:
    """Converts a public PyTorch file and writes `<weights dir>/<release>.safetensors`.

    What `jaxtalk import --release=R --checkpoint=P [--backbone=B] [--output=O]` calls.
    """
    if release not in RELEASES:
        raise KeyError(f"unknown release {release!r}; known: {sorted(RELEASES)}")
    spec = RELEASES[release]
    missing = [f for f in spec.extra_files if not files.get(f)]
    unknown = sorted(set(files) - set(spec.extra_files))
    if missing or unknown:
        raise ValueError(f"release {release!r} takes --checkpoint"
                         + "".join(f" --{f}" for f in spec.extra_files)
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unexpected {unknown}" if unknown else ""))
    converter = importlib.import_module(f"jaxtalk.convert.{spec.converter}")
    variables = converter.import_checkpoint(checkpoint, **spec.options, **files)
    target = Path(output) if output else weights_store.weights_path(release, weights_dir)
    return weights_store.save(variables, target, release=release)


def export_release(release: str, variables: dict, path: str | os.PathLike) -> None:
    """Writes `variables` (as `import_release` stored them) in the release's PyTorch layout."""
    if release not in RELEASES:
        raise KeyError(f"unknown release {release!r}; known: {sorted(RELEASES)}")
    spec = RELEASES[release]
    converter = importlib.import_module(f"jaxtalk.convert.{spec.converter}")
    options = {k: v for k, v in spec.options.items()
               if k in inspect.signature(converter.export_checkpoint).parameters}
    if "model_config" in inspect.signature(converter.export_checkpoint).parameters:
        options["model_config"] = variables.get("model_config") or None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    converter.export_checkpoint(variables, path, **options)
