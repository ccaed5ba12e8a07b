"""The implicit-keypoint losses and the landmark region crops on cases checked by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.losses import keypoints as K


def _translation(dx, dy, batch=1):
    t = K.RandomTransform.identity(batch)
    theta = jnp.tile(jnp.array([[[1.0, 0.0, dx], [0.0, 1.0, dy]]]), (batch, 1, 1))
    return K.RandomTransform(theta, t.tps_weights, t.control_points)


def _ramp(h=9, w=9):
    """(1, H, W, 2): channel 0 is x, channel 1 is y, both in [-1, 1]."""
    return K.coordinate_grid(h, w)[None]


def test_identity_transform_changes_nothing():
    t = K.RandomTransform.identity(2)
    pts = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 7, 2)), jnp.float32)
    np.testing.assert_allclose(t.warp_coordinates(pts), pts, atol=1e-6)
    img = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (2, 8, 8, 3)), jnp.float32)
    np.testing.assert_allclose(t.transform_image(img), img, atol=1e-6)


def test_translation_moves_points_and_resamples_the_image():
    t = _translation(0.5, 0.0)
    np.testing.assert_allclose(t.warp_coordinates(jnp.zeros((1, 1, 2))), [[[0.5, 0.0]]])
    out = t.transform_image(_ramp())
    # pixel at x shows the input at x + 0.5 (clamped to the border at 1)
    xs = np.linspace(-1, 1, 9)
    np.testing.assert_allclose(out[0, 4, :, 0], np.minimum(xs + 0.5, 1.0), atol=1e-5)
    np.testing.assert_allclose(out[0, :, 4, 1], xs, atol=1e-5)  # y untouched


def test_thin_plate_term_by_hand():
    t = K.RandomTransform.identity(1)
    w = np.zeros((1, 25), np.float32)
    w[0, 12] = 0.3  # the centre control point (0, 0)
    t = K.RandomTransform(t.theta, jnp.asarray(w), t.control_points)
    p = np.array([0.2, -0.4], np.float32)
    r = abs(p[0]) + abs(p[1])  # the L1 distance, as FOMM
    shift = 0.3 * r * r * math.log(r + 1e-6)
    got = t.warp_coordinates(jnp.asarray(p)[None, None])
    np.testing.assert_allclose(got[0, 0], p + shift, rtol=1e-5)


def test_random_transform_statistics():
    t = K.RandomTransform.sample(jax.random.PRNGKey(0), 4000)
    noise = np.asarray(t.theta - jnp.eye(2, 3))
    assert abs(noise.std() - 0.05) < 0.002 and abs(noise.mean()) < 0.002
    assert abs(float(t.tps_weights.std()) - 0.005) < 0.0002
    assert t.control_points.shape == (25, 2)


def test_equivariance_loss():
    kp = jnp.asarray(np.random.default_rng(2).uniform(-0.5, 0.5, (2, 5, 3)), jnp.float32)
    t = _translation(0.2, -0.1, batch=2)
    # keypoints of the transformed image sit where the transform pulls them from
    kp_t = kp - jnp.array([0.2, -0.1, 0.0])
    assert float(K.equivariance_loss(kp, kp_t, t)) == pytest.approx(0.0, abs=1e-6)
    # an error of 0.3 on one coordinate of every point: mean over 3 axes = 0.1
    bad = kp_t + jnp.array([0.0, 0.3, 0.0])
    assert float(K.equivariance_loss(kp, bad, t)) == pytest.approx(0.1, rel=1e-5)
    assert float(K.equivariance_loss(kp, bad, t, depth=False)) == pytest.approx(0.15, rel=1e-5)
    # the gradient reaches the transformed image's keypoints (what the extractor learns from)
    g = jax.grad(lambda a: K.equivariance_loss(kp, a, t))(bad)
    assert float(jnp.abs(g).sum()) > 0


def test_keypoint_prior_by_hand():
    far = jnp.array([[[-0.5, 0.0, 0.33], [0.5, 0.0, 0.33]]])  # |d|^2 = 1 > Dt, depth = zt
    assert float(K.keypoint_prior_loss(far)) == pytest.approx(0.0, abs=1e-7)
    same = jnp.array([[[0.1, 0.1, 0.33], [0.1, 0.1, 0.33]]])  # two ordered pairs x Dt
    assert float(K.keypoint_prior_loss(same)) == pytest.approx(0.2, rel=1e-6)
    near = jnp.array([[[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]])  # 2 x (0.1 - 0.04) + |0 - 0.33|
    assert float(K.keypoint_prior_loss(near)) == pytest.approx(0.12 + 0.33, rel=1e-5)
    both = jnp.concatenate([far, near])  # batch mean
    assert float(K.keypoint_prior_loss(both)) == pytest.approx((0.12 + 0.33) / 2, rel=1e-5)


def test_head_pose_and_deformation_prior():
    pred = jnp.array([[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    target = jnp.array([[0.0, 5.0, -5.0], [1.0, 1.0, 1.0]])
    assert float(K.head_pose_loss(pred, target)) == pytest.approx(10.0)
    valid = jnp.array([True, False])
    assert float(K.head_pose_loss(pred, target, valid)) == pytest.approx(20.0)
    assert float(K.head_pose_loss(pred, target, jnp.array([False, False]))) == 0.0
    exp = jnp.array([[0.1, -0.2, 0.3], [0.0, 0.0, -0.6]])
    assert float(K.deformation_prior_loss(exp)) == pytest.approx(0.6, rel=1e-6)


def test_wing_loss_pieces_and_continuity():
    w, e = 10.0, 2.0
    c = w - w * math.log(1 + w / e)
    assert float(K.wing_loss(jnp.array([2.0]), jnp.array([0.0]))) == pytest.approx(
        w * math.log(2.0), rel=1e-6
    )
    assert float(K.wing_loss(jnp.array([-12.0]), jnp.array([0.0]))) == pytest.approx(
        12.0 - c, rel=1e-6
    )
    below, above = (float(K.wing_loss(jnp.array([v]), jnp.array([0.0]))) for v in (9.999, 10.001))
    assert abs(above - below) < 1e-2
    # (x, y) pairs are summed per point
    assert float(K.wing_loss(jnp.array([1.0, 1.0]), jnp.zeros(2))) == pytest.approx(
        2 * w * math.log(1.5), rel=1e-6
    )


def test_landmark_guided_loss_uses_the_first_keypoints():
    lm = jnp.array([[[0.1, 0.2], [-0.3, 0.4]]])
    kp = jnp.concatenate([jnp.pad(lm, ((0, 0), (0, 0), (0, 1))), jnp.ones((1, 3, 3))], 1)
    assert float(K.landmark_guided_loss(kp, lm)) == 0.0
    off = kp.at[0, 1, 0].add(1.0)  # one point off by 1 in x: wing(1) / 2 points
    assert float(K.landmark_guided_loss(off, lm)) == pytest.approx(10 * math.log(1.5) / 2, 1e-5)
    np.testing.assert_allclose(
        K.landmarks_to_grid(jnp.array([[0.0, 0.5, 1.0, 0.25]])), [[[-1.0, 0.0], [1.0, -0.5]]]
    )


def test_landmark_boxes_and_crops():
    lm = jnp.array([[[-0.2, -0.2], [0.2, -0.2], [0.0, 0.0], [-0.1, 0.3], [0.1, 0.3]]])
    face = K.landmark_boxes(lm, K.FIVE_POINT_REGIONS["face"], scale=2.0)
    np.testing.assert_allclose(face, [[0.0, 0.05, 0.5]], atol=1e-6)  # extent 0.5 x 2 / 2
    lip = K.landmark_boxes(lm, K.FIVE_POINT_REGIONS["lip"], scale=2.0)
    np.testing.assert_allclose(lip, [[0.0, 0.3, 0.2]], atol=1e-6)
    tiny = K.landmark_boxes(lm, (2, 2), scale=2.0, min_half=0.05)
    np.testing.assert_allclose(tiny, [[0.0, 0.0, 0.05]], atol=1e-6)
    # a crop of the coordinate ramp is the box's own coordinates
    ramp = _ramp(33, 33)
    crop = K.crop_regions(ramp, jnp.array([[0.5, 0.0, 0.25]]), 5)
    np.testing.assert_allclose(crop[0, 2, :, 0], np.linspace(0.25, 0.75, 5), atol=1e-5)
    np.testing.assert_allclose(crop[0, :, 2, 1], np.linspace(-0.25, 0.25, 5), atol=1e-5)
    g = jax.grad(lambda x: K.crop_regions(x, jnp.array([[0.5, 0.0, 0.25]]), 5).sum())(ramp)
    assert float(g[0, :, :8].sum()) == 0.0 and float(g.sum()) > 0  # only the box's pixels


def test_hinge_gan_and_feature_matching():
    from jaxtalk.losses import adversarial

    real, fake = jnp.array([2.0, 0.5, -1.0]), jnp.array([-2.0, 0.0, 1.5])
    # relu(1 - real) = (0, 0.5, 2); relu(1 + fake) = (0, 1, 2.5)
    assert float(adversarial.d_hinge_loss(real, fake)) == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert float(adversarial.g_hinge_loss(fake)) == pytest.approx(0.5 / 3)  # -mean(fake)
    a = [jnp.ones((2, 4)), jnp.zeros((2, 2))]
    b = [jnp.full((2, 4), 3.0), jnp.full((2, 2), -0.5)]
    assert float(adversarial.feature_matching_loss(a, b)) == pytest.approx(2.5)
    g = jax.grad(lambda r: adversarial.feature_matching_loss([r], [b[0]]))(a[0])
    assert float(jnp.abs(g).sum()) == 0.0  # the real side is a target
    with pytest.raises(ValueError, match="2 real but 1 fake"):
        adversarial.feature_matching_loss(a, b[:1])
