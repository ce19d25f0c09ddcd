"""Elementwise kernels: activations, dropout, softmax, maxout and the merges add and mul.

Pointwise kernels work on the flat (ravelled) C-contiguous array, so one compiled function
serves every rank.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._util import f32

# --- activations -------------------------------------------------------------------------------


@njit(cache=True, fastmath=False)
def _relu(x, y):
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > 0.0 else (v if np.isnan(v) else 0.0)


@njit(cache=True, fastmath=False)
def _relu6(x, y):
    for i in range(x.size):
        v = x[i]
        if v < 0.0:
            v = np.float32(0.0)
        elif v > 6.0:
            v = np.float32(6.0)
        y[i] = v


# The transcendental ones compute in float32 (expf and friends, a few ulp): 2–3× faster than
# float64 and far inside the 1e-4 tolerance. e^-x overflowing to inf gives the right limit (0).
@njit(cache=True, fastmath=False)
def _sigmoid(x, y):
    one = np.float32(1.0)
    for i in range(x.size):
        y[i] = one / (one + np.exp(-x[i]))


@njit(cache=True, fastmath=False)
def _tanh(x, y):
    for i in range(x.size):
        y[i] = np.tanh(x[i])


@njit(cache=True, fastmath=False)
def _leaky_relu(x, slope, y):
    s = np.float32(slope)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > 0.0 else v * s


@njit(cache=True, fastmath=False)
def _elu(x, alpha, y):
    a = np.float32(alpha)
    for i in range(x.size):
        v = x[i]
        y[i] = v if v > 0.0 else a * np.expm1(v)


@njit(cache=True, fastmath=False)
def _silu(x, y):
    one = np.float32(1.0)
    for i in range(x.size):
        v = x[i]
        y[i] = v / (one + np.exp(-v))


@njit(cache=True, fastmath=False)
def _hardswish(x, y):
    for i in range(x.size):
        v = x[i]
        r = v + np.float32(3.0)
        if r < 0.0:
            r = np.float32(0.0)
        elif r > 6.0:
            r = np.float32(6.0)
        y[i] = v * r / np.float32(6.0)


def _pointwise(fn, *scalars):
    def kernel(attrs, inputs, params, ctx):
        x = f32(inputs[0])
        y = np.empty_like(x)
        fn(x.reshape(-1), *(float(getattr(attrs, s)) for s in scalars), y.reshape(-1))
        return y
    kernel.__name__ = fn.__name__.lstrip("_")
    kernel.__doc__ = fn.__doc__
    return kernel


def identity(attrs, inputs, params, ctx):
    return f32(inputs[0])


relu = _pointwise(_relu)
relu6 = _pointwise(_relu6)
sigmoid = _pointwise(_sigmoid)
tanh = _pointwise(_tanh)
leaky_relu = _pointwise(_leaky_relu, "slope")
elu = _pointwise(_elu, "alpha")
silu = _pointwise(_silu)
hardswish = _pointwise(_hardswish)

# --- dropout -----------------------------------------------------------------------------------


@njit(cache=True, fastmath=False)
def _dropout_apply(x, mask, keep, y):
    """y = x / keep where mask, else 0 (keep = 1 − p; the division in float64, as the reference)."""
    for i in range(x.size):
        y[i] = np.float64(x[i]) / keep if mask[i] else 0.0


def dropout(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    p = float(attrs.p)
    if ctx.mode != "train" or p == 0.0:  # identity (and no mask drawn), as the reference
        return x
    if ctx.rng is None:
        raise ValueError("dropout in training needs a random generator (RunContext.rng)")
    # drawn exactly as the reference draws it, so every backend drops the same elements
    mask = ctx.rng.random(x.shape, dtype=np.float32) >= p
    y = np.empty_like(x)
    _dropout_apply(x.reshape(-1), mask.reshape(-1), 1.0 - p, y.reshape(-1))
    return y

# --- softmax, maxout ---------------------------------------------------------------------------


@njit(cache=True, fastmath=False)
def _softmax(x, y):
    """Softmax along the middle axis of x: O×L×I, shifting by the maximum first."""
    o_, l_, i_ = x.shape
    m = np.empty(i_, np.float32)
    s = np.empty(i_, np.float64)
    for o in range(o_):
        xo = x[o]
        yo = y[o]
        for i in range(i_):
            m[i] = xo[0, i]
            s[i] = 0.0
        for l in range(1, l_):
            row = xo[l]
            for i in range(i_):
                if row[i] > m[i]:
                    m[i] = row[i]
        for l in range(l_):
            row = xo[l]
            out = yo[l]
            for i in range(i_):
                e = math.exp(np.float64(row[i] - m[i]))
                out[i] = e
                s[i] += e
        for l in range(l_):
            out = yo[l]
            for i in range(i_):
                out[i] = out[i] / s[i]


def softmax(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    axis = attrs.axis % x.ndim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    y = np.empty_like(x)
    _softmax(x.reshape(outer, x.shape[axis], inner), y.reshape(outer, x.shape[axis], inner))
    return y


@njit(cache=True, fastmath=False)
def _maxout(x, y):
    """x: N×C'×pieces×S → y: N×C'×S, the maximum over the pieces (NaN propagates)."""
    n_, c_, k_, s_ = x.shape
    for n in range(n_):
        for c in range(c_):
            dst = y[n, c]
            src = x[n, c]
            for s in range(s_):
                dst[s] = src[0, s]
            for k in range(1, k_):
                row = src[k]
                for s in range(s_):
                    v = row[s]
                    if v > dst[s] or np.isnan(v):
                        dst[s] = v


def maxout(attrs, inputs, params, ctx):
    x = f32(inputs[0])
    n, c = x.shape[:2]
    rest = x.shape[2:]
    k = attrs.pieces
    y = np.empty((n, c // k) + rest, np.float32)
    _maxout(x.reshape(n, c // k, k, -1), y.reshape(n, c // k, -1))
    return y

# --- merges ------------------------------------------------------------------------------------


@njit(cache=True, fastmath=False)
def _add2(a, b, y):
    for i in range(a.size):
        y[i] = a[i] + b[i]


@njit(cache=True, fastmath=False)
def _add_into(y, b):
    for i in range(y.size):
        y[i] += b[i]


def add(attrs, inputs, params, ctx):
    xs = [f32(x) for x in inputs]
    shape = xs[0].shape
    for x in xs[1:]:
        if x.shape != shape:
            raise ValueError(f"add: inputs of different shapes {shape} and {x.shape}")
    y = np.empty(shape, np.float32)
    flat = y.reshape(-1)
    _add2(xs[0].reshape(-1), xs[1].reshape(-1), flat)
    for x in xs[2:]:  # left to right, as a sum written out would
        _add_into(flat, x.reshape(-1))
    return y


@njit(cache=True, fastmath=False)
def _mul_broadcast(x, b, sizes, bstrides, y):
    """y = x · b where b broadcasts: x is viewed as sizes[0]×…×sizes[-1] (C order) and b's index
    along dimension d advances by bstrides[d] (0 where b has size 1)."""
    r = sizes.shape[0]
    inner = sizes[r - 1]
    istride = bstrides[r - 1]
    outer = x.size // inner
    idx = np.zeros(r, np.int64)
    for o in range(outer):
        off = 0
        for d in range(r - 1):
            off += idx[d] * bstrides[d]
        base = o * inner
        if istride == 0:
            v = b[off]
            for k in range(inner):
                y[base + k] = x[base + k] * v
        else:
            for k in range(inner):
                y[base + k] = x[base + k] * b[off + k]
        d = r - 2
        while d >= 0:
            idx[d] += 1
            if idx[d] < sizes[d]:
                break
            idx[d] = 0
            d -= 1


def _broadcast_groups(xs: tuple[int, ...], bs: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Collapse x's shape into runs of dimensions along which b is either full or broadcast;
    returns the run sizes and b's (element) stride for each run."""
    runs: list[list] = []  # [size, full?]
    for dx, db in zip(xs, bs):
        if dx == 1:
            continue
        full = db == dx
        if runs and runs[-1][1] == full:
            runs[-1][0] *= dx
        else:
            runs.append([dx, full])
    if not runs:
        runs = [[1, True]]
    sizes = np.array([r[0] for r in runs], np.int64)
    strides = np.zeros(len(runs), np.int64)
    step = 1
    for i in range(len(runs) - 1, -1, -1):
        if runs[i][1]:
            strides[i] = step
            step *= runs[i][0]
    return sizes, strides


def mul(attrs, inputs, params, ctx):
    x, b = f32(inputs[0]), f32(inputs[1])
    if b.ndim != x.ndim or any(db not in (dx, 1) for dx, db in zip(x.shape, b.shape)):
        raise ValueError(f"mul: {b.shape} does not broadcast onto {x.shape}")
    y = np.empty_like(x)
    sizes, strides = _broadcast_groups(x.shape, b.shape)
    _mul_broadcast(x.reshape(-1), b.reshape(-1), sizes, strides, y.reshape(-1))
    return y
