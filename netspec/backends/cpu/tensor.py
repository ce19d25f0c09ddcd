"""Tensor plumbing: concat (Numba block copies), flatten and reshape (views), center_crop."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._util import f32, into, output


_BLOCK = 1 << 12  # elements per parallel work item: small, so that uneven inputs still share out evenly


@njit(cache=True, fastmath=False, parallel=True)
def _concat_columns(srcs, cols, dst):
    """dst[:, cols[i]:cols[i] + srcs[i].shape[1]] = srcs[i] for the 2-D arrays srcs (each with dst's
    rows): one parallel pass for all of them, in blocks of a row (one launch, not one per input:
    GoogLeNet's concats join four branches)."""
    r_ = dst.shape[0]
    k = len(srcs)
    first = np.empty(k + 1, np.int64)  # the work items of input i: first[i] .. first[i + 1] − 1
    first[0] = 0
    for i in range(k):
        first[i + 1] = first[i] + r_ * ((srcs[i].shape[1] + _BLOCK - 1) // _BLOCK)
    for idx in prange(first[k]):
        i = 0
        while idx >= first[i + 1]:
            i += 1
        src = srcs[i]
        c_ = src.shape[1]
        blocks = (c_ + _BLOCK - 1) // _BLOCK
        local = idx - first[i]
        r = local // blocks
        lo = (local - r * blocks) * _BLOCK
        hi = min(c_, lo + _BLOCK)
        s = src[r, lo:hi]
        d = dst[r, cols[i] + lo:cols[i] + hi]
        for c in range(hi - lo):  # on slices, indexed from 0: no wraparound test, so it vectorises
            d[c] = s[c]


def concat(attrs, inputs, params, ctx, out=None):
    xs = [f32(x) for x in inputs]
    axis = attrs.axis % xs[0].ndim
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = output(out, tuple(shape))
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    srcs, cols, col, copies = [], [], 0, 0
    for x in xs:
        part = x.reshape(outer, -1)
        # (the memory plan has an input written in its place in y where that is one run: no copy, but
        # an empty slice in its place, so that the kernel takes as many inputs as the node has: the
        # warm-up compiles one kernel per count of inputs)
        in_place = outer == 1 and part.ctypes.data == y.ctypes.data + 4 * col
        srcs.append(part[:, :0] if in_place else part)
        cols.append(col)
        copies += not in_place
        col += part.shape[1]
    if copies:
        _concat_columns(tuple(srcs), np.array(cols, np.int64), y.reshape(outer, -1))
    return y


def flatten(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    return into(out, x.reshape(x.shape[0], -1))  # a view (the memory plan gives it x's buffer)


def reshape(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    return into(out, x.reshape((x.shape[0],) + tuple(attrs.shape)))


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


def center_crop(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    ch, cw = attrs.size
    y = output(out, (n, c, ch, cw))
    _crop(x, (h - ch) // 2, (w - cw) // 2, y)  # an odd margin leaves the extra row/column bottom/right
    return y
