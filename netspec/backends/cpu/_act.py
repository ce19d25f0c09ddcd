"""Activation epilogues shared by the pointwise kernels and the fused convolution epilogues.

`act_row(src, dst, b, has_bias, act, alpha)` writes dst[i] = act(src[i] (+ b)) over one contiguous
row; the standalone activation kernels run this same code (float32), so a fused epilogue gives
bit-for-bit the value the separate bias add and activation would. `src` may be `dst`.
"""
from __future__ import annotations

import numpy as np
from numba import njit

NONE, RELU, RELU6, LEAKY_RELU, ELU, SILU, HARDSWISH, SIGMOID, TANH = range(9)

# op name → (activation code, the attribute carrying its scalar or None): what a conv may absorb
FUSABLE = {"relu": (RELU, None), "relu6": (RELU6, None), "leaky_relu": (LEAKY_RELU, "slope"),
           "elu": (ELU, "alpha"), "silu": (SILU, None), "hardswish": (HARDSWISH, None),
           "sigmoid": (SIGMOID, None), "tanh": (TANH, None)}


@njit(cache=True, fastmath=False, inline="always")
def act_row(src, dst, b, has_bias, act, alpha):
    if has_bias:
        for i in range(dst.shape[0]):
            dst[i] = src[i] + b
        if act != NONE:
            _act(dst, dst, act, alpha)
    elif act == NONE:
        for i in range(dst.shape[0]):  # (callers working in place skip the call)
            dst[i] = src[i]
    else:
        _act(src, dst, act, alpha)


@njit(cache=True, fastmath=False, inline="always")
def _act(src, dst, act, alpha):
    n = dst.shape[0]
    if act == RELU:
        for i in range(n):
            v = src[i]
            dst[i] = v if v > 0.0 else (v if np.isnan(v) else 0.0)
    elif act == RELU6:
        for i in range(n):
            v = src[i]
            if v < 0.0:
                v = np.float32(0.0)
            elif v > 6.0:
                v = np.float32(6.0)
            dst[i] = v
    elif act == LEAKY_RELU:
        s = np.float32(alpha)
        for i in range(n):
            v = src[i]
            dst[i] = v if v > 0.0 else v * s
    elif act == ELU:
        a = np.float32(alpha)
        for i in range(n):
            v = src[i]
            dst[i] = v if v > 0.0 else a * np.expm1(v)
    elif act == SILU:
        one = np.float32(1.0)
        for i in range(n):
            v = src[i]
            dst[i] = v / (one + np.exp(-v))
    elif act == HARDSWISH:
        for i in range(n):
            v = src[i]
            r = v + np.float32(3.0)
            if r < 0.0:
                r = np.float32(0.0)
            elif r > 6.0:
                r = np.float32(6.0)
            dst[i] = v * r / np.float32(6.0)
    elif act == SIGMOID:
        one = np.float32(1.0)
        for i in range(n):
            dst[i] = one / (one + np.exp(-src[i]))
    else:  # TANH
        for i in range(n):
            dst[i] = np.tanh(src[i])
