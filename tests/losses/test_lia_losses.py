"""GAN, AAM-Softmax, CLUB and VGG-pyramid perceptual losses against numpy."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.losses import adversarial, metric_learning, mutual_information, perceptual
from jaxtalk.models.param_hook import eval_shape_init

RNG = np.random.default_rng(0)


def softplus(x):
    return np.log1p(np.exp(x))


def test_nonsaturating_losses_and_r1():
    real, fake = RNG.standard_normal((4, 1)), RNG.standard_normal((4, 1))
    np.testing.assert_allclose(
        adversarial.g_nonsaturating_loss(jnp.asarray(fake)), softplus(-fake).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(
        adversarial.d_nonsaturating_loss(jnp.asarray(real), jnp.asarray(fake)),
        softplus(-real).mean() + softplus(fake).mean(),
        rtol=1e-5,
    )
    w = jnp.asarray(RNG.standard_normal((3,)).astype(np.float32))
    x = jnp.asarray(RNG.standard_normal((5, 3)).astype(np.float32))
    # D(x) = x @ w: grad is w for every sample -> R1 = ||w||^2
    np.testing.assert_allclose(adversarial.r1_penalty(lambda v: v @ w, x), float(w @ w), rtol=1e-5)
    np.testing.assert_allclose(
        adversarial.d_r1_loss(lambda v: v @ w, x, 10.0, 16), 5.0 * float(w @ w) * 16, rtol=1e-5
    )


def test_aam_softmax_matches_numpy():
    emb = RNG.standard_normal((6, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1, 0])
    head = metric_learning.AAMSoftmax(4, margin=0.2, scale=30.0)
    v = jax.tree_util.tree_map(
        np.asarray, __import__("flax").linen.unbox(head.init(jax.random.PRNGKey(0), emb, labels))
    )
    loss, acc = head.apply(v, emb, labels)
    w = v["params"]["weight"]
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0))
    sin = np.sqrt(np.clip(1 - cos**2, 0, 1))
    m = 0.2
    phi = cos * math.cos(m) - sin * math.sin(m)
    phi = np.where(cos - math.cos(math.pi - m) > 0, phi, cos - math.sin(math.pi - m) * m)
    onehot = np.eye(4)[labels]
    logits = 30 * (onehot * phi + (1 - onehot) * cos)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(float(loss), -(logp * onehot).sum(1).mean(), rtol=1e-4)
    assert float(acc) == pytest.approx(np.mean(cos.argmax(1) == labels), abs=1e-6)
    # the margin makes the loss larger than plain scaled softmax
    plain = 30 * cos
    plain_logp = plain - np.log(np.exp(plain).sum(1, keepdims=True))
    assert float(loss) > -(plain_logp * onehot).sum(1).mean()


def test_club_bound_and_learning_loss_match_numpy():
    x = RNG.standard_normal((5, 6)).astype(np.float32)
    y = RNG.standard_normal((5, 3)).astype(np.float32)
    club = mutual_information.CLUB(y_dim=3, hidden=8)
    v = __import__("flax").linen.unbox(club.init(jax.random.PRNGKey(0), x))
    mu, logvar = (np.asarray(a) for a in club.apply(v, x))
    assert np.all(np.abs(logvar) <= 1)  # tanh head
    pos = -((mu - y) ** 2) / 2 / np.exp(logvar)
    neg = -((y[None] - mu[:, None]) ** 2).mean(1) / 2 / np.exp(logvar)
    np.testing.assert_allclose(
        club.apply(v, x, y, method="mi_upper_bound"), (pos.sum(-1) - neg.sum(-1)).mean(), rtol=1e-4
    )
    ll = (-((mu - y) ** 2) / np.exp(logvar) - logvar).sum(-1).mean()
    np.testing.assert_allclose(club.apply(v, x, y, method="learning_loss"), -ll, rtol=1e-4)
    s = club.apply(v, x, y, jax.random.PRNGKey(1), method="mi_upper_bound_sampled")
    assert np.isfinite(float(s))
    # one estimator step on matched pairs lowers its loss
    g = jax.grad(lambda p: club.apply({"params": p}, x, y, method="learning_loss"))(v["params"])
    p2 = jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, v["params"], g)
    assert club.apply({"params": p2}, x, y, method="learning_loss") < -ll


def test_antialias_pyramid_matches_fomm_filter():
    taps, ka, kb = perceptual.gaussian_taps(0.25)
    assert len(taps) == 13 and ka == kb == 6  # sigma 1.5 -> 2*round(6)+1
    x = RNG.standard_normal((1, 16, 16, 3)).astype(np.float32)
    k2 = np.outer(taps, taps)
    xp = np.pad(x, [(0, 0), (6, 6), (6, 6), (0, 0)])
    want = np.zeros_like(x)
    for i in range(13):
        for j in range(13):
            want += xp[:, i : i + 16, j : j + 16] * k2[i, j]
    got = perceptual.antialias_downsample(jnp.asarray(x), 0.25)
    np.testing.assert_allclose(np.asarray(got), want[:, ::4, ::4], atol=1e-5)
    assert perceptual.antialias_downsample(jnp.asarray(x), 1.0) is not None


def test_pyramid_perceptual_loss_with_a_stub_network():
    w = jnp.asarray(RNG.standard_normal((3, 4)).astype(np.float32))

    def features(x):  # 5 "layers"
        h = jnp.tanh(x @ w)
        return [h * (i + 1) for i in range(5)]

    a = jnp.asarray(RNG.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))
    b = jnp.asarray(RNG.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32))

    @jax.jit  # one program (op by op, every scale's ops compile one by one)
    def results(a, b):
        loss = partial(perceptual.pyramid_perceptual_loss, features)
        want = 0.0  # by hand: sum over scales and layers of 10 * mean |f(a) - f(b)|
        for s in perceptual.SCALES:
            fa = features(perceptual.normalize_for_vgg(perceptual.antialias_downsample(a, s)))
            fb = features(perceptual.normalize_for_vgg(perceptual.antialias_downsample(b, s)))
            want += sum(10 * jnp.mean(jnp.abs(p - q)) for p, q in zip(fa, fb))
        grad_target = jax.grad(lambda t: loss(a, t))(b)
        grad_input = jax.grad(lambda t: loss(t, b))(a)
        return loss(a, a), loss(a, b), want, grad_target, grad_input

    same, loss, want, gb, ga = results(a, b)
    assert float(same) == 0.0
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)
    assert float(jnp.abs(gb).sum()) == 0.0  # the target is stop-gradient'ed
    assert float(jnp.abs(ga).sum()) > 0.0


def test_vgg19_perceptual_module_builds_up_to_relu5_1():
    m = perceptual.VGG19PerceptualLoss()
    x = jnp.zeros((1, 32, 32, 3))
    shapes = eval_shape_init(m.init, jax.random.PRNGKey(0), x, x)
    names = set(__import__("flax").linen.unbox(shapes)["params"]["vgg"])
    assert "conv5_1" in names and "conv5_2" not in names and len(names) == 13
