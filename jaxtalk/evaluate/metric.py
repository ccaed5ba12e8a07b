"""The metric interface the eval / sweep commands drive, and its implementations.

A `Metric` is fed batches (dicts of arrays) with `update` and reports a dict of named
values with `compute` (one metric may report several columns: LSE gives lse_d and lse_c).
Batch keys:
  "prediction": generated frames (N, H, W, 3) in [0, 1];
  "target": ground-truth / driving frames, same shape (self-reenactment);
  "source": the identity image each prediction was animated from (CSIM; FID's real frames
    where a mode has no target);
  "video" + "audio" (+ "audio_rate"): one generated video (T, 224, 224, 3) in [0, 1] at
    25 fps and its 16 kHz speech in [-1, 1] (LSE).
The per-sample math is jitted and works on sharded global arrays; sums are accumulated on
the host in float64, so a test set may be fed in any batch size.
"""

from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxtalk.evaluate import fid, sync
from jaxtalk.evaluate.pose_expression import MotionExtractor, expression_pose_distances


@runtime_checkable
class Metric(Protocol):
    name: str
    inputs: tuple[str, ...]  # the batch keys `update` reads

    def reset(self) -> None: ...

    def update(self, batch: Mapping[str, object]) -> None: ...

    def compute(self) -> dict[str, float]: ...


def to_host(x) -> np.ndarray:
    """A (possibly sharded, possibly multi-process) array as a full numpy array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def _check_inputs(metric: Metric, batch: Mapping[str, object]) -> None:
    missing = [k for k in metric.inputs if k not in batch]
    if missing:
        raise KeyError(
            f"metric {metric.name!r} needs batch keys {list(metric.inputs)}; "
            f"missing {missing} (batch has {sorted(batch)})"
        )


class MeanOverSamples:
    """Averages one or more per-sample columns returned by `fn(*batch[inputs])`."""

    def __init__(
        self,
        name: str,
        fn: Callable[..., Mapping[str, object]],
        inputs: Sequence[str] = ("prediction", "target"),
    ):
        self.name, self.fn, self.inputs = name, fn, tuple(inputs)
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def update(self, batch: Mapping[str, object]) -> None:
        _check_inputs(self, batch)
        for column, values in self.fn(*(batch[k] for k in self.inputs)).items():
            values = to_host(values).astype(np.float64).reshape(-1)
            self._sums[column] = self._sums.get(column, 0.0) + float(values.sum())
            self._counts[column] = self._counts.get(column, 0) + values.size

    def compute(self) -> dict[str, float]:
        if not self._counts:
            raise ValueError(f"metric {self.name!r}: compute() before any update()")
        return {c: self._sums[c] / self._counts[c] for c in self._sums}


def per_sample(name: str, fn: Callable, inputs=("prediction", "target")) -> MeanOverSamples:
    """A metric averaging `fn(a, b) -> (N,)` over samples, reported as `name`."""
    return MeanOverSamples(name, lambda *args: {name: fn(*args)}, inputs)


class FrechetInceptionDistance:
    """FID between generated frames and real frames (or precomputed real statistics).

    The real frames are the batch's `reference_key`; by default its "target" where the eval
    mode has one (self-reenactment: the driving frames) and else its "source" frames
    (cross-reenactment has no ground truth: the animated identity's real images are the
    sources, which cross-reenactment FID is measured against)."""

    def __init__(
        self,
        variables,
        reference_statistics: str | None = None,
        reference_key: str | None = None,
        name: str = "fid",
    ):
        if reference_statistics and reference_key:
            raise ValueError(f"metric {name!r}: give reference_statistics or reference_key")
        self.name, self.variables, self.reference_key = name, variables, reference_key
        self.reference = fid.load_statistics(reference_statistics) if reference_statistics else None
        # Without a fixed key the reference is chosen per batch (`_real_key`).
        self.inputs = ("prediction",) + ((reference_key,) if reference_key else ())
        self.reset()

    def reset(self) -> None:
        self._generated, self._real = fid.FeatureStatistics(), fid.FeatureStatistics()

    def _real_key(self, batch: Mapping[str, object]) -> str:
        if self.reference_key:
            return self.reference_key
        for key in ("target", "source"):
            if key in batch:
                return key
        raise KeyError(
            f"metric {self.name!r} needs real frames: batch key 'target' or 'source', or "
            f"reference_statistics (batch has {sorted(batch)})"
        )

    def update(self, batch: Mapping[str, object]) -> None:
        _check_inputs(self, batch)
        real = None if self.reference is not None else batch[self._real_key(batch)]
        self._generated.update(to_host(fid.inception_features(self.variables, batch["prediction"])))
        if real is not None:
            self._real.update(to_host(fid.inception_features(self.variables, real)))

    def compute(self) -> dict[str, float]:
        real = self.reference if self.reference is not None else self._real.compute()
        return {self.name: fid.frechet_distance(*self._generated.compute(), *real)}


class LipSyncError:
    """LSE-D and LSE-C averaged over videos (one video per update)."""

    inputs = ("video", "audio")

    def __init__(self, variables, vshift: int = sync.DEFAULT_VSHIFT, name: str = "lse"):
        self.name, self.variables, self.vshift = name, variables, vshift
        self.reset()

    def reset(self) -> None:
        self._values: list[tuple[float, float]] = []

    def update(self, batch: Mapping[str, object]) -> None:
        _check_inputs(self, batch)
        result = sync.lse(
            self.variables,
            to_host(batch["video"]),
            to_host(batch["audio"]),
            int(batch.get("audio_rate", sync.AUDIO_RATE)),
            self.vshift,
        )
        self._values.append((result["lse_d"], result["lse_c"]))

    def compute(self) -> dict[str, float]:
        if not self._values:
            raise ValueError(f"metric {self.name!r}: compute() before any update()")
        d, c = np.mean(np.asarray(self._values), axis=0)
        return {"lse_d": float(d), "lse_c": float(c)}


def expression_pose(extractor: MotionExtractor, name: str = "aed_apd") -> MeanOverSamples:
    """AED and APD averaged over frames."""
    # Against the driving frame: the target in self-reenactment, the only reference in cross.
    return MeanOverSamples(
        name, lambda p, d: expression_pose_distances(extractor, p, d), ("prediction", "driving")
    )
