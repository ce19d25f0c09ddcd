"""Fully connected layers: y = x Wᵀ (gemm.matmul, BLAS reads W transposed) + bias (numpy: the
output is small, one row per image)."""
from __future__ import annotations

from ...ops.fused import split_inputs
from . import gemm
from ._act import NONE, activation_code
from ._util import bias_or_zeros, f32, output
from .elementwise import activate


def linear(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    w = f32(params["weight"])  # out × in
    y = output(out, (x.shape[0], w.shape[0]))
    gemm.matmul(x[None], w[None], y[None], trans_b=True)
    bias, has_bias = bias_or_zeros(params, attrs.out, attrs.bias)
    if has_bias:
        y += bias
    return y


def fused_linear(attrs, inputs, params, ctx, out=None):
    """linear with what the fuse_epilogues pass gave it (ops/fused.py): y = act(x Wᵀ + b + residual),
    in float32 in that order, as the unfused kernels would."""
    x, _, residual = split_inputs(attrs, inputs)
    y = linear(attrs, [x], params, ctx, out)
    if residual is not None:
        y += f32(residual)
    code = activation_code(attrs.activation)
    if code != NONE:
        activate(y, code, float(attrs.alpha), out=y)
    return y
