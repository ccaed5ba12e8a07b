"""The FID InceptionV3 (pytorch-fid's `fid_inception_v3`: torchvision's Inception3 with
TensorFlow's pooling quirks), NHWC, up to the 2048-d pool3 features and the 1008 logits.

Submodule names mirror torchvision's attribute names (Mixed_5b/branch1x1/conv ...), so
the state_dict mapping follows from the module tree (`convert/inception.py`).
Differences from torchvision's Inception3, as in TensorFlow's graph: the average pools in
the A, C and E blocks exclude the padding from the mean, and the last E block (Mixed_7c)
max-pools in its pool branch.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import batch_norm, conv, dense, lecun_kernel_init, max_pool

INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU."""

    features: int
    kernel: int | tuple[int, int]
    stride: int = 1
    padding: int | tuple[int, int] = 0
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(
            self.features,
            self.kernel,
            stride=self.stride,
            padding=self.padding,
            use_bias=False,
            name="conv",
            kernel_init=lecun_kernel_init,
            **kw,
        )(x)
        return nn.relu(batch_norm(name="bn", epsilon=1e-3, **kw)(x))


def avg_pool_3x3_excluding_padding(x):
    """F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
    return total / count


class _Block(nn.Module):
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    def basic(self, name, features, kernel, stride=1, padding=0):
        return BasicConv2d(
            features, kernel, stride, padding, self.dtype, self.param_dtype, name=name
        )


class InceptionA(_Block):
    pool_features: int = 32

    @nn.compact
    def __call__(self, x):
        b1 = self.basic("branch1x1", 64, 1)(x)
        b5 = self.basic("branch5x5_2", 64, 5, padding=2)(self.basic("branch5x5_1", 48, 1)(x))
        b3 = self.basic("branch3x3dbl_1", 64, 1)(x)
        b3 = self.basic("branch3x3dbl_3", 96, 3, padding=1)(
            self.basic("branch3x3dbl_2", 96, 3, padding=1)(b3)
        )
        bp = self.basic("branch_pool", self.pool_features, 1)(avg_pool_3x3_excluding_padding(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    @nn.compact
    def __call__(self, x):
        b3 = self.basic("branch3x3", 384, 3, stride=2)(x)
        bd = self.basic("branch3x3dbl_1", 64, 1)(x)
        bd = self.basic("branch3x3dbl_2", 96, 3, padding=1)(bd)
        bd = self.basic("branch3x3dbl_3", 96, 3, stride=2)(bd)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(_Block):
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x):
        c = self.channels_7x7
        row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of the 1-D convs
        b1 = self.basic("branch1x1", 192, 1)(x)
        b7 = self.basic("branch7x7_1", c, 1)(x)
        b7 = self.basic("branch7x7_2", c, row[0], padding=row[1])(b7)
        b7 = self.basic("branch7x7_3", 192, col[0], padding=col[1])(b7)
        bd = self.basic("branch7x7dbl_1", c, 1)(x)
        for i, (width, (kernel, padding)) in enumerate(
            [(c, col), (c, row), (c, col), (192, row)], start=2
        ):
            bd = self.basic(f"branch7x7dbl_{i}", width, kernel, padding=padding)(bd)
        bp = self.basic("branch_pool", 192, 1)(avg_pool_3x3_excluding_padding(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    @nn.compact
    def __call__(self, x):
        b3 = self.basic("branch3x3_2", 320, 3, stride=2)(self.basic("branch3x3_1", 192, 1)(x))
        b7 = self.basic("branch7x7x3_1", 192, 1)(x)
        b7 = self.basic("branch7x7x3_2", 192, (1, 7), padding=(0, 3))(b7)
        b7 = self.basic("branch7x7x3_3", 192, (7, 1), padding=(3, 0))(b7)
        b7 = self.basic("branch7x7x3_4", 192, 3, stride=2)(b7)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(_Block):
    max_pool_branch: bool = False  # pytorch-fid's FIDInceptionE_2 (Mixed_7c)

    @nn.compact
    def __call__(self, x):
        b1 = self.basic("branch1x1", 320, 1)(x)
        b3 = self.basic("branch3x3_1", 384, 1)(x)
        b3 = jnp.concatenate(
            [
                self.basic("branch3x3_2a", 384, (1, 3), padding=(0, 1))(b3),
                self.basic("branch3x3_2b", 384, (3, 1), padding=(1, 0))(b3),
            ],
            -1,
        )
        bd = self.basic("branch3x3dbl_1", 448, 1)(x)
        bd = self.basic("branch3x3dbl_2", 384, 3, padding=1)(bd)
        bd = jnp.concatenate(
            [
                self.basic("branch3x3dbl_3a", 384, (1, 3), padding=(0, 1))(bd),
                self.basic("branch3x3dbl_3b", 384, (3, 1), padding=(1, 0))(bd),
            ],
            -1,
        )
        pooled = (
            max_pool(x, 3, 1, padding=1)
            if self.max_pool_branch
            else avg_pool_3x3_excluding_padding(x)
        )
        bp = self.basic("branch_pool", 192, 1)(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """Images in [-1, 1], NHWC, 299x299 -> {"pool3": (N, 2048), "logits": (N, 1008)}."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3", **kw)(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3", **kw)(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3", **kw)(x)
        x = max_pool(x, 3, 2)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1", **kw)(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3", **kw)(x)
        x = max_pool(x, 3, 2)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features=pool_features, name=name, **kw)(x)
        x = InceptionB(name="Mixed_6a", **kw)(x)
        for name, channels in (
            ("Mixed_6b", 128),
            ("Mixed_6c", 160),
            ("Mixed_6d", 160),
            ("Mixed_6e", 192),
        ):
            x = InceptionC(channels_7x7=channels, name=name, **kw)(x)
        x = InceptionD(name="Mixed_7a", **kw)(x)
        x = InceptionE(name="Mixed_7b", **kw)(x)
        x = InceptionE(max_pool_branch=True, name="Mixed_7c", **kw)(x)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits = dense(1008, name="fc", axes=("mlp", "embed"), kernel_init=lecun_kernel_init, **kw)(
            pool3.astype(self.dtype)
        )
        return {"pool3": pool3, "logits": logits.astype(jnp.float32)}
