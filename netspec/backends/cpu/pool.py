"""Pooling: max (padding, dilation, ceil mode), average (ceil mode, count_include_pad), global and
adaptive average — all with PyTorch's window rules."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._util import f32, window_out
from .conv import _valid_range


@njit(cache=True, fastmath=False, parallel=True)
def _maxpool(x, kh, kw, sh, sw, ph, pw, dh, dw, y):
    """Max over each window's in-bounds taps (padding and the ceil-mode overhang act as −inf).

    Works an output row at a time, tap by tap, over the output columns that tap keeps inside
    the input, so the inner loop has no bounds tests. NaN propagates, as in PyTorch.
    """
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for idx in prange(n_ * c_):  # each thread its own planes
        n = idx // c_
        c = idx - n * c_
        xc = x[n, c]
        yc = y[n, c]
        for oh in range(ho):
            dst = yc[oh]
            for ow in range(wo):
                dst[ow] = -np.inf
            for i in range(kh):
                ih = oh * sh - ph + i * dh
                if ih < 0 or ih >= h_:
                    continue
                src = xc[ih]
                for j in range(kw):
                    off = j * dw - pw
                    lo, hi = _valid_range(off, sw, w_, wo)
                    for ow in range(lo, hi):  # a select, so it vectorizes; a NaN wins and then stays
                        v = src[ow * sw + off]
                        d = dst[ow]
                        dst[ow] = v if (v > d or v != v) else d


@njit(cache=True, fastmath=False, parallel=True)
def _avgpool(x, kh, kw, sh, sw, ph, pw, count_include_pad, y):
    """PyTorch's avg_pool2d: the window is clipped to input+padding for the divisor when padding
    counts, and to the input itself when it does not (and always for the sum).

    Separable: the window's rows are summed into a column buffer (float64), then each output
    sums its span of that buffer.
    """
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        col = np.empty(w_, np.float64)
        xc = x[n, c]
        yc = y[n, c]
        for oh in range(ho):
            hs = oh * sh - ph
            he = min(hs + kh, h_ + ph)
            hsize = he - hs
            hs = max(hs, 0)
            he = min(he, h_)
            for iw in range(w_):
                col[iw] = 0.0
            for ih in range(hs, he):
                row = xc[ih]
                for iw in range(w_):
                    col[iw] += row[iw]
            for ow in range(wo):
                ws = ow * sw - pw
                we = min(ws + kw, w_ + pw)
                pool = hsize * (we - ws)
                ws = max(ws, 0)
                we = min(we, w_)
                acc = 0.0
                for iw in range(ws, we):
                    acc += col[iw]
                div = pool if count_include_pad else (he - hs) * (we - ws)
                yc[oh, ow] = acc / div


@njit(cache=True, fastmath=False, parallel=True)
def _adaptive_avgpool(x, y):
    """PyTorch's adaptive bins: output o covers [floor(o·H/out), ceil((o+1)·H/out))."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        xc = x[n, c]
        for oh in range(ho):
            hs = (oh * h_) // ho
            he = ((oh + 1) * h_ + ho - 1) // ho
            for ow in range(wo):
                ws = (ow * w_) // wo
                we = ((ow + 1) * w_ + wo - 1) // wo
                acc = 0.0
                for ih in range(hs, he):
                    for iw in range(ws, we):
                        acc += xc[ih, iw]
                y[n, c, oh, ow] = acc / ((he - hs) * (we - ws))


@njit(cache=True, fastmath=False, parallel=True)
def _global_avgpool(x, y):
    """x: R×P → y: R, the mean of each row (accumulated in float64, one thread per row)."""
    r_, p_ = x.shape
    for r in prange(r_):
        acc = 0.0
        row = x[r]
        for p in range(p_):
            acc += row[p]
        y[r] = acc / p_


def maxpool2d(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    dh, dw = attrs.dilation
    ho = window_out(h, dh * (kh - 1) + 1, sh, ph, ph, attrs.ceil_mode)
    wo = window_out(w, dw * (kw - 1) + 1, sw, pw, pw, attrs.ceil_mode)
    y = np.empty((n, c, ho, wo), np.float32)
    _maxpool(x, kh, kw, sh, sw, ph, pw, dh, dw, y)
    return y


def avgpool2d(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    ho = window_out(h, kh, sh, ph, ph, attrs.ceil_mode)
    wo = window_out(w, kw, sw, pw, pw, attrs.ceil_mode)
    y = np.empty((n, c, ho, wo), np.float32)
    _avgpool(x, kh, kw, sh, sw, ph, pw, bool(attrs.count_include_pad), y)
    return y


def global_avgpool(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    y = np.empty(n * c, np.float32)
    _global_avgpool(x.reshape(n * c, h * w), y)
    return y.reshape(n, c, 1, 1)


def adaptive_avgpool2d(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c = x.shape[:2]
    y = np.empty((n, c) + tuple(attrs.size), np.float32)
    _adaptive_avgpool(x, y)
    return y
