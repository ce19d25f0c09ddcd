"""Convolutions: conv2d (im2col + GEMM, 1×1 straight to GEMM, direct depthwise) and
conv_transpose2d (GEMM + col2im).

The GEMMs are numpy's matmul (OpenBLAS sgemm) called from Python — `np.dot` inside `@njit`
needs SciPy. Everything around them (patch extraction, scatter, bias) is Numba.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._util import bias_or_zeros, f32, window_out


@njit(cache=True, fastmath=False)
def _valid_range(off: int, stride: int, size: int, count: int) -> tuple[int, int]:
    """The indices o in [0, count) with 0 <= o*stride + off < size, as a half-open range [lo, hi)."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    hi = (size - 1 - off) // stride + 1  # floor division: negative numerators give an empty range
    if hi > count:
        hi = count
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True, fastmath=False)
def _im2col(x, groups, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols):
    """x: N×C×H×W → cols: N×G×(C/G·kh·kw)×(ho·wo), rows ordered like weight[o].ravel() (c, i, j).

    Zero padding (asymmetric allowed), stride and dilation are resolved here, so the GEMM sees a
    plain dense matrix.
    """
    n_, c_, h_, w_ = x.shape
    cg = c_ // groups
    for n in range(n_):
        for c in range(c_):
            g = c // cg
            cl = c - g * cg
            for i in range(kh):
                for j in range(kw):
                    dst = cols[n, g, (cl * kh + i) * kw + j]
                    off_w = j * dw - pl
                    lo, hi = _valid_range(off_w, sw, w_, wo)
                    for oh in range(ho):
                        ih = oh * sh - pt + i * dh
                        base = oh * wo
                        if ih < 0 or ih >= h_:
                            for ow in range(wo):
                                dst[base + ow] = 0.0
                            continue
                        src = x[n, c, ih]
                        for ow in range(lo):
                            dst[base + ow] = 0.0
                        if sw == 1:  # a contiguous run: a straight copy
                            dst[base + lo:base + hi] = src[lo + off_w:hi + off_w]
                        else:
                            for ow in range(lo, hi):
                                dst[base + ow] = src[ow * sw + off_w]
                        for ow in range(hi, wo):
                            dst[base + ow] = 0.0


@njit(cache=True, fastmath=False)
def add_bias(y, bias):
    """In place: y[n, c, :] += bias[c] for y: N×C×P (the GEMM epilogue)."""
    n_, c_, p_ = y.shape
    for n in range(n_):
        for c in range(c_):
            b = bias[c]
            row = y[n, c]
            for p in range(p_):
                row[p] += b


@njit(cache=True, fastmath=False)
def _depthwise(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, y):
    """Direct depthwise convolution (one filter per channel), x: N×C×H×W, w: C×1×kh×kw → y: N×C×ho×wo.

    Loops tap by tap over whole output rows, with the valid column range computed once per tap,
    so the inner loop is a branch-free strided multiply-add.
    """
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for n in range(n_):
        for c in range(c_):
            yc = y[n, c]
            for oh in range(ho):
                for ow in range(wo):
                    yc[oh, ow] = 0.0
            xc = x[n, c]
            for i in range(kh):
                for j in range(kw):
                    wv = w[c, 0, i, j]
                    off_w = j * dw - pl
                    lo, hi = _valid_range(off_w, sw, w_, wo)
                    for oh in range(ho):
                        ih = oh * sh - pt + i * dh
                        if ih < 0 or ih >= h_:
                            continue
                        src = xc[ih]
                        dst = yc[oh]
                        for ow in range(lo, hi):
                            dst[ow] += wv * src[ow * sw + off_w]
            if has_bias:
                b = bias[c]
                for oh in range(ho):
                    for ow in range(wo):
                        yc[oh, ow] += b


_CHUNK_BYTES = 32 << 20  # the patch (column) matrix holds at most this much, unless one image needs more


