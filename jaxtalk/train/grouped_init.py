"""Flax initialisation with the random initializers run in groups: the same values, a fraction
of the compile time.

A model's init compiles one random initializer per parameter array, and on XLA's CPU backend
each (flax's key derivation, the threefry generator, the distribution's transform) costs tens
of milliseconds to compile. Parameters whose initializers are the same function of their
key (the same jaxpr: same distribution, shape, scale and partitioning, e.g. every 3x3 conv
of one width) are computed by one `lax.map` over their keys instead, so each kind of
initializer compiles once: a tiny MegActor's init (594 arrays) traced, lowered and compiled
in 6.8 s instead of 15.5 s (medians of three alternating rounds, docs/test_suite_time.md).
Each key is flax's own, derived the way `Scope.make_rng` derives it, and the map runs the
unchanged initializer on it: the values are flax's, to the bit where XLA optimises (at -O0,
as train() compiles an init on CPUs, XLA's rounding depends on the surrounding program, so
any two programs may differ in the last bits; tests/train/test_grouped_init.py).

`grouped_initializers(fn)` traces `fn` (anything that calls flax `Module.init`) twice: the
first pass records each new parameter's key and initializer and hands the module zeros, the
second hands it the grouped values, so whatever init computes from its parameters (spectral
norm vectors, caches) sees the real ones. Initializers that do not use their key (zeros,
ones), close over traced values, or have no twin run where flax runs them, in the second
pass, as do those created inside lifted transforms (`nn.remat`), whose keys live in an
inner trace.

The two passes hand out values through the parameter hook of `jaxtalk.models.param_hook`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax.core import scope as flax_scope
from jax.extend import core as jax_core

from jaxtalk.models.init_shapes import remembered
from jaxtalk.models.param_hook import new_params_go_to

# A group's stacked values exist beside the parameters until they are sliced out: bounded so
# that a large model's init does not need twice its parameters' memory.
MAX_GROUP_BYTES = 64 << 20


def _next_key(scope) -> flax_scope.LazyRng:
    """What `scope.make_rng("params")` folds into its key, without folding it (yet)."""
    scope._check_valid()
    scope._validate_trace_level()
    scope.rng_counters["params"] += 1
    return flax_scope.LazyRng.create(scope.rngs["params"], scope.rng_counters["params"])


def _suffix_hash(suffix) -> int:
    """The integer flax folds into a key for `suffix` (flax.core.scope._fold_in_static)."""
    m = hashlib.sha1()
    for x in suffix:
        if flax.config.flax_fix_rng_separator:
            m.update(b"\00")
        if isinstance(x, str):
            m.update(x.encode("utf-8"))
        else:
            m.update(x.to_bytes((x.bit_length() + 7) // 8, byteorder="big"))
    return int.from_bytes(m.digest()[:4], byteorder="big")


class _Record:
    """A parameter the first pass created: where, its key (root and suffix, as flax's
    LazyRng holds them), its initializer and what that returns."""

    def __init__(self, where, lazy, init, args, outer: bool):
        self.where, self.init, self.args, self.outer = where, init, args, outer
        self.root, self.suffix = lazy.rng, lazy.suffix
        # the same for every parameter of this kind: traced once per kind and key type
        self.jaxpr, self.shape, self.text = remembered(
            f"jaxpr of {jax.typeof(self.root)}", self._traced, init, args, {}
        )

    def _traced(self, init, args, kwargs):
        jaxpr, shape = jax.make_jaxpr(self.value_for, return_shape=True)(self.root)
        return jaxpr, shape, str(jaxpr)

    def value_for(self, key):
        return self.init(key, *self.args)

    def nbytes(self) -> int:
        leaves = jax.tree.leaves(self.shape)
        return sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in leaves)

    def group(self):
        """Records with equal groups compute the same function of their key; None: run
        alone (a constant, a closure over traced values, a key of an inner trace)."""
        jaxpr = self.jaxpr.jaxpr
        uses_key = any(v is k for e in jaxpr.eqns for v in e.invars for k in jaxpr.invars)
        if self.jaxpr.consts or not uses_key or not self.outer:
            return None
        return id(self.root), self.text, jax.tree.structure(self.shape)


def _computed_groups(records: list[_Record]) -> dict[int, object]:
    """{record index: value} for the records in groups of two or more: one `lax.map` over
    each group's keys (folded in inside it, as flax folds them)."""
    members: dict = {}
    for i, r in enumerate(records):
        if (group := r.group()) is not None:
            members.setdefault(group, []).append(i)
    values = {}
    for idx in members.values():
        first = records[idx[0]]
        per_chunk = max(1, MAX_GROUP_BYTES // max(first.nbytes(), 1))
        for start in range(0, len(idx), per_chunk):
            chunk = idx[start : start + per_chunk]
            if len(chunk) < 2:
                continue
            hashes = jnp.array([_suffix_hash(records[i].suffix) for i in chunk], jnp.uint32)
            stacked = jax.lax.map(
                lambda h: first.value_for(jax.random.fold_in(first.root, h)), hashes
            )
            for j, i in enumerate(chunk):
                values[i] = jax.tree.map(lambda x, j=j: x[j], stacked)
    return values


def grouped_initializers(fn: Callable) -> Callable:
    """`fn` (which calls flax `Module.init`; traced, e.g. under jit) computing the same values
    with each kind of random parameter initializer compiled once (see the module doc)."""

    @functools.wraps(fn)
    def grouped(*args, **kwargs):
        records: list[_Record] = []
        trace = jax_core.get_opaque_trace_state(convention="flax")  # what scope.trace_level holds

        def record(scope, name, init, init_args):
            outer = scope.trace_level == trace
            r = _Record((scope.path, name), _next_key(scope), init, init_args, outer)
            records.append(r)
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), r.shape)

        with new_params_go_to(record):
            fn(*args, **kwargs)
        values = _computed_groups(records)
        position = iter(range(len(records)))

        def replay(scope, name, init, init_args):
            i = next(position)
            if records[i].where != (scope.path, name):
                raise RuntimeError(
                    f"grouped init: the second trace created {scope.path}/{name} where the "
                    f"first created {records[i].where}: init must be deterministic"
                )
            key = _next_key(scope)  # advances the counter as make_rng does
            return values[i] if i in values else init(key.as_jax_rng(), *init_args)

        with new_params_go_to(replay):
            return fn(*args, **kwargs)

    return grouped
