"""Weight-only quantities that inference computes once per model instead of every call.

Some layers derive arrays from their weights alone on every call: the equalized-learning-rate
layers scale their raw kernels, the modulated convs sum their squared kernel taps for
demodulation, LIA's motion directions orthonormalise their weight by QR, CPU strided convs
slice their kernels into phases. Training needs them recomputed (the weights change every
step); inference with fixed weights does not. A layer wraps such an array in `cached(self, name, compute)`; `weight_cache(model, variables, ...)`
runs the model once to collect them into the `WEIGHT_CACHE` collection, and applying the model
with `{**variables, WEIGHT_CACHE: cache}` reads them instead of computing them (on XLA's CPU
backend the tap sums alone, a matmul against ones there, were a tenth of LIA's frame at batch
1). Without that collection, as in training and in init, nothing is cached or read. A cache
is for inference only: what it holds carries no gradient to the weights it was made from.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

WEIGHT_CACHE = "weight_cache"


def _collecting(module: nn.Module) -> bool:
    """Whether `weight_cache` is collecting (init makes every collection mutable)."""
    return module.is_mutable_collection(WEIGHT_CACHE) and not module.is_initializing()


def cached(module: nn.Module, name: str, compute: Callable[[], jax.Array]) -> jax.Array:
    """`compute()`, or its value from the module's weight cache when one is given (or
    stored there while `weight_cache` collects)."""
    if module.has_variable(WEIGHT_CACHE, name):
        return module.get_variable(WEIGHT_CACHE, name)
    value = compute()
    if _collecting(module):
        module.put_variable(WEIGHT_CACHE, name, value)
    return value


def cached_only(module: nn.Module, name: str, compute: Callable[[], Any]) -> Any | None:
    """Like `cached`, for an array only inference needs: None without a weight cache."""
    if module.has_variable(WEIGHT_CACHE, name) or _collecting(module):
        return cached(module, name, compute)
    return None


def weight_cache(model: nn.Module, variables: dict, *args, method=None, **kwargs) -> dict:
    """The `WEIGHT_CACHE` collection of `model` with `variables`, collected by running
    `method` once on example inputs `args` (any of the right shapes; only the layers that run
    are cached). It belongs to these weights: compute it again when they change."""

    def run(v, *a):
        return model.apply(v, *a, method=method, mutable=[WEIGHT_CACHE], **kwargs)[1]

    return dict(jax.jit(run)(variables, *args)).get(WEIGHT_CACHE, {})
