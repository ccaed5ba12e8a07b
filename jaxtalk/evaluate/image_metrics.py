"""Pixel metrics between batches of images: PSNR, L1, SSIM.

All functions take NHWC images (values in [0, data_range], RGB or any channel count) and
return one value per image, shape (N,), so they jit, shard over the batch axis and average
exactly over a test set. SSIM follows scikit-image's `structural_similarity` with
`gaussian_weights=True` (its definition and defaults: sigma 1.5, window truncated at 3.5
sigma, 'reflect' borders, K1 0.01, K2 0.03, the border of half a window cropped before
averaging, channels averaged).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _per_image_mean(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


@functools.partial(jax.jit, static_argnames=("data_range",))
def psnr(prediction: jnp.ndarray, target: jnp.ndarray, data_range: float = 1.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB per image (inf for identical images)."""
    mse = _per_image_mean(jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32)))
    return 10.0 * jnp.log10(data_range**2 / mse)


def reenactment_mean(values: jnp.ndarray, batch: dict) -> jnp.ndarray:
    """Batch mean of per-pair values over the self-reenactment pairs whose source and driving
    are different frames. A clip's pair can draw the same frame twice (as face-vid2vid's
    sampler does); such a pair tests nothing, and its copy-the-source PSNR is inf, which
    would make a whole evaluation's baseline inf. Every pair counts when none qualifies (a
    set of still images: each pair reconstructs its image) or the batch does not say which
    frames it holds."""
    if "source_frame" not in batch or "driving_frame" not in batch:
        return jnp.mean(values)
    keep = jnp.asarray(batch["source_frame"]) != jnp.asarray(batch["driving_frame"])
    kept = jnp.sum(keep)
    return jnp.where(
        kept > 0, jnp.sum(jnp.where(keep, values, 0.0)) / jnp.maximum(kept, 1), jnp.mean(values)
    )


@jax.jit
def l1(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute error per image."""
    return _per_image_mean(jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32)))


def gaussian_taps(sigma: float, truncate: float = 3.5) -> np.ndarray:
    """The 1-D kernel of scipy.ndimage.gaussian_filter (radius int(truncate*sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _filter_axis(x: jnp.ndarray, taps: np.ndarray, axis: int) -> jnp.ndarray:
    """Correlates along `axis` with scipy's 'reflect' border (numpy's 'symmetric')."""
    radius = len(taps) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad, mode="symmetric")
    size = x.shape[axis]
    return sum(
        float(w) * jax.lax.slice_in_dim(padded, i, i + size, axis=axis) for i, w in enumerate(taps)
    )


def _gaussian_filter(x: jnp.ndarray, taps: np.ndarray) -> jnp.ndarray:
    return _filter_axis(_filter_axis(x, taps, 1), taps, 2)


@functools.partial(
    jax.jit, static_argnames=("data_range", "sigma", "use_sample_covariance", "k1", "k2")
)
def ssim(
    prediction: jnp.ndarray,
    target: jnp.ndarray,
    data_range: float = 1.0,
    sigma: float = 1.5,
    use_sample_covariance: bool = True,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Mean structural similarity per image, as scikit-image's `structural_similarity(
    a, b, channel_axis=-1, data_range=data_range, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=use_sample_covariance)`.

    `use_sample_covariance=True` is scikit-image's default; False is Wang et al.'s original
    definition (population covariance).
    """
    taps = gaussian_taps(sigma)
    win = len(taps)
    if min(prediction.shape[1:3]) < win:
        raise ValueError(
            f"SSIM needs images of at least {win}x{win} pixels, got {prediction.shape[1:3]}"
        )
    x = prediction.astype(jnp.float32)
    y = target.astype(jnp.float32)
    cov_norm = win * win / (win * win - 1.0) if use_sample_covariance else 1.0
    mean_x, mean_y = _gaussian_filter(x, taps), _gaussian_filter(y, taps)
    var_x = cov_norm * (_gaussian_filter(x * x, taps) - mean_x * mean_x)
    var_y = cov_norm * (_gaussian_filter(y * y, taps) - mean_y * mean_y)
    cov_xy = cov_norm * (_gaussian_filter(x * y, taps) - mean_x * mean_y)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    similarity = (
        (2 * mean_x * mean_y + c1)
        * (2 * cov_xy + c2)
        / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    )
    pad = (win - 1) // 2
    return _per_image_mean(similarity[:, pad:-pad, pad:-pad, :])
