"""Elementwise kernels: activations, dropout, softmax, maxout and the merges add and mul.

Pointwise kernels work on the flat (ravelled) C-contiguous array, so one compiled function
serves every rank.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _act
from ._act import FMA, act_row
from ._util import f32, into, output

# Arrays at least this large go to the parallel kernels (below it, waking the threads, ~15 µs,
# costs more than it saves): about 40 µs of one thread's work, so 32K elements for the activations
# with an exp (~1.3 ns each), 256K for the memory-bound ones and the merges (~0.2 ns each).
PARALLEL_MIN = 1 << 15
PARALLEL_MIN_CHEAP = 1 << 18
_CHEAP = (_act.RELU, _act.RELU6, _act.LEAKY_RELU, _act.HARDSWISH)
_BLOCK = 1 << 14  # elements per parallel work item


@njit(cache=True, fastmath=FMA, parallel=True)
def _act_parallel(x, y, act, alpha):
    """y = act(x) over flat arrays, in blocks (each thread writes its own blocks); the same
    float32 arithmetic as the serial kernel below."""
    size = x.shape[0]
    for blk in prange((size + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        hi = min(size, lo + _BLOCK)
        act_row(x[lo:hi], y[lo:hi], np.float32(0.0), False, act, alpha)

# --- activations -------------------------------------------------------------------------------
# One formula per activation, in _act.act_row, serves the serial and parallel kernels below and the
# convolution epilogues. The transcendental ones compute in float32 with _act's vectorised exp
# (≤ 1 ulp; tanh and expm1 ≤ 3 ulp), far inside the 1e-4 tolerance.


@njit(cache=True, fastmath=FMA)
def _act_serial(x, y, act, alpha):
    """y = act(x) over flat arrays, in one thread (small arrays)."""
    act_row(x, y, np.float32(0.0), False, act, alpha)


def activate(x: np.ndarray, code: int, alpha: float, out: np.ndarray | None = None) -> np.ndarray:
    """out = act(x) for a C-contiguous float32 x (out: a new array, or x itself for in place)."""
    y = np.empty_like(x) if out is None else out
    run = _act_parallel if x.size >= (PARALLEL_MIN_CHEAP if code in _CHEAP else PARALLEL_MIN) else _act_serial
    run(x.reshape(-1), y.reshape(-1), code, alpha)
    return y


def _pointwise(name, code, scalar=None):
    def kernel(attrs, inputs, params, ctx, out=None):
        return activate(f32(inputs[0]), code, float(getattr(attrs, scalar)) if scalar else 0.0, out)
    kernel.__name__ = name
    kernel.__doc__ = f"{name}, elementwise (formula in _act.act_row)"
    return kernel


def identity(attrs, inputs, params, ctx, out=None):
    return into(out, f32(inputs[0]))


relu = _pointwise("relu", _act.RELU)
relu6 = _pointwise("relu6", _act.RELU6)
sigmoid = _pointwise("sigmoid", _act.SIGMOID)
tanh = _pointwise("tanh", _act.TANH)
leaky_relu = _pointwise("leaky_relu", _act.LEAKY_RELU, "slope")
elu = _pointwise("elu", _act.ELU, "alpha")
silu = _pointwise("silu", _act.SILU)
hardswish = _pointwise("hardswish", _act.HARDSWISH)

# --- dropout -----------------------------------------------------------------------------------


@njit(cache=True, fastmath=FMA)
def _dropout_apply(x, mask, keep, y):
    """y = x / keep where mask, else 0 (keep = 1 − p; the division in float64, as the reference)."""
    for i in range(x.size):
        y[i] = np.float64(x[i]) / keep if mask[i] else 0.0


def dropout(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    p = float(attrs.p)
    if ctx.mode != "train" or p == 0.0:  # identity (and no mask drawn), as the reference
        return into(out, x)
    if ctx.rng is None:
        raise ValueError("dropout in training needs a random generator (RunContext.rng)")
    # drawn exactly as the reference draws it, so every backend drops the same elements
    mask = ctx.rng.random(x.shape, dtype=np.float32) >= p
    y = output(out, x.shape)
    _dropout_apply(x.reshape(-1), mask.reshape(-1), 1.0 - p, y.reshape(-1))
    return y

# --- softmax, maxout ---------------------------------------------------------------------------


@njit(cache=True, fastmath=FMA)
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


def softmax(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    axis = attrs.axis % x.ndim
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    y = output(out, x.shape)
    _softmax(x.reshape(outer, x.shape[axis], inner), y.reshape(outer, x.shape[axis], inner))
    return y


@njit(cache=True, fastmath=FMA)
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


def maxout(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c = x.shape[:2]
    rest = x.shape[2:]
    k = attrs.pieces
    y = output(out, (n, c // k) + rest)
    _maxout(x.reshape(n, c // k, k, -1), y.reshape(n, c // k, -1))
    return y

# --- merges ------------------------------------------------------------------------------------


# Every inner loop below runs over range(0, m) on contiguous slices: an index Numba cannot prove
# non-negative gets a wraparound test (i < 0 → i + size), which stops LLVM from vectorising the
# loop (the merges ran 3–5× slower than numpy that way).


@njit(cache=True, fastmath=FMA, inline="always")
def _merge_row(a, b, y, mul):
    if mul:
        for i in range(y.shape[0]):
            y[i] = a[i] * b[i]
    else:
        for i in range(y.shape[0]):
            y[i] = a[i] + b[i]


@njit(cache=True, fastmath=FMA, parallel=True)
def _merge_parallel(a, b, y, mul):
    """y = a · b (mul) or a + b over flat arrays of one size, in blocks (y may be a)."""
    size = y.shape[0]
    for blk in prange((size + _BLOCK - 1) // _BLOCK):
        lo = blk * _BLOCK
        hi = min(size, lo + _BLOCK)
        _merge_row(a[lo:hi], b[lo:hi], y[lo:hi], mul)


@njit(cache=True, fastmath=FMA)
def _merge_serial(a, b, y, mul):
    _merge_row(a, b, y, mul)


def add(attrs, inputs, params, ctx, out=None):
    xs = [f32(x) for x in inputs]
    shape = xs[0].shape
    for x in xs[1:]:
        if x.shape != shape:
            raise ValueError(f"add: inputs of different shapes {shape} and {x.shape}")
    y = output(out, shape)  # (out may be xs[0] itself: each element is read before it is written)
    flat = y.reshape(-1)
    run = _merge_parallel if flat.size >= PARALLEL_MIN_CHEAP else _merge_serial
    run(xs[0].reshape(-1), xs[1].reshape(-1), flat, False)
    for x in xs[2:]:  # left to right, as a sum written out would
        run(flat, x.reshape(-1), flat, False)
    return y


@njit(cache=True, fastmath=FMA, inline="always")
def _mul_row(x, b, sizes, bstrides, y, o):
    """Row o of y = x · b where b broadcasts: x is viewed as sizes[0]×…×sizes[-1] (C order) and b's
    index along dimension d advances by bstrides[d] (0 where b has size 1)."""
    r = sizes.shape[0]
    inner = sizes[r - 1]
    off = 0  # b's offset, decoded from the row index
    div = 1
    for d in range(r - 2, -1, -1):
        off += ((o // div) % sizes[d]) * bstrides[d]
        div *= sizes[d]
    base = o * inner
    xr = x[base:base + inner]
    yr = y[base:base + inner]
    if bstrides[r - 1] == 0:
        v = b[off]
        for k in range(inner):
            yr[k] = xr[k] * v
    else:
        br = b[off:off + inner]
        for k in range(inner):
            yr[k] = xr[k] * br[k]


@njit(cache=True, fastmath=FMA, parallel=True)
def _mul_parallel(x, b, sizes, bstrides, y):
    for o in prange(x.size // sizes[sizes.shape[0] - 1]):  # each thread its own rows
        _mul_row(x, b, sizes, bstrides, y, o)


@njit(cache=True, fastmath=FMA)
def _mul_serial(x, b, sizes, bstrides, y):
    for o in range(x.size // sizes[sizes.shape[0] - 1]):
        _mul_row(x, b, sizes, bstrides, y, o)


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


def mul(attrs, inputs, params, ctx, out=None):
    x, b = f32(inputs[0]), f32(inputs[1])
    if b.ndim != x.ndim or any(db not in (dx, 1) for dx, db in zip(x.shape, b.shape)):
        raise ValueError(f"mul: {b.shape} does not broadcast onto {x.shape}")
    y = output(out, x.shape)
    parallel = x.size >= PARALLEL_MIN_CHEAP
    if b.shape == x.shape:  # no broadcasting: in blocks (as rows, it would be one long row)
        (_merge_parallel if parallel else _merge_serial)(x.reshape(-1), b.reshape(-1), y.reshape(-1), True)
        return y
    sizes, strides = _broadcast_groups(x.shape, b.shape)
    (_mul_parallel if parallel else _mul_serial)(x.reshape(-1), b.reshape(-1), sizes, strides, y.reshape(-1))
    return y
