"""Fully connected layers: y = x Wᵀ (gemm.matmul, BLAS reads W transposed; at batches of 2 to 8,
`_few_rows`), then + bias, + the residual and the activation in one Numba pass over the (small: a
row per image) output.

Small layers (LeNet-5's: 400→120→84→10) run in one Numba loop instead (`_small`), on Wᵀ made once
per layer (`prepare`): a BLAS call and its thread handling cost ~10 µs there, the arithmetic ~1."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...ops.fused import split_inputs
from . import gemm
from ._act import FMA, NONE, act_row, activation_code
from ._util import bias_or_zeros, constant, f32, output, thread_count

_NONE = np.zeros((1, 1), np.float32)


@njit(cache=True, fastmath=FMA)
def _epilogue(y, bias, has_bias, res, has_res, act, alpha):
    """y = act((y + bias) + residual), row by row, in float32 in that order: the unfused ops'."""
    for i in range(y.shape[0]):
        row = y[i]
        if has_bias:
            for j in range(row.shape[0]):
                row[j] = row[j] + bias[j]
        if has_res:
            r = res[i]
            for j in range(row.shape[0]):
                row[j] = row[j] + r[j]
        if act != NONE:
            act_row(row, row, np.float32(0.0), False, act, alpha)


def linear(attrs, inputs, params, ctx, out=None, residual=None, code=NONE, wt=None):
    """y = act((x Wᵀ + bias) + residual); `wt`: Wᵀ, where a prepared layer keeps it (`_Layer`)."""
    x = f32(inputs[0])
    w = f32(params["weight"])  # out × in
    y = output(out, (x.shape[0], w.shape[0]))
    bias, has_bias = bias_or_zeros(params, attrs.out, attrs.bias)
    res = _NONE if residual is None else f32(residual).reshape(y.shape)
    alpha = np.float32(getattr(attrs, "alpha", 0.0))
    few = 2 <= x.shape[0] <= FEW_ROWS
    if w.size <= SMALL_WEIGHTS and x.shape[0] * w.size <= SMALL:  # (on the calling thread)
        if few:
            _few_rows_serial(x, w, y, 1)
        else:
            _small(x, np.ascontiguousarray(w.T) if wt is None else wt, y, bias, has_bias, res, residual is not None,
                   code, alpha)
            return y
    elif few:
        _few_rows(x, w, y, thread_count())
    else:
        gemm.matmul(x[None], w[None], y[None], trans_b=True)
    if has_bias or residual is not None or code != NONE:
        _epilogue(y, bias, has_bias, res, residual is not None, code, alpha)
    return y


# Layers of at most SMALL_WEIGHTS weights run in `_small` at batches whose products take at most
# SMALL multiply-adds (on one thread: LeNet-5's first layer at batch 8, 2 µs against 50 by BLAS)
SMALL_WEIGHTS, SMALL = 1 << 16, 1 << 19


@njit(cache=True, fastmath=FMA)
def _small(x, wt, y, bias, has_bias, res, has_res, act, alpha):
    """y = act((x Wᵀ + bias) + residual) on the calling thread, wt = Wᵀ (in × out): each output row
    summed over the inputs in order, one contiguous row of Wᵀ at a time (vectorised across outputs)."""
    for i in range(x.shape[0]):
        row, xi = y[i], x[i]
        row[:] = 0.0
        for k in range(wt.shape[0]):
            xk, wk = xi[k], wt[k]
            for j in range(row.shape[0]):
                row[j] += xk * wk[j]
    _epilogue(y, bias, has_bias, res, has_res, act, alpha)


# Layers at batches of 2 to FEW_ROWS run in `_few_rows` (small ones on the calling thread), not
# BLAS's GEMM, which packs W on every call: against ONNX Runtime's Gemm, 2 threads, AlexNet's and
# VGG-16's layers (4096 to 25088 → 1000 or 4096) at batch 2, 4 and 8: BLAS 1.7–4.1× its time,
# `_few_rows` 0.92–1.12× (0.97–1.47 for 4096 → 1000). At batch 1 BLAS's GEMV is as fast (0.89–1.25×).
FEW_ROWS = 8
_DOT = {"contract", "reassoc"}  # (reassociated: a dot product's partial sums lane by lane, as BLAS's are blocked)


