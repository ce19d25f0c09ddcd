"""Tensor plumbing: concat (Numba block copies), flatten and reshape (views), center_crop."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._util import f32


_BLOCK = 1 << 15  # elements per parallel work item


@njit(cache=True, fastmath=False, parallel=True)
def _copy_columns(src, dst, col):
    """dst[:, col:col + src.shape[1]] = src, for 2-D arrays (in blocks of a row, in parallel)."""
    r_, c_ = src.shape
    blocks = (c_ + _BLOCK - 1) // _BLOCK
    for idx in prange(r_ * blocks):
        r = idx // blocks
        lo = (idx - r * blocks) * _BLOCK
        hi = min(c_, lo + _BLOCK)
        s = src[r, lo:hi]
        d = dst[r, col + lo:col + hi]
        for c in range(hi - lo):  # on slices, indexed from 0: no wraparound test, so it vectorises
            d[c] = s[c]


def concat(attrs, inputs, params, ctx):
    xs = [f32(x) for x in inputs]
    axis = attrs.axis % xs[0].ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = np.empty(shape, np.float32)
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    y2 = y.reshape(outer, -1)
    col = 0
    for x in xs:
        x2 = x.reshape(outer, -1)
        _copy_columns(x2, y2, col)
        col += x2.shape[1]
    return y


def flatten(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    return x.reshape(x.shape[0], -1)


def reshape(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    return x.reshape((x.shape[0],) + tuple(attrs.shape))


@njit(cache=True, fastmath=False)
def _crop(x, top, left, y):
    n_, c_, h_, w_ = y.shape
    for n in range(n_):
        for c in range(c_):
            for i in range(h_):
                s = x[n, c, top + i, left:left + w_]
                d = y[n, c, i]
                for j in range(w_):
                    d[j] = s[j]


def center_crop(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    ch, cw = attrs.size
    y = np.empty((n, c, ch, cw), np.float32)
    _crop(x, (h - ch) // 2, (w - cw) // 2, y)  # an odd margin leaves the extra row/column bottom/right
    return y
