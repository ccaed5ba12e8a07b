"""The metric registry, the Metric implementations and the imported-weights store."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from jaxtalk.convert import releases, weights
from jaxtalk.evaluate import fid, metric, pose_expression, registry, sync
from tests.evaluate.test_lpips import write_lpips_files


def batches(rng, n_batches=2, size=4):
    for _ in range(n_batches):
        target = rng.uniform(size=(size, 24, 24, 3)).astype(np.float32)
        prediction = np.clip(target + 0.1 * rng.standard_normal(target.shape), 0, 1)
        yield {"prediction": prediction.astype(np.float32), "target": target}


def test_pixel_metrics_average_over_all_samples():
    data = list(batches(np.random.default_rng(0)))
    metrics = {name: registry.create(name) for name in ("psnr", "ssim", "l1")}
    for batch in data:
        for m in metrics.values():
            assert isinstance(m, metric.Metric)
            m.update(batch)
    pairs = [(p, t) for b in data for p, t in zip(b["prediction"], b["target"])]
    want_ssim = np.mean(
        [
            structural_similarity(
                p.astype(np.float64),
                t.astype(np.float64),
                channel_axis=-1,
                data_range=1,
                gaussian_weights=True,
                sigma=1.5,
            )
            for p, t in pairs
        ]
    )
    want_psnr = np.mean([10 * np.log10(1 / np.mean((p - t) ** 2)) for p, t in pairs])
    assert metrics["ssim"].compute()["ssim"] == pytest.approx(want_ssim, abs=1e-4)
    assert metrics["psnr"].compute()["psnr"] == pytest.approx(want_psnr, rel=1e-5)
    assert metrics["l1"].compute()["l1"] == pytest.approx(
        np.mean([np.abs(p - t).mean() for p, t in pairs]), rel=1e-5
    )
    metrics["l1"].reset()
    with pytest.raises(ValueError, match="before any update"):
        metrics["l1"].compute()
    with pytest.raises(KeyError, match="needs batch keys"):
        metrics["psnr"].update({"prediction": data[0]["prediction"]})


def test_missing_weights_name_the_file_and_the_import_command(tmp_path):
    with pytest.raises(registry.MissingWeightsError) as error:
        registry.create("lpips_alex", weights_dir=tmp_path)
    message = str(error.value)
    assert str(tmp_path / "lpips_alex.safetensors") in message
    assert "jaxtalk import --release=lpips_alex --checkpoint=<path> --backbone=<path>" in message
    built, errors = registry.create_many(["psnr", "csim", "fid", "nope"], weights_dir=tmp_path)
    assert list(built) == ["psnr"]
    assert "arcface_r100" in errors["csim"] and "inception_fid" in errors["fid"]
    assert "unknown metric" in errors["nope"]


def test_import_release_then_create_lpips(tmp_path):
    rng = np.random.default_rng(1)
    write_lpips_files(tmp_path, "alex", rng)
    with pytest.raises(ValueError, match="missing \\['backbone'\\]"):
        releases.import_release("lpips_alex", tmp_path / "alex.pth", weights_dir=tmp_path)
    path = releases.import_release(
        "lpips_alex",
        tmp_path / "alex.pth",
        weights_dir=tmp_path,
        backbone=str(tmp_path / "alex_backbone.pth"),
    )
    assert path == str(tmp_path / "lpips_alex.safetensors")
    loaded = weights.load(path)
    assert loaded["model_config"] == {"net": "alex", "version": "0.1"}
    assert loaded["release"] == "lpips_alex"
    lpips_metric = registry.create("lpips_alex", weights_dir=tmp_path)
    batch = next(batches(rng, 1, 2))
    batch = {k: np.repeat(np.repeat(v, 3, 1), 3, 2) for k, v in batch.items()}  # 72x72
    lpips_metric.update(batch)
    value = lpips_metric.compute()["lpips_alex"]
    assert np.isfinite(value) and value > 0


def test_weights_store_round_trip(tmp_path):
    variables = {
        "params": {"a": {"kernel": np.ones((2, 3), np.float32)}},
        "batch_stats": {"bn": {"mean": np.arange(3, dtype=np.float32)}},
        "model_config": {"arch": "x", "sizes": [1, 2]},
    }
    weights.save(variables, tmp_path / "w.safetensors", release="r")
    back = weights.load(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(back["params"]["a"]["kernel"], variables["params"]["a"]["kernel"])
    np.testing.assert_array_equal(back["batch_stats"]["bn"]["mean"], np.arange(3))
    assert back["model_config"] == variables["model_config"] and back["release"] == "r"


def test_aed_apd_with_a_registered_extractor(monkeypatch):
    def fake_extractor(images):
        images = np.asarray(images)
        return {"expression": images.mean(axis=(1, 2)), "pose": images[:, 0, 0, :] * 90}

    monkeypatch.setattr(pose_expression, "_EXTRACTORS", {})
    pose_expression.register_extractor("fake", lambda weights, **_: fake_extractor)
    assert pose_expression.extractor_names() == ["fake"]
    m = registry.create("aed_apd", extractor="fake")
    data = list(batches(np.random.default_rng(2)))
    for batch in data:
        m.update({"prediction": batch["prediction"], "driving": batch["target"]})
    p = np.concatenate([b["prediction"] for b in data])
    t = np.concatenate([b["target"] for b in data])
    got = m.compute()
    assert got["aed"] == pytest.approx(np.abs(p.mean((1, 2)) - t.mean((1, 2))).mean(), rel=1e-5)
    assert got["apd"] == pytest.approx(np.abs(p[:, 0, 0] - t[:, 0, 0]).mean() * 90, rel=1e-5)
    with pytest.raises(KeyError, match="no motion extractor 'missing'"):
        registry.create("aed_apd", extractor="missing")


def test_fid_metric_streams_both_sets_or_uses_reference(tmp_path, monkeypatch):
    monkeypatch.setattr(
        fid,
        "inception_features",
        lambda variables, images: np.asarray(images).reshape(len(images), -1)[:, :6],
    )
    data = list(batches(np.random.default_rng(3), 3, 5))
    m = metric.FrechetInceptionDistance(variables=None)
    for batch in data:
        m.update(batch)
    gen = np.concatenate([b["prediction"].reshape(5, -1)[:, :6] for b in data])
    real = np.concatenate([b["target"].reshape(5, -1)[:, :6] for b in data])
    want = fid.frechet_distance(*fid.statistics(gen), *fid.statistics(real))
    assert m.compute()["fid"] == pytest.approx(want, rel=1e-9)
    fid.save_statistics(tmp_path / "real.npz", *fid.statistics(real))
    m = metric.FrechetInceptionDistance(None, reference_statistics=str(tmp_path / "real.npz"))
    assert m.inputs == ("prediction",)
    for batch in data:
        m.update({"prediction": batch["prediction"]})
    assert m.compute()["fid"] == pytest.approx(want, rel=1e-9)

    # Cross-reenactment has no target: the real frames are the sources (as the default
    # reference wherever there is no target, or by reference_key everywhere).
    sources = [np.roll(b["target"], 1, axis=0) for b in data]
    want = fid.frechet_distance(
        *fid.statistics(gen),
        *fid.statistics(np.concatenate([s.reshape(5, -1)[:, :6] for s in sources])),
    )
    inception = tmp_path / "inception_fid.safetensors"  # features are faked above
    weights.save({"params": {"x": np.zeros(1, np.float32)}}, inception, release="inception_fid")
    m = registry.create("fid", weights=inception)
    assert set(m.inputs) <= {"prediction", "source", "driving"}  # defined in cross mode
    for batch, source in zip(data, sources):
        m.update({"prediction": batch["prediction"], "source": source, "driving": source})
    assert m.compute()["fid"] == pytest.approx(want, rel=1e-9)
    m = registry.create("fid", weights=inception, reference_key="source")
    assert m.inputs == ("prediction", "source")
    for batch, source in zip(data, sources):
        m.update({**batch, "source": source})  # the target is there, and not read
    assert m.compute()["fid"] == pytest.approx(want, rel=1e-9)
    with pytest.raises(KeyError, match="'target' or 'source'"):
        metric.FrechetInceptionDistance(None).update({"prediction": data[0]["prediction"]})
    with pytest.raises(ValueError, match="reference_statistics or reference_key"):
        metric.FrechetInceptionDistance(None, str(tmp_path / "real.npz"), "source")
    # a statistics file that is not there: the metric is skipped with why, as missing weights
    options = {"fid": {"reference_statistics": str(tmp_path / "none.npz")}}
    built, errors = registry.create_many(["fid"], str(tmp_path), options)
    assert not built and "none.npz: no such FID statistics file" in errors["fid"]


def test_lse_metric_averages_videos(monkeypatch):
    results = iter([{"lse_d": 8.0, "lse_c": 2.0}, {"lse_d": 6.0, "lse_c": 4.0}])
    monkeypatch.setattr(sync, "lse", lambda *args, **kwargs: next(results))
    m = metric.LipSyncError(variables=None)
    for _ in range(2):
        m.update({"video": np.zeros((10, 4, 4, 3)), "audio": np.zeros(6400)})
    assert m.compute() == {"lse_d": 7.0, "lse_c": 3.0}


def test_every_weighted_metric_has_a_release():
    known = releases.releases()
    for spec in registry.METRICS.values():
        assert spec.release is None or spec.release in known
    for release in known.values():
        assert callable(__import__(release.converter, fromlist=["_"]).import_checkpoint)
