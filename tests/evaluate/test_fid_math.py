"""FID statistics and distance against numpy/scipy (pytorch-fid's formula)."""

import numpy as np
import pytest
from scipy import linalg

from jaxtalk.evaluate import fid


def scipy_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance, written out from its definition."""
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def test_streaming_statistics_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((257, 16)) * rng.uniform(0.5, 2, 16) + 3.0
    stats = fid.FeatureStatistics()
    for chunk in np.array_split(x.astype(np.float32), 5):
        stats.update(chunk)
    mu, sigma = stats.compute()
    np.testing.assert_allclose(mu, x.astype(np.float32).mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float32), rowvar=False), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fid.FeatureStatistics().compute()


@pytest.mark.parametrize("n,dim", [(500, 32), (40, 64)])  # full rank, and rank deficient
def test_frechet_distance_matches_scipy_sqrtm(n, dim):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, dim))
    b = rng.standard_normal((n, dim)) @ rng.uniform(-0.5, 0.5, (dim, dim)) + 0.3
    mu1, s1 = fid.statistics(a)
    mu2, s2 = fid.statistics(b)
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, scipy_frechet(mu1, s1, mu2, s2), rtol=1e-5, atol=1e-4)
    assert got > 1.0
    assert abs(fid.frechet_distance(mu1, s1, mu1, s1)) < 1e-6 * dim


def test_one_dimensional_closed_form():
    # FID of N(m1, v1) and N(m2, v2) is (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2.
    got = fid.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]])
    np.testing.assert_allclose(got, 4.0 + 1.0, rtol=1e-12)


def test_statistics_file_round_trip(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    fid.save_statistics(tmp_path / "ref.npz", mu, sigma)
    got_mu, got_sigma = fid.load_statistics(tmp_path / "ref.npz")
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="bad.npz.*'mu' and 'sigma'"):
        fid.load_statistics(tmp_path / "bad.npz")
    # damaged or foreign files: one line naming the file, never a traceback
    good = (tmp_path / "ref.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    np.savez(tmp_path / "shapes.npz", mu=mu, sigma=np.eye(2))
    np.save(tmp_path / "array.npy", mu)
    for name, message in [
        ("cut.npz", "not an .npz of FID statistics"),
        ("shapes.npz", r"mu \(3,\) and sigma \(2, 2\) disagree"),
        ("array.npy", "need arrays 'mu' and 'sigma'"),
    ]:
        with pytest.raises(ValueError, match=name + ".*" + message) as e:
            fid.load_statistics(tmp_path / name)
        assert "\n" not in str(e.value)
