"""PSNR, L1 and SSIM against scikit-image."""

import jax
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxtalk.evaluate import image_metrics


def image_pairs(rng, n=3, size=(40, 36)):
    """Random noise, and structured images (gradients, edges, a blurred copy)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    smooth = np.stack([xx, yy, 0.5 * (xx + yy)], -1)
    edges = (np.sin(12 * xx)[..., None] > 0) * np.array([0.9, 0.2, 0.6]) + 0.05
    a = np.stack([rng.uniform(size=(h, w, 3)), smooth, edges])
    b = np.stack(
        [
            rng.uniform(size=(h, w, 3)),
            np.clip(smooth + 0.05 * rng.standard_normal(smooth.shape), 0, 1),
            np.roll(edges, 1, axis=1) * 0.95,
        ]
    )
    return a[:n].astype(np.float32), b[:n].astype(np.float32)


@pytest.mark.parametrize("use_sample_covariance", [True, False])
def test_ssim_matches_skimage(use_sample_covariance):
    a, b = image_pairs(np.random.default_rng(0))
    got = np.asarray(image_metrics.ssim(a, b, use_sample_covariance=use_sample_covariance))
    want = [
        structural_similarity(
            x,
            y,
            channel_axis=-1,
            data_range=1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=use_sample_covariance,
        )
        for x, y in zip(a.astype(np.float64), b.astype(np.float64))
    ]
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert abs(want[1] - want[0]) > 0.1  # the cases differ, so the check has teeth


def test_ssim_identity_and_data_range():
    a, _ = image_pairs(np.random.default_rng(1))
    np.testing.assert_allclose(image_metrics.ssim(a, a), 1.0, atol=1e-5)
    rng = np.random.default_rng(2)
    x, y = rng.uniform(0, 255, (2, 1, 24, 24, 3)).astype(np.float32)
    want = structural_similarity(
        x[0].astype(np.float64),
        y[0].astype(np.float64),
        channel_axis=-1,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
    )
    np.testing.assert_allclose(image_metrics.ssim(x, y, data_range=255.0), [want], atol=1e-4)
    with pytest.raises(ValueError, match="at least 11x11"):
        image_metrics.ssim(x[:, :8, :8], y[:, :8, :8])


def test_psnr_and_l1_match_numpy_definitions():
    a, b = image_pairs(np.random.default_rng(3))
    want = [peak_signal_noise_ratio(x, y, data_range=1) for x, y in zip(a, b)]
    np.testing.assert_allclose(image_metrics.psnr(a, b), want, rtol=1e-5)
    np.testing.assert_allclose(
        image_metrics.l1(a, b), np.abs(a - b).reshape(3, -1).mean(-1), rtol=1e-6
    )
    assert np.isinf(image_metrics.psnr(a, a)).all()


def test_metrics_run_sharded_over_the_batch():
    mesh = jax.make_mesh((8,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    rng = np.random.default_rng(4)
    a, b = rng.uniform(size=(2, 8, 16, 16, 3)).astype(np.float32)
    sa, sb = jax.device_put(a, sharding), jax.device_put(b, sharding)
    for fn in (image_metrics.psnr, image_metrics.l1, image_metrics.ssim):
        out = fn(sa, sb)
        assert out.shape == (8,) and out.sharding.spec == sharding.spec, fn
        np.testing.assert_allclose(out, fn(a, b), rtol=1e-6)


def test_reenactment_mean_leaves_out_pairs_of_one_frame():
    rng = np.random.default_rng(0)
    source = rng.uniform(size=(4, 8, 8, 3)).astype(np.float32)
    target = source.copy()
    target[1:] = rng.uniform(size=(3, 8, 8, 3))
    copy = image_metrics.psnr(source, target)  # pair 0 holds one frame twice: inf
    assert np.isinf(copy[0]) and np.isinf(np.mean(copy))
    frames = {"source_frame": np.array([5, 1, 2, 3]), "driving_frame": np.array([5, 0, 9, 3])}
    got = image_metrics.reenactment_mean(copy, frames)
    np.testing.assert_allclose(got, np.mean(copy[1:3]), rtol=1e-6)  # pairs 0 and 3 left out
    # still images (every pair one frame) and batches without frame indices: all pairs
    still = {"source_frame": np.zeros(4, int), "driving_frame": np.zeros(4, int)}
    values = np.arange(4.0)
    assert image_metrics.reenactment_mean(values, still) == 1.5
    assert image_metrics.reenactment_mean(values, {}) == 1.5
