"""Metrics and metric-weight releases by name.

    metric = registry.create("lpips_alex")            # weights from the weights dir
    metric = registry.create("lpips_alex", weights="/path/lpips_alex.safetensors")
    registry.import_release("lpips_alex", "alex.pth", backbone="alexnet-owt-7be5be79.pth")

A metric whose weights file is absent raises `MissingWeightsError`, which names the file and
the `jaxtalk import` command that makes it, so a sweep can skip that metric and go on.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Callable

from jaxtalk.evaluate import image_metrics, metric, weights as weights_store


class MissingWeightsError(FileNotFoundError):
    """A metric needs an imported weights file that is not there."""


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


def load_weights(release: str, weights: str | os.PathLike | None = None,
                 weights_dir: str | None = None, metric_name: str | None = None) -> dict:
    path = Path(weights) if weights else weights_store.weights_path(release, weights_dir)
    if not path.exists():
        spec = RELEASES[release]
        raise MissingWeightsError(
            f"metric {metric_name or release!r} needs weights {path}: run `{spec.command()}` "
            f"(source: {spec.source}), or pass the imported file's path")
    return weights_store.load(path)


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    release: str | None  # weights it needs, None for pixel metrics
    build: Callable[..., metric.Metric]  # build(variables_or_None, **options)
    description: str


def _lpips(net):
    def build(variables, **_):
        from jaxtalk.evaluate.lpips import lpips
        return metric.per_sample(f"lpips_{net}", lambda a, b: lpips(variables, a, b, net=net))
    return build


def _csim(variables, reference_key: str = "source", **_):
    from jaxtalk.evaluate.csim import csim
    return metric.per_sample("csim", lambda a, b: csim(variables, a, b),
                             inputs=("prediction", reference_key))


def _aed_apd(_variables, extractor: str | Any = None, extractor_weights=None, **_):
    from jaxtalk.evaluate import pose_expression
    if extractor is None:
        raise ValueError("metric 'aed_apd' needs extractor=<name or callable>; registered: "
                         f"{pose_expression.extractor_names()}")
    if isinstance(extractor, str):
        extractor = pose_expression.make_extractor(extractor, extractor_weights)
    return metric.expression_pose(extractor)


METRICS = {m.name: m for m in [
    MetricSpec("psnr", None, lambda _v, data_range=1.0, **_: metric.per_sample(
        "psnr", lambda a, b: image_metrics.psnr(a, b, data_range)), "PSNR in dB"),
    MetricSpec("ssim", None, lambda _v, data_range=1.0, use_sample_covariance=True, **_:
               metric.per_sample("ssim", lambda a, b: image_metrics.ssim(
                   a, b, data_range, use_sample_covariance=use_sample_covariance)),
               "SSIM as scikit-image (gaussian weights)"),
    MetricSpec("l1", None, lambda _v, **_: metric.per_sample("l1", image_metrics.l1),
               "mean absolute error"),
    MetricSpec("lpips_alex", "lpips_alex", _lpips("alex"), "LPIPS v0.1, AlexNet"),
    MetricSpec("lpips_vgg", "lpips_vgg", _lpips("vgg"), "LPIPS v0.1, VGG16"),
    MetricSpec("csim", "arcface_r100", _csim, "ArcFace IResNet-100 cosine similarity"),
    MetricSpec("lse", "syncnet_v2", lambda v, vshift=15, **_: metric.LipSyncError(v, vshift),
               "SyncNet LSE-D and LSE-C"),
    MetricSpec("fid", "inception_fid", lambda v, reference_statistics=None, **_:
               metric.FrechetInceptionDistance(v, reference_statistics),
               "FID (pytorch-fid InceptionV3 pool3)"),
    MetricSpec("aed_apd", None, _aed_apd, "average expression / pose distance"),
]}


def names() -> list[str]:
    return sorted(METRICS)


def create(name: str, weights: str | os.PathLike | None = None,
           weights_dir: str | None = None, **options) -> metric.Metric:
    """A fresh metric by name; `weights` overrides the weights dir lookup."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {names()}")
    spec = METRICS[name]
    variables = (load_weights(spec.release, weights, weights_dir, metric_name=name)
                 if spec.release else None)
    return spec.build(variables, **options)


def create_many(names_: list[str], weights_dir: str | None = None, options=None):
    """(metrics by name, errors by name): metrics that cannot be built are reported, not
    raised, so an evaluation can run the others."""
    built, errors = {}, {}
    for name in names_:
        try:
            built[name] = create(name, weights_dir=weights_dir, **(options or {}).get(name, {}))
        except (MissingWeightsError, KeyError, ValueError) as e:
            errors[name] = str(e)
    return built, errors
