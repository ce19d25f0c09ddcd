"""Normalization: batch normalization (inference and training) and local response normalization."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ...ops.registry import RunError
from ._util import f32, output


@njit(cache=True, fastmath=False, parallel=True)
def _scale_shift(x, scale, shift, y):
    """y[n, c, :] = x[n, c, :] · scale[c] + shift[c] for x: N×C×S (parallel over planes)."""
    n_, c_, s_ = x.shape
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        a = scale[c]
        b = shift[c]
        src = x[n, c]
        dst = y[n, c]
        for s in range(s_):
            dst[s] = src[s] * a + b


@njit(cache=True, fastmath=False)
def _bn_eval_coefficients(weight, bias, mean, var, eps, scale, shift):
    for c in range(scale.shape[0]):
        inv = 1.0 / np.sqrt(np.float64(var[c]) + eps)
        scale[c] = weight[c] * inv
        shift[c] = bias[c] - mean[c] * weight[c] * inv


@njit(cache=True, fastmath=False, parallel=True)
def _bn_batch_stats(x, mean, var):
    """Per-channel mean and biased variance over N and S of x: N×C×S (two passes, float64; a
    channel's sums run in one thread, in order)."""
    n_, c_, s_ = x.shape
    count = n_ * s_
    for c in prange(c_):
        acc = 0.0
        for n in range(n_):
            row = x[n, c]
            for s in range(s_):
                acc += row[s]
        m = acc / count
        acc = 0.0
        for n in range(n_):
            row = x[n, c]
            for s in range(s_):
                d = row[s] - m
                acc += d * d
        mean[c] = m
        var[c] = acc / count


@njit(cache=True, fastmath=False, parallel=True)
def _bn_train_apply(x, weight, bias, mean, var, eps, y):
    n_, c_, s_ = x.shape
    for c in prange(c_):
        inv = 1.0 / np.sqrt(var[c] + eps)
        a = weight[c] * inv
        b = bias[c] - mean[c] * a
        for n in range(n_):
            src = x[n, c]
            dst = y[n, c]
            for s in range(s_):
                dst[s] = src[s] * a + b


@njit(cache=True, fastmath=False)
def _bn_running(running, batch, momentum, correction, out):
    for c in range(out.shape[0]):
        out[c] = (1.0 - momentum) * running[c] + momentum * batch[c] * correction


def _as_ncs(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], x.shape[1], -1)


def batchnorm2d(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    c = x.shape[1]
    x3 = _as_ncs(x)
    if attrs.affine:
        weight, bias = f32(params["weight"]), f32(params["bias"])
    else:
        weight, bias = np.ones(c, np.float32), np.zeros(c, np.float32)
    y = output(out, x.shape)  # (out may be x itself: each element is read before it is written)
    eps = float(attrs.eps)
    if ctx.mode != "train":
        scale, shift = np.empty(c, np.float64), np.empty(c, np.float64)
        _bn_eval_coefficients(weight, bias, f32(params["running_mean"]), f32(params["running_var"]), eps,
                              scale, shift)
        _scale_shift(x3, scale, shift, _as_ncs(y))
        return y
    count = x3.shape[0] * x3.shape[2]
    if count < 2:
        raise RunError(f"batch normalization in training needs more than one value per channel, got input "
                         f"shape {list(x.shape)}")
    mean, var = np.empty(c, np.float64), np.empty(c, np.float64)
    _bn_batch_stats(x3, mean, var)
    _bn_train_apply(x3, weight, bias, mean, var, eps, _as_ncs(y))
    momentum = float(attrs.momentum)
    new_mean, new_var = np.empty(c, np.float32), np.empty(c, np.float32)
    _bn_running(f32(params["running_mean"]), mean, momentum, 1.0, new_mean)
    _bn_running(f32(params["running_var"]), var, momentum, count / (count - 1), new_var)
    params["running_mean"] = new_mean  # replaced, never updated in place (as the reference does)
    params["running_var"] = new_var
    return y


@njit(cache=True, fastmath=False)
def _lrn(x, size, alpha, beta, k, y):
    """torch.nn.LocalResponseNorm: y = x / (k + alpha/size · Σ x²)^beta over channels
    [c − size//2, c + (size−1)//2] (clipped), for x: N×C×S."""
    n_, c_, s_ = x.shape
    sq = np.empty((c_, s_), np.float32)
    acc = np.empty(s_, np.float32)
    a = alpha / size
    for n in range(n_):
        xn = x[n]
        for c in range(c_):
            for s in range(s_):
                sq[c, s] = xn[c, s] * xn[c, s]
        for c in range(c_):
            lo = max(0, c - size // 2)
            hi = min(c_, c + (size - 1) // 2 + 1)
            for s in range(s_):
                acc[s] = 0.0
            for cc in range(lo, hi):
                row = sq[cc]
                for s in range(s_):
                    acc[s] += row[s]
            dst = y[n, c]
            src = xn[c]
            for s in range(s_):
                dst[s] = src[s] / (k + a * acc[s]) ** beta


def lrn(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    y = output(out, x.shape)
    _lrn(_as_ncs(x), int(attrs.size), float(attrs.alpha), float(attrs.beta), float(attrs.k), _as_ncs(y))
    return y
