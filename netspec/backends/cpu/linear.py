"""Fully connected layers: y = x Wᵀ (gemm.matmul, BLAS reads W transposed), then + bias, + the
residual and the activation in one Numba pass over the (small: a row per image) output.

Small layers (LeNet-5's: 400→120→84→10) run in one Numba loop instead (`_small`), on Wᵀ made once
per layer (`prepare`): a BLAS call and its thread handling cost ~10 µs there, the arithmetic ~1."""
from __future__ import annotations

import numpy as np
from numba import njit

from ...ops.fused import split_inputs
from . import gemm
from ._act import FMA, NONE, act_row, activation_code
from ._util import bias_or_zeros, constant, f32, output

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
    if w.size <= SMALL_WEIGHTS and x.shape[0] * w.size <= SMALL:
        _small(x, np.ascontiguousarray(w.T) if wt is None else wt, y, bias, has_bias, res, residual is not None,
               code, alpha)
        return y
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
