"""Fully connected layers: y = x Wᵀ (numpy matmul, BLAS reads Wᵀ as a view) + bias (numpy: the
output is small, one row per image)."""
from __future__ import annotations

import numpy as np

from ._util import bias_or_zeros, f32


def linear(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    w = f32(params["weight"])  # out × in
    y = np.matmul(x, w.T)  # N × out, C-contiguous
    bias, has_bias = bias_or_zeros(params, attrs.out, attrs.bias)
    if has_bias:
        y += bias
    return y
