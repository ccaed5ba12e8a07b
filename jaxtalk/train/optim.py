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
        main = optax.cosine_decay_schedule(lr, max(decay_steps - warmup, 1), alpha=opt_config.end_lr_factor)
    elif opt_config.schedule == "linear":
        main = optax.linear_schedule(lr, end, max(decay_steps - warmup, 1))
    else:
        raise ValueError(f"unknown schedule {opt_config.schedule!r} (constant, cosine, linear)")
    if warmup:
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
    return main


def freeze(tx: optax.GradientTransformation, group: str,
           patterns: tuple[str, ...]) -> optax.GradientTransformation:
    """Zero updates (and keep no optimizer state) for params whose 'group/a/b' path matches.

    This freezes sub-trees inside a trained group, e.g. a pretrained encoder while its
    decoder trains; a whole group is frozen by giving it no optimizer.
    """
    regexes = [re.compile(p) for p in patterns]
    if not regexes:
        return tx

    def labels(params):
        def label(path, _):
            name = "/".join([group] + [str(getattr(k, "key", getattr(k, "idx", k))) for k in path])
            return "frozen" if any(r.fullmatch(name) for r in regexes) else "trained"
        return jax.tree_util.tree_map_with_path(label, params)

    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def optimizer(opt_config, total_steps: int) -> optax.GradientTransformation:
    lr = schedule(opt_config, total_steps)
    name = opt_config.name
    if name == "adam":
        opt = optax.adam(lr, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps)
    elif name == "adamw":
        opt = optax.adamw(lr, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
                          weight_decay=opt_config.weight_decay)
    elif name == "sgd":
        opt = optax.sgd(lr, momentum=opt_config.b1 or None)
    elif name == "lion":
        opt = optax.lion(lr, b1=opt_config.b1, b2=opt_config.b2,
                         weight_decay=opt_config.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r} (adam, adamw, sgd, lion)")
    if opt_config.clip_norm:
        opt = optax.chain(optax.clip_by_global_norm(opt_config.clip_norm), opt)
    return opt
