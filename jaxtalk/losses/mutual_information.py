"""CLUB: a contrastive log-ratio upper bound of mutual information (Cheng et al., 2020).

AniTalker minimises the MI between identity and motion latents with CLUB. A variational
q(y|x) = N(mu(x), exp(logvar(x))) is fitted by the estimator (its own optimizer,
`CLUB.learning_loss` = -log-likelihood on (x, y) pairs), and the generator minimises the
bound `CLUB.mi_upper_bound` (estimator params held fixed by the train step):

  I_CLUB = E_p(x,y)[log q(y|x)] - E_p(x)E_p(y)[log q(y|x)]

computed over all B x B pairs (`mi_upper_bound`) or with one shuffled negative per sample
(`mi_upper_bound_sampled`, CLUBSample). The nets follow the reference implementation:
mu = Linear(x, h/2) - ReLU - Linear(h/2, y); logvar = same + Tanh.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class _Head(nn.Module):
    hidden: int
    features: int
    tanh: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(param_dtype=self.param_dtype)
        h = nn.Dense(
            self.hidden,
            name="fc_in",
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("embed", "mlp")
            ),
            **kw,
        )(x)
        h = nn.Dense(
            self.features,
            name="fc_out",
            kernel_init=nn.with_logical_partitioning(
                nn.initializers.lecun_normal(), ("mlp", "embed")
            ),
            **kw,
        )(jax.nn.relu(h))
        return jnp.tanh(h) if self.tanh else h


class CLUB(nn.Module):
    """q(y|x) estimator. `__call__(x)` -> (mu, logvar); see the methods for the losses."""

    y_dim: int
    hidden: int = 512
    param_dtype: Any = jnp.float32

    def setup(self):
        self.p_mu = _Head(self.hidden // 2, self.y_dim, param_dtype=self.param_dtype)
        self.p_logvar = _Head(self.hidden // 2, self.y_dim, tanh=True, param_dtype=self.param_dtype)

    def __call__(self, x):
        x = x.astype(jnp.float32)
        return self.p_mu(x), self.p_logvar(x)

    def log_likelihood(self, x, y):
        """Mean over samples of sum_d [-(mu - y)^2 / exp(logvar) - logvar] (unnormalised)."""
        mu, logvar = self(x)
        y = y.astype(jnp.float32)
        return jnp.mean(jnp.sum(-jnp.square(mu - y) / jnp.exp(logvar) - logvar, axis=-1))

    def learning_loss(self, x, y):
        """Estimator side: minimise -log q(y|x) (pass stop_gradient'ed latents)."""
        return -self.log_likelihood(x, y)

    def mi_upper_bound(self, x, y):
        """Generator side: the CLUB bound over all B x B pairs."""
        mu, logvar = self(x)
        y = y.astype(jnp.float32)
        positive = -jnp.square(mu - y) / 2.0 / jnp.exp(logvar)
        # negative[i] = mean_j -(y_j - mu_i)^2 / 2 / exp(logvar_i)
        diff = y[None, :, :] - mu[:, None, :]
        negative = -jnp.mean(jnp.square(diff), axis=1) / 2.0 / jnp.exp(logvar)
        return jnp.mean(jnp.sum(positive, -1) - jnp.sum(negative, -1))

    def mi_upper_bound_sampled(self, x, y, rng):
        """CLUBSample: one random negative per sample (linear in B)."""
        mu, logvar = self(x)
        y = y.astype(jnp.float32)
        perm = jax.random.permutation(rng, y.shape[0])
        positive = -jnp.square(mu - y) / jnp.exp(logvar)
        negative = -jnp.square(mu - y[perm]) / jnp.exp(logvar)
        return jnp.mean(jnp.sum(positive, -1) - jnp.sum(negative, -1)) / 2.0
