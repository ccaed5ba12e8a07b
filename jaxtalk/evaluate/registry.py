"""Metrics and metric-weight releases by name.

    metric = registry.create("lpips_alex")            # weights from the weights dir
    metric = registry.create("lpips_alex", weights="/path/lpips_alex.safetensors")
    jaxtalk.convert.releases.import_release("lpips_alex", "alex.pth", backbone="alexnet-owt-7be5be79.pth")

A metric whose weights file is absent raises `MissingWeightsError`, which names the file and
the `jaxtalk import` command that makes it, so a sweep can skip that metric and go on.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

from jaxtalk import fs
from jaxtalk.convert import weights as weights_store
from jaxtalk.convert.releases import find_release
from jaxtalk.evaluate import image_metrics, metric, pose_expression


class MissingWeightsError(FileNotFoundError):
    """A metric needs an imported weights file that is not there."""


def load_weights(
    release: str,
    weights: str | os.PathLike | None = None,
    weights_dir: str | None = None,
    metric_name: str | None = None,
) -> dict:
    path = os.fspath(weights) if weights else weights_store.weights_path(release, weights_dir)
    if not fs.exists(path):
        spec = find_release(release)
        raise MissingWeightsError(
            f"metric {metric_name or release!r} needs weights {path}: run `{spec.command()}` "
            f"(source: {spec.source}), or pass the imported file's path"
        )
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

    return metric.per_sample(
        "csim", lambda a, b: csim(variables, a, b), inputs=("prediction", reference_key)
    )


def _liveportrait_extractor(weights=None, weights_dir=None):
    stored = load_weights("liveportrait", weights, weights_dir, metric_name="aed_apd")
    return pose_expression.liveportrait_extractor(
        stored, str(weights or weights_store.weights_path("liveportrait", weights_dir))
    )


pose_expression.register_extractor("liveportrait", _liveportrait_extractor)


def _aed_apd(
    _variables, extractor: str | Any = "liveportrait", extractor_weights=None, weights_dir=None, **_
):
    """`extractor`: a registered name (default LivePortrait's M, as its paper measures) or
    a callable; `extractor_weights`: its weights file (default: found in `weights_dir`)."""
    if isinstance(extractor, str):
        extractor = pose_expression.make_extractor(extractor, extractor_weights, weights_dir)
    return metric.expression_pose(extractor)


METRICS = {
    m.name: m
    for m in [
        MetricSpec(
            "psnr",
            None,
            lambda _v, data_range=1.0, **_: metric.per_sample(
                "psnr", lambda a, b: image_metrics.psnr(a, b, data_range)
            ),
            "PSNR in dB",
        ),
        MetricSpec(
            "ssim",
            None,
            lambda _v, data_range=1.0, use_sample_covariance=True, **_: metric.per_sample(
                "ssim",
                lambda a, b: image_metrics.ssim(
                    a, b, data_range, use_sample_covariance=use_sample_covariance
                ),
            ),
            "SSIM as scikit-image (gaussian weights)",
        ),
        MetricSpec(
            "l1",
            None,
            lambda _v, **_: metric.per_sample("l1", image_metrics.l1),
            "mean absolute error",
        ),
        MetricSpec("lpips_alex", "lpips_alex", _lpips("alex"), "LPIPS v0.1, AlexNet"),
        MetricSpec("lpips_vgg", "lpips_vgg", _lpips("vgg"), "LPIPS v0.1, VGG16"),
        MetricSpec("csim", "arcface_r100", _csim, "ArcFace IResNet-100 cosine similarity"),
        MetricSpec(
            "lse",
            "syncnet_v2",
            lambda v, vshift=15, **_: metric.LipSyncError(v, vshift),
            "SyncNet LSE-D and LSE-C",
        ),
        MetricSpec(
            "fid",
            "inception_fid",
            lambda v, reference_statistics=None, reference_key=None, **_: (
                metric.FrechetInceptionDistance(v, reference_statistics, reference_key)
            ),
            "FID (pytorch-fid InceptionV3 pool3) against the target, else the source frames",
        ),
        MetricSpec("aed_apd", None, _aed_apd, "average expression / pose distance"),
    ]
}


def names() -> list[str]:
    return sorted(METRICS)


def create(
    name: str, weights: str | os.PathLike | None = None, weights_dir: str | None = None, **options
) -> metric.Metric:
    """A fresh metric by name; `weights` overrides the weights dir lookup."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {names()}")
    spec = METRICS[name]
    variables = (
        load_weights(spec.release, weights, weights_dir, metric_name=name) if spec.release else None
    )
    return spec.build(variables, weights_dir=weights_dir, **options)  # for metrics' own lookups


def create_many(names_: list[str], weights_dir: str | None = None, options=None):
    """(metrics by name, errors by name): metrics that cannot be built are reported, not
    raised, so an evaluation can run the others."""
    built, errors = {}, {}
    for name in names_:
        try:
            built[name] = create(name, weights_dir=weights_dir, **(options or {}).get(name, {}))
        except (OSError, KeyError, ValueError) as e:  # missing weights or option files too
            errors[name] = str(e)
    return built, errors
