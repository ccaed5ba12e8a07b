"""Throughput of each metric's jitted per-batch function, with random weights.

    python benchmarks/metrics.py --batch=16 --size=256 [--metrics=psnr,ssim,lpips_alex]

Prints one line per metric: compile time and images/s (steady state, after warm-up).
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def _random_variables(module, *inputs):
    return jax.jit(module.init)(jax.random.PRNGKey(0), *inputs)


def build(name, batch, size):
    from jaxtalk.evaluate import csim, fid, image_metrics, lpips
    from jaxtalk.models.metric_nets import inception, iresnet
    from jaxtalk.models.metric_nets.lpips import LPIPS

    x = jnp.zeros((batch, size, size, 3))
    if name in ("psnr", "ssim", "l1"):
        return getattr(image_metrics, name)
    if name.startswith("lpips_"):
        net = name.split("_")[1]
        variables = _random_variables(LPIPS(net), x, x)
        return lambda a, b: lpips.lpips(variables, a, b, net)
    if name == "csim":
        variables = _random_variables(iresnet.IResNet(), jnp.zeros((1, 112, 112, 3)))
        return lambda a, b: csim.csim(variables, a, b)
    if name == "fid":
        variables = _random_variables(inception.FIDInceptionV3(), jnp.zeros((1, 299, 299, 3)))
        return lambda a, b: fid.inception_features(variables, a)
    raise ValueError(name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--metrics", default="psnr,ssim,l1,lpips_alex,lpips_vgg,csim,fid")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a, b = (
        jnp.asarray(rng.uniform(size=(args.batch, args.size, args.size, 3)), jnp.float32)
        for _ in range(2)
    )
    print(f"devices: {jax.devices()}")
    for name in args.metrics.split(","):
        fn = build(name, args.batch, args.size)
        start = time.perf_counter()
        jax.block_until_ready(fn(a, b))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(fn(a, b))
        rate = args.steps * args.batch / (time.perf_counter() - start)
        print(f"{name:12s} first call {compile_s:7.2f} s   {rate:9.1f} images/s")


if __name__ == "__main__":
    main()
