"""Fully connected layers: y = x Wᵀ (gemm.matmul, BLAS reads W transposed), then + bias, + the
residual and the activation in one Numba pass over the (small: a row per image) output."""
from __future__ import annotations

import numpy as np
from numba import njit

from ...ops.fused import split_inputs
from . import gemm
from ._act import FMA, NONE, act_row, activation_code
from ._util import bias_or_zeros, f32, output

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


def linear(attrs, inputs, params, ctx, out=None, residual=None, code=NONE):
    x = f32(inputs[0])
    w = f32(params["weight"])  # out × in
    y = output(out, (x.shape[0], w.shape[0]))
    gemm.matmul(x[None], w[None], y[None], trans_b=True)
    bias, has_bias = bias_or_zeros(params, attrs.out, attrs.bias)
    if has_bias or residual is not None or code != NONE:
        res = _NONE if residual is None else f32(residual).reshape(y.shape)
        _epilogue(y, bias, has_bias, res, residual is not None, code, np.float32(getattr(attrs, "alpha", 0.0)))
    return y


def fused_linear(attrs, inputs, params, ctx, out=None):
    """linear with what the fuse_epilogues pass gave it (ops/fused.py): y = act(x Wᵀ + b + residual),
    in float32 in that order, as the unfused kernels would."""
    x, _, residual = split_inputs(attrs, inputs)
    return linear(attrs, [x], params, ctx, out, residual, activation_code(attrs.activation))
