"""squeeze_excitation (ops/fused.py, made by passes/fuse.py): a squeeze-excitation gate in one
kernel call — the mean of each channel, then the two 1×1 convolutions on those means, each with
its bias and activation. Unfused, these were three steps of ~40 µs each inside a network, almost
all of it Python and dispatch (EfficientNet-B0 has 16)."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._act import FMA, act_row, activation_code
from ._util import bias_or_zeros, f32, output, thread_count
from .pool import row_mean

# Inputs with fewer values than this take the mean on the calling thread: waking the pool costs more.
_PARALLEL_MIN = 1 << 15


@njit(cache=True, fastmath=FMA, parallel=True)
def _gate_parallel(x, means, hidden, w1t, b1, act1, alpha1, w2t, b2, act2, alpha2, y, threads):
    rows = x.shape[0]
    for t in prange(threads):  # one contiguous run of channels per thread
        for r in range(rows * t // threads, rows * (t + 1) // threads):
            means[r] = row_mean(x[r])
    _excite(means, hidden, w1t, b1, act1, alpha1, w2t, b2, act2, alpha2, y)


@njit(cache=True, fastmath=FMA)
def _gate_serial(x, means, hidden, w1t, b1, act1, alpha1, w2t, b2, act2, alpha2, y):
    for r in range(x.shape[0]):
        means[r] = row_mean(x[r])
    _excite(means, hidden, w1t, b1, act1, alpha1, w2t, b2, act2, alpha2, y)


@njit(cache=True, fastmath=FMA)
def _excite(means, hidden, w1t, b1, act1, alpha1, w2t, b2, act2, alpha2, y):
    """Per image: hidden = act1(W1 · mean + b1), y = act2(W2 · hidden + b2). The weights come
    transposed (in × out), so each input adds its column times one value to the whole output row:
    a vectorised loop, not a dot product (whose one running sum LLVM may not vectorise)."""
    c, k = w1t.shape
    for n in range(y.shape[0]):
        mean, h, g = means[n * c:(n + 1) * c], hidden[n], y[n]
        _mix(mean, w1t, b1, h)
        act_row(h, h, np.float32(0.0), False, act1, alpha1)
        _mix(h, w2t, b2, g)
        act_row(g, g, np.float32(0.0), False, act2, alpha2)


@njit(cache=True, fastmath=FMA, inline="always")
def _mix(v, wt, b, out):
    """out = wt.T · v + b in float32, input by input (four per pass over out: fewer loads and
    stores of it; each out[j] still sums its terms in input order)."""
    m, n = out.shape[0], wt.shape[0]
    for j in range(m):
        out[j] = b[j]
    whole = n - n % 4
    for i in range(0, whole, 4):
        c0, c1, c2, c3 = wt[i], wt[i + 1], wt[i + 2], wt[i + 3]
        v0, v1, v2, v3 = np.float32(v[i]), np.float32(v[i + 1]), np.float32(v[i + 2]), np.float32(v[i + 3])
        for j in range(m):
            s = out[j]
            s += c0[j] * v0
            s += c1[j] * v1
            s += c2[j] * v2
            s += c3[j] * v3
            out[j] = s
    for i in range(whole, n):
        col, vi = wt[i], np.float32(v[i])
        for j in range(m):
            out[j] += col[j] * vi


class _Gate:
    """squeeze_excitation for one node, its weights transposed and its activations coded once."""

    def __init__(self, attrs, params):
        w1 = f32(params["squeeze_weight"])
        w2 = f32(params["excite_weight"])
        self.k, self.c = w1.shape[0], w1.shape[1]
        self.w1t = np.ascontiguousarray(w1.reshape(self.k, self.c).T)
        self.w2t = np.ascontiguousarray(w2.reshape(self.c, self.k).T)
        self.b1, _ = bias_or_zeros(params, self.k, attrs.squeeze_bias, "squeeze_bias")
        self.b2, _ = bias_or_zeros(params, self.c, attrs.excite_bias, "excite_bias")
        self.act1, self.alpha1 = activation_code(attrs.activation), np.float32(attrs.alpha)
        self.act2, self.alpha2 = activation_code(attrs.gate_activation), np.float32(attrs.gate_alpha)

    def __call__(self, inputs, out=None):
        x = f32(inputs[0])
        n, c, h, w = x.shape
        y = output(out, (n, c, 1, 1))
        means = np.empty(n * c, np.float64)
        hidden = np.empty((n, self.k), np.float32)
        args = (means, hidden, self.w1t, self.b1, self.act1, self.alpha1, self.w2t, self.b2, self.act2, self.alpha2,
                y.reshape(n, c))
        if x.size < _PARALLEL_MIN:
            _gate_serial(x.reshape(n * c, h * w), *args)
        else:
            _gate_parallel(x.reshape(n * c, h * w), *args, thread_count())
        return y


def prepare(attrs, params):
    """The kernel for one node, ready to run (what the executor calls in eval mode)."""
    return _Gate(attrs, params)


def squeeze_excitation(attrs, inputs, params, ctx, out=None):
    return prepare(attrs, params)(inputs, out)


squeeze_excitation.prepare = prepare