@njit(cache=True, fastmath=_DOT, parallel=True)
def _few_rows(x, w, y, threads):
    """y[i, j] = Σ_q x[i, q]·w[j, q] for a few rows of x, each thread its share of W's rows
    (`_few_rows_share`)."""
    for t in prange(threads):  # (t as int64: the serial twin's type, so that one compiled share serves both)
        _few_rows_share(x, w, y, np.int64(t), threads)


@njit(cache=True, fastmath=_DOT)
def _few_rows_serial(x, w, y, threads):
    """`_few_rows` on the calling thread, given threads = 1 (as an argument: a literal would compile
    `_few_rows_share` a second time): small layers (LeNet-5's 400 → 120 at batch 8: 0.4× the time
    of `_small`'s loop)."""
    _few_rows_share(x, w, y, threads - 1, threads)


@njit(cache=True, fastmath=_DOT)
def _few_rows_share(x, w, y, t, threads):
    """Thread t's share (of `threads`) of `_few_rows`: W's rows taken in pairs, each pair read once
    (from memory: W is what costs) against 4 rows of x at a time, its 8 sums vectorised along q;
    the last thread also takes an odd last row."""
    m, k = x.shape
    n = w.shape[0]
    pairs = n // 2
    for p in range(pairs * t // threads, pairs * (t + 1) // threads):
        a, b = w[2 * p], w[2 * p + 1]
        for i in range(0, m, 4):  # (past the last row: row m − 1 again, its sums not stored)
            x0, x1, x2, x3 = x[i], x[min(i + 1, m - 1)], x[min(i + 2, m - 1)], x[min(i + 3, m - 1)]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
            for q in range(k):
                aq, bq, v0, v1, v2, v3 = a[q], b[q], x0[q], x1[q], x2[q], x3[q]
                s00 += v0 * aq
                s01 += v1 * aq
                s02 += v2 * aq
                s03 += v3 * aq
                s10 += v0 * bq
                s11 += v1 * bq
                s12 += v2 * bq
                s13 += v3 * bq
            y[i, 2 * p], y[i, 2 * p + 1] = s00, s10
            if i + 1 < m:
                y[i + 1, 2 * p], y[i + 1, 2 * p + 1] = s01, s11
            if i + 2 < m:
                y[i + 2, 2 * p], y[i + 2, 2 * p + 1] = s02, s12
            if i + 3 < m:
                y[i + 3, 2 * p], y[i + 3, 2 * p + 1] = s03, s13
    if t == threads - 1 and n % 2:  # an odd last row
        for i in range(m):
            s = np.float32(0.0)
            for q in range(k):
                s += x[i, q] * w[n - 1, q]
            y[i, n - 1] = s


class _Layer:
    """A linear layer made ready to run (the executor's `prepare`, eval mode): Wᵀ made once, for `_small`."""

    def __init__(self, attrs, params):
        self.attrs, self.params = attrs, params
        self.residual = bool(getattr(attrs, "residual", False))
        self.code = activation_code(getattr(attrs, "activation", None))
        w = constant(f32(params["weight"]))
        self.wt = constant(np.ascontiguousarray(w.T)) if w.size <= SMALL_WEIGHTS else None

    def __call__(self, inputs, out=None):
        residual = inputs[-1] if self.residual else None
        return linear(self.attrs, inputs[:1], self.params, None, out, residual, self.code, self.wt)


def prepare(attrs, params):
    """linear or fused_linear for one node, as a function of the inputs (and the array to write)."""
    return _Layer(attrs, params)


def fused_linear(attrs, inputs, params, ctx, out=None):
    """linear with what the fuse_epilogues pass gave it (ops/fused.py): y = act(x Wᵀ + b + residual),
    in float32 in that order, as the unfused kernels would."""
    x, _, residual = split_inputs(attrs, inputs)
    return linear(attrs, [x], params, ctx, out, residual, activation_code(attrs.activation))


linear.prepare = prepare
fused_linear.prepare = prepare
