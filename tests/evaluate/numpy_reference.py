"""Independent numpy versions of the ops the metric nets use, in PyTorch's NCHW/OIHW layout.

They take the weights exactly as a PyTorch state_dict stores them, so comparing a Flax net
against them checks both the net and its converter's layout changes.
"""

import numpy as np


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """x (N, C, H, W), weight (O, C/groups, kh, kw): cross-correlation as torch.nn.Conv2d."""
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    ph, pw = (padding, padding) if np.isscalar(padding) else padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    n, c, h, w = x.shape
    o, cg, kh, kw = weight.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    og = o // groups
    outs = []
    for g in range(groups):
        xs = x[:, g * cg : (g + 1) * cg].astype(np.float64)
        # im2col: (n, c, kh, kw, oh, ow), contracted with the weights in one BLAS call
        cols = np.stack(
            [
                np.stack(
                    [xs[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] for j in range(kw)], 2
                )
                for i in range(kh)
            ],
            2,
        )
        w = weight[g * og : (g + 1) * og].astype(np.float64)
        outs.append(np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3])).transpose(0, 3, 1, 2))
    out = np.concatenate(outs, axis=1)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def max_pool2d(x, kernel, stride, padding=0, ceil_mode=False):
    """torch.nn.MaxPool2d; `stride` may be (sh, sw)."""
    sh, sw = (stride, stride) if np.isscalar(stride) else stride
    n, c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    rnd = np.ceil if ceil_mode else np.floor
    oh = int(rnd((h + 2 * padding - kernel) / sh)) + 1
    ow = int(rnd((w + 2 * padding - kernel) / sw)) + 1
    if ceil_mode:  # torch drops a last window that would start in the right padding only
        oh -= (oh - 1) * sh >= h + padding
        ow -= (ow - 1) * sw >= w + padding
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * sh : i * sh + kernel, j * sw : j * sw + kernel]
            out[:, :, i, j] = win.reshape(n, c, -1).max(-1)
    return out


def relu(x):
    return np.maximum(x, 0)


def nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def nchw(x):
    return np.transpose(x, (0, 3, 1, 2))
