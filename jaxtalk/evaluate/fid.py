"""Frechet Inception Distance: feature statistics and the distance, as pytorch-fid defines it.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), with S the sample covariance
(N - 1 normalisation) of InceptionV3 pool3 features (`nets/inception.py`). The statistics
are accumulated in float64 on the host as running sums, so a test set of any size streams
through in batches; the distance is computed once, in float64, on the host.
"""

from __future__ import annotations

import io
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.errors import one_line
from jaxtalk.models.metric_nets import inception


class FeatureStatistics:
    """Running mean and covariance of feature vectors, fed batch by batch."""

    def __init__(self, dim: int | None = None):
        self.count = 0
        self._sum = None if dim is None else np.zeros(dim, np.float64)
        self._outer = None if dim is None else np.zeros((dim, dim), np.float64)

    def update(self, features) -> None:
        x = np.asarray(features, np.float64).reshape(len(features), -1)
        if self._sum is None:
            self._sum = np.zeros(x.shape[1], np.float64)
            self._outer = np.zeros((x.shape[1],) * 2, np.float64)
        self._sum += x.sum(0)
        self._outer += x.T @ x
        self.count += len(x)

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) as np.mean(x, 0) and np.cov(x, rowvar=False)."""
        if self.count < 2:
            raise ValueError(f"FID statistics need at least 2 samples, got {self.count}")
        mu = self._sum / self.count
        sigma = (self._outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma


def statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of an (N, D) feature array."""
    stats = FeatureStatistics()
    stats.update(features)
    return stats.compute()


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Frechet distance between two Gaussians.

    tr((S1 S2)^(1/2)) equals tr((A S2 A)^(1/2)) with A = S1^(1/2): the latter is a symmetric
    PSD matrix, so its square root's trace is the sum of the square roots of its
    eigenvalues. This avoids the complex intermediates (and the eps retry) of
    scipy.linalg.sqrtm that pytorch-fid needs, and agrees with it where both are defined.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, "
            f"sigma {sigma1.shape} vs {sigma2.shape}"
        )
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def load_statistics(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Reads (mu, sigma) from an .npz with 'mu' and 'sigma' (pytorch-fid's format)."""
    path = os.fspath(path)
    if not fs.exists(path):
        raise FileNotFoundError(f"{path}: no such FID statistics file")
    with fs.open(path, "rb") as f:
        raw = f.read()
    try:  # an untrusted file: no pickles, and any unreadable form is one line naming it
        data = np.load(io.BytesIO(raw), allow_pickle=False)
        names = sorted(data.files) if isinstance(data, np.lib.npyio.NpzFile) else []
        if "mu" in names and "sigma" in names:
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except Exception as e:  # np.load's errors vary with the damage (zipfile, pickle, OSError)
        raise ValueError(f"{path}: not an .npz of FID statistics ({one_line(e)})") from None
    if "mu" not in names or "sigma" not in names:
        raise ValueError(f"{path}: FID statistics need arrays 'mu' and 'sigma', found {names}")
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: FID statistics mu {mu.shape} and sigma {sigma.shape} disagree")
    return mu, sigma


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
    np.savez(path, mu=mu, sigma=sigma)


def inception_features(variables, images):
    """pool3 features (N, 2048) of NHWC images in [0, 1], as pytorch-fid computes them:
    bilinear resize to 299x299 (half-pixel centres, no antialiasing, like
    F.interpolate(align_corners=False)), scale to [-1, 1], FID InceptionV3."""
    return _inception_features({k: variables[k] for k in ("params", "batch_stats")}, images)


@jax.jit
def _inception_features(variables, images):
    images = images.astype(jnp.float32)
    size = inception.INPUT_SIZE
    if images.shape[1:3] != (size, size):
        images = jax.image.resize(
            images, (images.shape[0], size, size, images.shape[3]), "bilinear", antialias=False
        )
    return inception.FIDInceptionV3().apply(variables, 2 * images - 1)["pool3"]