def _images_per_chunk(floats_per_image: int, n: int) -> int:
    return max(1, min(n, _CHUNK_BYTES // max(1, 4 * floats_per_image)))


def conv2d(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    w = f32(params["weight"])
    n, c, h, wd = x.shape
    o, g = attrs.out, attrs.groups
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    dh, dw = attrs.dilation
    pt, pl, pb, pr = attrs.pads
    ho = window_out(h, dh * (kh - 1) + 1, sh, pt, pb)
    wo = window_out(wd, dw * (kw - 1) + 1, sw, pl, pr)
    bias, has_bias = bias_or_zeros(params, o, attrs.bias)

    if g > 1 and g == c and o == c:  # depthwise: a direct kernel, no GEMM
        y = np.empty((n, o, ho, wo), np.float32)
        _depthwise(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, y)
        return y

    cg, og = c // g, o // g
    if kh == 1 and kw == 1 and sh == 1 and sw == 1 and pt == pl == pb == pr == 0:
        # pointwise: the input already is the GEMM's right-hand side
        y = np.matmul(w.reshape(g, og, cg), x.reshape(n, g, cg, h * wd))  # N×G×(O/G)×P
    else:
        k, p = cg * kh * kw, ho * wo
        wg = w.reshape(g, og, k)
        y = np.empty((n, g, og, p), np.float32)  # which is N×O×P
        step = _images_per_chunk(g * k * p, n)  # the patch matrix of a few images at a time
        cols = np.empty((step, g, k, p), np.float32)
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            _im2col(x[n0:n1], g, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, cols[:n1 - n0])
            np.matmul(wg, cols[:n1 - n0], out=y[n0:n1])
    y = y.reshape(n, o, ho * wo)
    if has_bias:
        add_bias(y, bias)
    return y.reshape(n, o, ho, wo)


@njit(cache=True, fastmath=False)
def _col2im(cols, bias, has_bias, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, y):
    """Scatter-add cols: N×G×(O/G·kh·kw)×(H·W) into y: N×O×ho×wo (transposed convolution).

    Input pixel (ih, iw) through tap (i, j) lands on (ih·sh − ph + i·dh, iw·sw − pw + j·dw);
    taps that fall into the padding (or beyond output_padding) are dropped.
    """
    n_, g_ = cols.shape[0], cols.shape[1]
    o_, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    og = o_ // g_
    for n in range(n_):
        for g in range(g_):
            for oo in range(og):
                yc = y[n, g * og + oo]
                for oh in range(ho):
                    for ow in range(wo):
                        yc[oh, ow] = 0.0
                for i in range(kh):
                    for j in range(kw):
                        src = cols[n, g, (oo * kh + i) * kw + j]
                        off_w = j * dw - pw
                        lo, hi = _valid_range(off_w, sw, wo, w_)
                        for ih in range(h_):
                            oh = ih * sh - ph + i * dh
                            if oh < 0 or oh >= ho:
                                continue
                            dst = yc[oh]
                            base = ih * w_
                            for iw in range(lo, hi):
                                dst[iw * sw + off_w] += src[base + iw]
                if has_bias:
                    b = bias[g * og + oo]
                    for oh in range(ho):
                        for ow in range(wo):
                            yc[oh, ow] += b


def conv_transpose2d(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    w = f32(params["weight"])  # C_in × C_out/G × kh × kw
    n, c, h, wd = x.shape
    o, g = attrs.out, attrs.groups
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    oph, opw = attrs.output_padding
    dh, dw = attrs.dilation
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + 1 + oph
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + 1 + opw
    cg, og = c // g, o // g
    k = og * kh * kw
    # GEMM: per group, Wᵀ (O/G·kh·kw × C/G) · X (C/G × H·W); BLAS reads the transposed view directly
    wt = w.reshape(g, cg, k).transpose(0, 2, 1)
    xg = x.reshape(n, g, cg, h * wd)
    bias, has_bias = bias_or_zeros(params, o, attrs.bias)
    y = np.empty((n, o, ho, wo), np.float32)
    step = _images_per_chunk(g * k * h * wd, n)
    cols = np.empty((step, g, k, h * wd), np.float32)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        np.matmul(wt, xg[n0:n1], out=cols[:n1 - n0])  # images × G × k × (H·W)
        _col2im(cols[:n1 - n0], bias, has_bias, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, y[n0:n1])
    return y
