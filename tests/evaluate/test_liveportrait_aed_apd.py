"""AED / APD with LivePortrait's motion extractor outputs: bins -> degrees, exp deltas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.evaluate import pose_expression

# Bins -> degrees is the model family's function; it lands with the LivePortrait models.
pytest.importorskip("jaxtalk.models.liveportrait.keypoints")


def _motion_fn(seen):
    """A stand-in for M: expression = the mean colour (x 21 keypoints), pose bins peaked at
    index 30 + 10 * mean red (yaw), 33 (pitch), 32 (roll)."""

    def motion(images):
        seen.append(images.shape)
        colour = images.mean((1, 2))
        yaw_index = jnp.round(30 + 10 * colour[:, 0]).astype(jnp.int32)
        peak = lambda i: 100.0 * jax.nn.one_hot(i, 66)  # noqa: E731
        n = images.shape[0]
        return {
            "exp": jnp.tile(colour, (1, 21)),
            "yaw": peak(yaw_index),
            "pitch": peak(jnp.full((n,), 33)),
            "roll": peak(jnp.full((n,), 32)),
            "kp": jnp.zeros((n, 63)),
        }

    return motion


def test_liveportrait_extractor_distances_by_hand():
    seen = []
    extractor = pose_expression.from_liveportrait_motion(_motion_fn(seen), input_size=16)
    pred = jnp.concatenate([jnp.full((1, 32, 32, 3), 0.2), jnp.full((1, 32, 32, 3), 0.9)])
    target = jnp.concatenate([jnp.full((1, 32, 32, 3), 0.5), jnp.full((1, 32, 32, 3), 0.9)])
    motion = extractor(target)
    assert seen[-1] == (2, 16, 16, 3)  # resized to the extractor's input
    # index 35 -> 35 * 3 - 97.5 = 7.5 degrees of yaw; pitch 1.5, roll -1.5
    np.testing.assert_allclose(motion["pose"][0], [7.5, 1.5, -1.5], atol=1e-3)
    got = pose_expression.expression_pose_distances(extractor, pred, target)
    # frame 0: colour 0.2 vs 0.5 -> AED 0.3; yaw index 32 vs 35 -> 9 degrees / 3 angles
    np.testing.assert_allclose(got["aed"], [0.3, 0.0], atol=1e-5)
    np.testing.assert_allclose(got["apd"], [3.0, 0.0], atol=1e-3)


def test_liveportrait_motion_takes_degrees_too():
    info = {
        "exp": jnp.ones((2, 21, 3)),
        "yaw": jnp.array([[10.0], [20.0]]),
        "pitch": jnp.array([1.0, 2.0]),
        "roll": jnp.zeros((2, 1)),
    }
    out = pose_expression.liveportrait_motion(info)
    assert out["expression"].shape == (2, 63)
    np.testing.assert_allclose(out["pose"], [[10.0, 1.0, 0.0], [20.0, 2.0, 0.0]])
    with pytest.raises(KeyError):
        pose_expression.liveportrait_motion({"exp": info["exp"]})


def test_aed_apd_defaults_to_liveportrait_m_from_its_weights_file(tmp_path, monkeypatch):
    """`jaxtalk eval --metrics=aed_apd` measures with M of the imported LivePortrait file:
    its expression is M's exp output, a frame against itself is 0, and without the file the
    metric names it and the import command."""
    from jaxtalk.evaluate import registry
    from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
    from tests.inference.test_liveportrait_animator import SIZE, TINY, save, tiny_variables

    monkeypatch.setenv("JAXTALK_WEIGHTS_DIR", str(tmp_path / "none"))
    with pytest.raises(registry.MissingWeightsError, match="liveportrait.*--release=liveportrait"):
        registry.create("aed_apd")
    variables = tiny_variables()
    path = save(tmp_path / "lp.safetensors", variables)
    (tmp_path / "weights").mkdir()
    save(tmp_path / "weights" / "liveportrait.safetensors", variables)
    metric = registry.create("aed_apd", weights_dir=str(tmp_path / "weights"))  # by its name
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32) for _ in range(2))
    metric.update({"prediction": a, "driving": a})
    assert metric.compute() == {"aed": 0.0, "apd": 0.0}
    metric = registry.create("aed_apd", extractor_weights=path)
    metric.update({"prediction": a, "driving": b})
    m = MotionExtractor(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY["motion"].items()}
    )
    exp = lambda x: np.asarray(m.apply({"params": variables["params"]["motion"]}, x)["exp"])  # noqa: E731
    aed = np.abs(exp(a).reshape(2, -1) - exp(b).reshape(2, -1)).mean()
    assert metric.compute()["aed"] == pytest.approx(aed, rel=1e-4) and aed > 0
