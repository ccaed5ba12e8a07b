"""Optax chains and learning-rate schedules from config (configs/common.py:optimizer_config)."""

from __future__ import annotations

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
