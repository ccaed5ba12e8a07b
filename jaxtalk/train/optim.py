"""Optax chains and learning-rate schedules from config (configs/common.py:optimizer_config)."""

from __future__ import annotations

import re

import jax
import optax


def schedule(opt_config, total_steps: int) -> optax.Schedule:
    lr = opt_config.lr
    decay_steps = opt_config.decay_steps or total_steps
    warmup = opt_config.warmup_steps
    end = lr * opt_config.end_lr_factor
    if opt_config.schedule == "constant":
        main = optax.constant_schedule(lr)
    elif opt_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(
            lr, max(decay_steps - warmup, 1), alpha=opt_config.end_lr_factor
        )
    elif opt_config.schedule == "linear":
        main = optax.linear_schedule(lr, end, max(decay_steps - warmup, 1))
    else:
        raise ValueError(f"unknown schedule {opt_config.schedule!r} (constant, cosine, linear)")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def _path_name(group: str, path) -> str:
    """'group/a/b' for a pytree key path inside `group` (what the patterns match)."""
    return "/".join([group] + [str(getattr(k, "key", getattr(k, "idx", k))) for k in path])


def freeze(
    tx: optax.GradientTransformation, group: str, patterns: tuple[str, ...]
) -> optax.GradientTransformation:
    """Zero updates (and keep no optimizer state) for params whose 'group/a/b' path matches.

    This freezes sub-trees inside a trained group, e.g. a pretrained encoder while its
    decoder trains; a whole group is frozen by giving it no optimizer.
    """
    regexes = [re.compile(p) for p in patterns]
    if not regexes:
        return tx

    def labels(params):
        def label(path, _):
            return (
                "frozen"
                if any(r.fullmatch(_path_name(group, path)) for r in regexes)
                else "trained"
            )

        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def parse_lr_multipliers(entries) -> list[tuple[str, float]]:
    """config.lr_multipliers entries 'REGEX=FACTOR' -> [(regex, factor)]."""
    rules = []
    for entry in entries:
        pattern, _, factor = str(entry).rpartition("=")
        try:
            value = float(factor)
            re.compile(pattern)
        except (ValueError, re.error):
            pattern = ""
        if not pattern:
            raise ValueError(
                f"config.lr_multipliers entry {entry!r}: expected "
                "'REGEX=FACTOR', e.g. 'generator/model/enc/net_decouping/.*=0.01'"
            )
        rules.append((pattern, value))
    return rules


def scale_learning_rate(
    tx: optax.GradientTransformation, group: str, rules: list[tuple[str, float]]
) -> optax.GradientTransformation:
    """Multiply the updates of params whose 'group/a/b' path matches a rule's regex by its
    factor (the first matching rule wins): a per-sub-tree learning rate. Adam's step is the
    same size for every parameter, so layers whose weights live on a smaller scale than the
    rest (plain nn.Linear next to equalized-lr layers) change relatively faster; this evens
    that out."""
    compiled = [(re.compile(p), f) for p, f in rules]
    if not compiled:
        return tx

    def scaled(path, u):
        name = _path_name(group, path)
        f = next((f for r, f in compiled if r.fullmatch(name)), 1.0)
        return u if f == 1.0 else u * f

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        return jax.tree_util.tree_map_with_path(scaled, updates), state

    return optax.GradientTransformation(tx.init, update)


def flattened(opt_config) -> bool:
    """Whether the optimizer updates its group as one vector (run configs saved before the
    `flatten` field: per array)."""
    return bool(opt_config.get("flatten", False))


def optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
    lr = schedule(opt_config, total_steps)
    name = opt_config.name
    if name == "adam":
        opt = optax.adam(lr, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps)
    elif name == "adamw":
        opt = optax.adamw(
            lr,
            b1=opt_config.b1,
            b2=opt_config.b2,
            eps=opt_config.eps,
            weight_decay=opt_config.weight_decay,
        )
    elif name == "sgd":
        opt = optax.sgd(lr, momentum=opt_config.b1 or None)
    elif name == "lion":
        opt = optax.lion(
            lr, b1=opt_config.b1, b2=opt_config.b2, weight_decay=opt_config.weight_decay
        )
    else:
        raise ValueError(f"unknown optimizer {name!r} (adam, adamw, sgd, lion)")
    if opt_config.clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(opt_config.clip_norm), opt)
    if flattened(opt_config):
        opt = optax.flatten(opt)
    return opt
