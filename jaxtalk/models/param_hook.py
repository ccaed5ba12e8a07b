"""flax's `Scope.param` as jaxtalk runs it, installed when this module is imported.

- A parameter the scope already holds (a module applied) is checked against the shapes its
  initializer gives, remembered per kind of initializer (`init_shapes`) instead of traced
  for every parameter of every apply, as flax does: the same errors, about half the trace
  time of a forward pass.
- A new parameter can be handed a value other than its initializer's through
  `new_params_go_to(handler)`: `jaxtalk.train.grouped_init` computes each kind of
  initializer once for all its parameters, and `eval_shape_init` (an init traced for its
  variables' shapes alone: the converters' `variable_shapes`, release-size checks) gives
  each zeros in its initializer's remembered shape, without deriving its key or tracing
  the initializer.

Outside a handler (on this thread) it is flax's own Scope.param but for the remembered check.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import meta
from flax.core import scope as flax_scope

from jaxtalk.models.init_shapes import init_shapes, init_structure

_mode = threading.local()  # .handler: None (plain flax) or what new parameters get
_flax_param = flax_scope.Scope.param


def _param(scope, name, init_fn, *init_args, unbox=True, **init_kwargs):
    handler = getattr(_mode, "handler", None)
    new = (
        handler is not None
        and not scope.has_variable("params", name)
        and scope.is_mutable_collection("params")
        and scope.has_rng("params")
    )
    if not new:
        if scope.has_variable("params", name):
            return _existing_param(scope, name, init_fn, init_args, init_kwargs, unbox)
        return _flax_param(scope, name, init_fn, *init_args, unbox=unbox, **init_kwargs)
    scope.reserve(name, "params")
    value = handler(scope, name, functools.partial(init_fn, **init_kwargs), init_args)
    scope.put_variable("params", name, value)
    return meta.unbox(value) if unbox else value


def _existing_param(scope, name, init_fn, init_args, init_kwargs, unbox):
    """flax's Scope.param for a parameter the scope holds (as when a module is applied): its
    value, checked against the shapes its initializer gives (init_shapes: remembered, not
    traced for every parameter of every apply)."""
    scope.reserve(name, "params")
    value = scope.get_variable("params", name)
    if unbox:
        value = meta.unbox(value)
    for leaf, want in zip(jax.tree.leaves(value), init_shapes(init_fn, init_args, init_kwargs)):
        if np.shape(leaf) != want:
            raise flax.errors.ScopeParamShapeError(name, scope.path_text, np.shape(leaf), want)
    return value


flax_scope.Scope.param = _param


@contextlib.contextmanager
def new_params_go_to(handler):
    """Within: this thread's new parameters take the value handler(scope, name, init,
    init_args) returns (init(key, *init_args) is flax's initializer call)."""
    outer, _mode.handler = getattr(_mode, "handler", None), handler
    try:
        yield
    finally:
        _mode.handler = outer


def _zeros_like_init(scope, name, init, init_args):
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), init_structure(init, init_args, {}))


def eval_shape_init(init_fn: Callable, *args, **kwargs):
    """`jax.eval_shape(init_fn, *args, **kwargs)` for a flax init (`Module.init`) traced for
    its variables' shapes only: each new parameter is zeros in what its initializer returns
    (remembered per kind of initializer, init_shapes), so no key is derived and no random
    initializer traced for it (a third of a release-size init's trace)."""
    with new_params_go_to(_zeros_like_init):
        return jax.eval_shape(init_fn, *args, **kwargs)
