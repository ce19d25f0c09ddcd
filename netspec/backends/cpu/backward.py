"""The CPU kernel of the `grad` op (ops/grad.py): one gradient of a forward node, float32.

`grad_kernel` dispatches on the forward op and what the gradient is taken with respect to (an
input, or a parameter by name) to a fast kernel where there is one — the convolutions
(`backward_conv`), pooling, batch normalization, linear layers, and the cheap elementwise ops
that follow every layer (ReLU's dy·(y > 0) after each convolution) — and otherwise runs the op's
backward rule (OpDef.backward: numpy, float64 inside), cast to float32. A fast kernel that lacks
a forward value it needs (the rule's `uses` did not ask for it) also leaves the gradient to the
rule. The rules are the judge: tests/test_cpu_backward.py holds every fast kernel to them.
"""
from __future__ import annotations

import math
import threading
import weakref

import numpy as np
from numba import njit, prange

from ... import ops
from ...ops.grad import GradAttrs, grad_args, unpack
from . import backward_conv, backward_winograd, depthwise, gemm
from ._act import FMA
from ._util import f32, into, output, thread_count

_REDUCE = {"contract", "reassoc"}  # (sums may reassociate, so they vectorise; float64 accumulators)


def grad_kernel(attrs: GradAttrs, inputs, params, ctx, out=None) -> np.ndarray:
    """The gradient `attrs` describes, from the grad node's inputs (dy, then the forward values its
    `uses` names) and the forward node's parameters; written into `out` where one is given."""
    name = ops.registry.canonical_name(attrs.op)
    fast = _FAST.get((name, "input" if isinstance(attrs.wrt, int) else attrs.wrt))
    if fast is not None and not attrs.seed:
        dy, xs, y = unpack(attrs, inputs)
        shape = (dy.shape[0],) + tuple(attrs.dims) if attrs.batched else tuple(attrs.dims)
        g = fast(attrs.forward, attrs.wrt, f32(dy), xs, y, params, shape, ctx, out)
        if g is not None:
            return g
    return rule(attrs, inputs, params, ctx, out)


def rule(attrs: GradAttrs, inputs, params, ctx, out=None) -> np.ndarray:
    """The forward op's backward rule (the reference), as float32."""
    op = ops.get(attrs.op)
    if op is None or op.backward is None:
        raise KeyError(f"op '{attrs.op}' has no backward rule")
    g = op.backward.rule(attrs.forward, grad_args(attrs, list(inputs), params, ctx))
    return into(out, np.ascontiguousarray(g, dtype=np.float32))


# --- convolutions ---------------------------------------------------------------------------------

def _conv2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    if wrt != 0:
        return None
    return backward_conv.conv2d_input(dy, f32(params["weight"]), shape, a.stride, a.dilation, a.pads, a.groups,
                                      out)


def _conv2d_weight(a, wrt, dy, xs, y, params, shape, ctx, out):
    if xs is None:
        return None
    return backward_conv.conv2d_weight(f32(xs[0]), dy, a.groups, a.kernel, a.stride, a.dilation, a.pads[:2], out)


def _bias(a, wrt, dy, xs, y, params, shape, ctx, out):
    return backward_conv.channel_sums(dy, out)


def _conv_transpose2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    if wrt != 0:
        return None
    return backward_conv.conv_transpose2d_input(dy, f32(params["weight"]), shape, a.stride, a.dilation, a.padding,
                                                a.groups, out)


def _conv_transpose2d_weight(a, wrt, dy, xs, y, params, shape, ctx, out):
    if xs is None:
        return None
    return backward_conv.conv_transpose2d_weight(f32(xs[0]), dy, a.groups, a.kernel, a.stride, a.dilation,
                                                 a.padding, out)


# --- pooling --------------------------------------------------------------------------------------

@njit(cache=True, fastmath=FMA)
def _running_max(run, best, tap, new_best, new_tap, number):
    """new = run where it beats best (strictly greater, or a NaN: the first NaN then stays), else
    best, with the winner's `number`. Into other arrays than it reads: an update in place
    becomes a masked store (slow on AMD: 3× here), new arrays keep the loop a plain vector blend."""
    for k in range(run.shape[0]):
        v = run[k]
        b = best[k]
        wins = (v > b) | (v != v)
        new_best[k] = v if wins else b
        new_tap[k] = number if wins else tap[k]


@njit(cache=True, fastmath=FMA, parallel=True)
def _maxpool_grad(x, dy, kh, kw, sh, sw, ph, pw, dh, dw, threads, dx):
    """dx: each window's dy added at the window's maximum, found again in x: the first maximum in
    the window's order (rows, then columns) on ties; padding never wins; a window whose maximum is
    not finite (a NaN in it, or only infinities) passes nothing, as the rule.

    Per plane: x padded with −inf, laid out as the forward depthwise kernel lays out its input
    (`depthwise.by_planes`: sh×sw phases, rows wq long), so that each tap's values for all the
    windows are one contiguous run; a vectorised running maximum over the taps keeps the winning
    tap's offset in the plane; then one scatter-add per window. Parallel over planes, buffers per
    thread. (Planes up to 2^24 values: the offsets are exact float32.)"""
    n_, c_, h_, w_ = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    hq = ho + ((kh - 1) * dh) // sh
    wq = wo + ((kw - 1) * dw) // sw
    size = hq * wq + wq
    m = ho * wq
    taps, fills, n_even, n_odd = depthwise._phase_plan(h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, hq, wq, size)
    ntaps = kh * kw
    offsets = np.empty(ntaps, np.float32)  # tap (i, j) of a window: its position in x's plane from the window's corner
    for i in range(kh):
        for j in range(kw):
            offsets[i * kw + j] = i * dh * w_ + j * dw
    planes = n_ * c_
    for t in prange(threads):
        phases = np.full(sh * sw * size, -np.inf, np.float32)  # (the padding: only the inside is written)
        best = np.empty((2, m), np.float32)
        tap = np.empty((2, m), np.float32)  # the winner's offset (exact as a float: one vector type in the loop)
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            xc, gc, dc = x[n, c], dy[n, c], dx[n, c]
            depthwise._fill_phases(xc, fills, sw, n_even, n_odd, phases)
            b0, t0 = best[0], tap[0]
            for k in range(m):
                b0[k] = -np.inf
                t0[k] = -1.0
            for tp in range(ntaps):  # ping-pong between the two rows of best and tap
                cur = tp % 2
                _running_max(phases[taps[tp]:taps[tp] + m], best[cur], tap[cur], best[1 - cur], tap[1 - cur],
                             offsets[tp])
            final_best, final_tap = best[ntaps % 2], tap[ntaps % 2]
            flat = dc.reshape(-1)
            for k in range(h_ * w_):
                flat[k] = 0.0
            for oh in range(ho):
                g = gc[oh]
                base = (oh * sh - ph) * w_ - pw
                for q in range(wo):
                    k = oh * wq + q
                    if np.isfinite(final_best[k]):  # (−inf: all padding or all −inf; NaN, +inf: passes nothing)
                        flat[base + q * sw + int(final_tap[k])] += g[q]


def _maxpool2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    if xs is None:
        return None
    x = f32(xs[0])
    dx = output(out, x.shape)
    threads = max(1, min(thread_count(), x.shape[0] * x.shape[1]))
    _maxpool_grad(x, dy, *a.kernel, *a.stride, *a.padding, *a.dilation, threads, dx)
    return dx


@njit(cache=True, fastmath=FMA, parallel=True)
def _avgpool_grad(dy, kh, kw, sh, sw, ph, pw, include_pad, dx):
    """dx: each window's dy over its divisor, added over the input positions the window covers.
    The divisor as in the forward reference (PyTorch's): with include_pad the positions inside the
    padded border, else those inside the input. Parallel over planes."""
    n_, c_, h_, w_ = dx.shape
    ho, wo = dy.shape[2], dy.shape[3]
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        gc, dc = dy[n, c], dx[n, c]
        for r in range(h_):
            row = dc[r]
            for s in range(w_):
                row[s] = 0.0
        for oh in range(ho):
            r0 = oh * sh - ph
            r_lo, r_hi = max(r0, 0), min(r0 + kh, h_)
            rows = (min(r0 + kh, h_ + ph) - r0) if include_pad else (r_hi - r_lo)
            for ow in range(wo):
                s0 = ow * sw - pw
                s_lo, s_hi = max(s0, 0), min(s0 + kw, w_)
                cols = (min(s0 + kw, w_ + pw) - s0) if include_pad else (s_hi - s_lo)
                if rows <= 0 or cols <= 0:
                    continue
                g = gc[oh, ow] / np.float32(rows * cols)
                for r in range(r_lo, r_hi):
                    row = dc[r]
                    for s in range(s_lo, s_hi):
                        row[s] += g


def _avgpool2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    dx = output(out, shape)
    _avgpool_grad(dy, *a.kernel, *a.stride, *a.padding, bool(a.count_include_pad), dx)
    return dx


def _global_avgpool_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    dx = output(out, shape)
    np.divide(dy.reshape(shape[0], shape[1], 1, 1), np.float32(shape[2] * shape[3]), out=dx)
    return dx


def _adaptive_avgpool2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    from ...ops.pool import adaptive_bins
    n, c, h, w = shape
    dx = output(out, shape)
    dx[...] = 0.0
    for i, (top, bottom) in enumerate(adaptive_bins(h, a.size[0])):
        for j, (left, right) in enumerate(adaptive_bins(w, a.size[1])):
            g = dy[:, :, i, j] / np.float32((bottom - top) * (right - left))
            dx[:, :, top:bottom, left:right] += g[:, :, None, None]
    return dx


# --- batch normalization --------------------------------------------------------------------------

@njit(cache=True, fastmath=_REDUCE, parallel=True)
def _bn_sums(x, dy, batch, running_mean, mean, var, sum_dy, sum_dyx):
    """Per channel of x, dy (N×C×S), in float64: with `batch`, the batch mean and biased variance
    (sums shifted by the channel's first value, so the variance loses no digits to the mean), else
    the running mean as given; Σ dy and Σ dy·(x − mean). One pass; parallel over channels."""
    n_, c_, s_ = x.shape
    count = n_ * s_
    for c in prange(c_):
        k = np.float64(x[0, c, 0]) if batch else running_mean[c]
        sx, sxx, sd, sdx = 0.0, 0.0, 0.0, 0.0
        for n in range(n_):
            xr, dr = x[n, c], dy[n, c]
            for s in range(s_):
                v = np.float64(xr[s]) - k
                g = np.float64(dr[s])
                sx += v
                sxx += v * v
                sd += g
                sdx += g * v
        m = sx / count if batch else 0.0
        mean[c] = k + m
        var[c] = max(sxx / count - m * m, 0.0)
        sum_dy[c] = sd
        sum_dyx[c] = sdx - m * sd


@njit(cache=True, fastmath=FMA, parallel=True)
def _bn_input_grad(x, dy, a, b, k, mean, dx):
    """dx[n, c] = a[c]·dy[n, c] + b[c] + k[c]·(x[n, c] − mean[c]), in float64 (in training the terms
    nearly cancel where the batch is 2 values per channel, or its variance is near eps: float32
    would keep 1e-3 of the result), stored as float32; x unread where k is 0."""
    n_, c_, s_ = dy.shape
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        ac, bc, kc, mc = a[c], b[c], k[c], mean[c]
        dr, out = dy[n, c], dx[n, c]
        if kc == 0.0:
            for s in range(s_):
                out[s] = ac * dr[s] + bc
        else:
            xr = x[n, c]
            for s in range(s_):
                out[s] = ac * dr[s] + bc + kc * (xr[s] - mc)


def _bn_batch(ctx) -> bool:
    return ctx is not None and ctx.mode == "train"


# A batch norm's three gradients (γ, β, then x: the autodiff pass's order) read the same per-channel
# sums of the same dy and x: the last ones are kept, with weak references to the arrays they came
# from, and reused while those very arrays are what the next gradient gets (kernels never write into
# their inputs). On MobileNet v1 the sums were a third of its batch norms' backward time.
_recent = threading.local()


def _bn_stats(a, dy, xs, params, ctx):
    """(x as N×C×S, mean, invstd, Σdy, Σdy·(x − mean)) in float64 with the batch's statistics (training)
    or the running ones; None without x."""
    if xs is None:
        return None
    c = dy.shape[1]
    dy3 = dy.reshape(dy.shape[0], c, -1)
    x = f32(xs[0])
    x3 = x.reshape(dy3.shape)
    batch = _bn_batch(ctx)
    key = (float(a.eps), batch)
    arrays = (dy, x) if batch else (dy, x, params["running_mean"], params["running_var"])
    last = getattr(_recent, "bn", None)
    if last is not None and last[0] == key and len(last[1]) == len(arrays) \
            and all(ref() is array for ref, array in zip(last[1], arrays)):
        return (x3,) + last[2]
    running_mean = np.asarray(params["running_mean"], np.float64).reshape(c)
    mean, var, sdy, sdyx = (np.empty(c, np.float64) for _ in range(4))
    _bn_sums(x3, dy3, batch, running_mean, mean, var, sdy, sdyx)
    if not batch:
        var = np.asarray(params["running_var"], np.float64).reshape(c)
    stats = (mean, 1.0 / np.sqrt(var + a.eps), sdy, sdyx)
    _recent.bn = (key, tuple(weakref.ref(array) for array in arrays), stats)
    return (x3,) + stats


def _batchnorm2d_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    """Training: ∂x = (γ·invstd/M)·(M·dy − Σdy − x̂·Σ(dy·x̂)); inference: dy·γ·invstd (running
    statistics)."""
    c = dy.shape[1]
    gamma = np.asarray(params["weight"], np.float64).reshape(c) if a.affine else np.ones(c)
    dy3 = dy.reshape(dy.shape[0], c, -1)
    dx = output(out, dy.shape)
    zeros = np.zeros(c)
    if not _bn_batch(ctx):
        invstd = 1.0 / np.sqrt(np.asarray(params["running_var"], np.float64).reshape(c) + a.eps)
        _bn_input_grad(dy3, dy3, gamma * invstd, zeros, zeros, zeros, dx.reshape(dy3.shape))
        return dx
    stats = _bn_stats(a, dy, xs, params, ctx)
    if stats is None:
        return None
    x3, mean, invstd, sdy, sdyx = stats
    count = dy3.shape[0] * dy3.shape[2]
    scale = gamma * invstd
    coef_b = -scale * sdy / count
    coef_k = -scale * invstd * invstd * sdyx / count  # x̂·Σ(dy·x̂)/M = (x − mean)·invstd²·Σdy(x − mean)/M
    _bn_input_grad(x3, dy3, scale, coef_b, coef_k, mean, dx.reshape(dy3.shape))
    return dx


def _batchnorm2d_weight(a, wrt, dy, xs, y, params, shape, ctx, out):
    """∂γ = Σ dy·x̂."""
    stats = _bn_stats(a, dy, xs, params, ctx)
    if stats is None:
        return None
    _, _, invstd, _, sdyx = stats
    return into(out, (sdyx * invstd).astype(np.float32).reshape(shape))


def _batchnorm2d_bias(a, wrt, dy, xs, y, params, shape, ctx, out):
    """∂β = Σ dy (the sums of ∂γ's pass where that read this dy)."""
    last = getattr(_recent, "bn", None)
    if last is not None and last[1][0]() is dy:
        return into(out, last[2][2].astype(np.float32).reshape(shape))
    return backward_conv.channel_sums(dy, out).reshape(shape)


# --- linear ---------------------------------------------------------------------------------------

def _linear_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    """∂x = dy · W."""
    w = f32(params["weight"])
    dx = output(out, shape)
    gemm.matmul(dy[None], w[None], dx[None])
    return dx


def _linear_weight(a, wrt, dy, xs, y, params, shape, ctx, out):
    """∂W = dyᵀ · x."""
    if xs is None:
        return None
    dw = output(out, shape)
    gemm.matmul(dy[None], f32(xs[0])[None], dw[None], trans_a=True)
    return dw


def _linear_bias(a, wrt, dy, xs, y, params, shape, ctx, out):
    return into(out, dy.sum(axis=0, dtype=np.float64).astype(np.float32))


# --- elementwise ----------------------------------------------------------------------------------

_PARALLEL_MIN = 1 << 16  # elements: below this, one thread (waking the pool costs more)
_BLOCK = 1 << 14


@njit(cache=True, fastmath=FMA)
def _mask_run(dy, v, out, upper):
    """out = dy · (0 < v) (and v < upper, where upper > 0): ReLU's and ReLU6's gradient, from either
    side of the activation (the same set of positions). Slices indexed from 0, so it vectorises."""
    zero, one = np.float32(0.0), np.float32(1.0)
    if upper > 0:
        for k in range(out.shape[0]):
            out[k] = dy[k] * (one if (v[k] > zero) & (v[k] < upper) else zero)
    else:
        for k in range(out.shape[0]):
            out[k] = dy[k] * (one if v[k] > zero else zero)


@njit(cache=True, fastmath=FMA, parallel=True)
def _mask_parallel(dy, v, out, upper):
    size = dy.shape[0]
    for blk in prange((size + _BLOCK - 1) // _BLOCK):
        lo, hi = blk * _BLOCK, min(size, (blk + 1) * _BLOCK)
        _mask_run(dy[lo:hi], v[lo:hi], out[lo:hi], upper)


def _masked(dy, v, out, upper):
    g = output(out, dy.shape)
    args = (dy.reshape(-1), f32(v).reshape(-1), g.reshape(-1), np.float32(upper))
    (_mask_parallel if dy.size >= _PARALLEL_MIN and thread_count() > 1 else _mask_run)(*args)
    return g


def _value(xs, y):
    """The activation's input or output, whichever the grad node was given (None: neither)."""
    return y if y is not None else (xs[0] if xs is not None else None)


def _relu_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    v = _value(xs, y)
    return None if v is None else _masked(dy, v, out, 0.0)


def _relu6_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    v = _value(xs, y)
    return None if v is None else _masked(dy, v, out, 6.0)


def _leaky_relu_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    """dy where x > 0, slope·dy elsewhere (from y only for a slope ≥ 0: then y > 0 exactly where x > 0)."""
    v = xs[0] if xs is not None else (y if a.slope >= 0 else None)
    if v is None:
        return None
    g = output(out, dy.shape)
    np.multiply(dy, np.where(f32(v) > 0, np.float32(1.0), np.float32(a.slope)), out=g)
    return g


@njit(cache=True, fastmath=FMA)
def _tanh_run(dy, y, out):
    for k in range(out.shape[0]):
        out[k] = dy[k] * (np.float32(1.0) - y[k] * y[k])


@njit(cache=True, fastmath=FMA)
def _sigmoid_run(dy, y, out):
    for k in range(out.shape[0]):
        out[k] = dy[k] * (y[k] * (np.float32(1.0) - y[k]))


def _of_output(run, dy, y, out):
    g = output(out, dy.shape)
    run(dy.reshape(-1), f32(y).reshape(-1), g.reshape(-1))
    return g


def _tanh_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    """dy · (1 − y²)."""
    if y is None:
        return None
    return _of_output(_tanh_run, dy, y, out)


def _sigmoid_input(a, wrt, dy, xs, y, params, shape, ctx, out):
    """dy · y · (1 − y)."""
    if y is None:
        return None
    return _of_output(_sigmoid_run, dy, y, out)


def _pass_through(a, wrt, dy, xs, y, params, shape, ctx, out):
    """dy itself, in the input's shape: add (every input), flatten, reshape, identity."""
    if math.prod(shape) != dy.size:
        return None
    if out is None:
        return dy.reshape(shape).copy()
    out.reshape(-1)[:] = dy.reshape(-1)
    return out


# (forward op, "input" or a parameter's name) → fast(forward attrs, wrt, dy, forward inputs or None,
# forward output or None, params, gradient shape, ctx, out) → gradient, or None for the rule
_FAST = {
    ("conv2d", "input"): _conv2d_input,
    ("conv2d", "weight"): _conv2d_weight,
    ("conv2d", "bias"): _bias,
    ("conv_transpose2d", "input"): _conv_transpose2d_input,
    ("conv_transpose2d", "weight"): _conv_transpose2d_weight,
    ("conv_transpose2d", "bias"): _bias,
    ("maxpool2d", "input"): _maxpool2d_input,
    ("avgpool2d", "input"): _avgpool2d_input,
    ("global_avgpool", "input"): _global_avgpool_input,
    ("adaptive_avgpool2d", "input"): _adaptive_avgpool2d_input,
    ("batchnorm2d", "input"): _batchnorm2d_input,
    ("batchnorm2d", "weight"): _batchnorm2d_weight,
    ("batchnorm2d", "bias"): _batchnorm2d_bias,
    ("linear", "input"): _linear_input,
    ("linear", "weight"): _linear_weight,
    ("linear", "bias"): _linear_bias,
    ("relu", "input"): _relu_input,
    ("relu6", "input"): _relu6_input,
    ("leaky_relu", "input"): _leaky_relu_input,
    ("tanh", "input"): _tanh_input,
    ("sigmoid", "input"): _sigmoid_input,
    ("add", "input"): _pass_through,
    ("flatten", "input"): _pass_through,
    ("reshape", "input"): _pass_through,
    ("identity", "input"): _pass_through,
}
FAST_OPS = sorted({name for name, _ in _FAST})


# --- warm-up --------------------------------------------------------------------------------------
# Tiny cases, per forward op, whose gradients (every input and trainable parameter, train and eval)
# take every code path of the fast kernels above: run once, they compile (or load from Numba's
# cache) every jitted function a training step's gradients may call, with the argument types the
# step gives them. (op, attributes, input shape, modes)
# conv2d's, by the kind of convolution that takes those paths (`conv_kinds`): a network warms only
# its kinds (from an empty cache, Winograd's took 23 s here and the depthwise ones 35 s: LeNet-5 needs
# neither)
CONV_WARM_CASES: dict[str, list[tuple[dict, tuple[int, ...], tuple[str, ...]]]] = {
    "gemm": [
        ({"out": 4, "kernel": 3, "stride": 2, "padding": 1}, (2, 4, 6, 6), ("train",)),  # GEMM + col2im; patches
        ({"out": 4, "kernel": 3, "padding": 1}, (2, 4, 5, 5), ("train",)),  # shifted runs (same-size output)
        ({"out": 4, "kernel": 1, "bias": False}, (1, 4, 24, 24), ("train",)),  # 1×1: GEMMs on x where it lies
        ({"out": 2, "kernel": 5, "bias": False}, (4, 1, 8, 8), ("train",)),  # few taps: images shared, partial sums
    ],
    "winograd": [({"out": 16, "kernel": 3, "padding": 1, "bias": False}, (1, 16, 16, 16), ("train",))],  # dy as is
    "depthwise": [
        ({"out": 4, "kernel": 3, "padding": 1, "groups": 4, "bias": False}, (1, 4, 8, 8), ("train",)),
        ({"out": 4, "kernel": 3, "stride": 2, "padding": 1, "groups": 4}, (1, 4, 8, 8), ("train",)),  # dilated dy
        ({"out": 4, "kernel": 3, "stride": 2, "padding": 1, "groups": 4}, (1, 4, 36, 36), ("train",)),  # scatter
        ({"out": 4, "kernel": 3, "padding": 1, "groups": 4}, (1, 4, 20, 20), ("train",)),  # planes (larger maps)
    ],
}


def conv_kinds(graph) -> set[str]:
    """The kinds of convolution (CONV_WARM_CASES) whose gradients a graph's conv2d nodes may take."""
    kinds = set()
    for node in graph.nodes:
        if node.op != "conv2d":
            continue
        a, c = node.attrs, graph.type_of(node.inputs[0]).c
        if a.groups > 1 and a.groups == c == a.out:
            kinds.add("depthwise")
            continue
        kinds.add("gemm")
        if (tuple(a.kernel), tuple(a.stride), tuple(a.dilation), a.groups) == ((3, 3), (1, 1), (1, 1), 1) \
                and min(c, a.out) >= backward_winograd.MIN_CHANNELS:
            kinds.add("winograd")
    return kinds


WARM_CASES: dict[str, list[tuple[dict, tuple[int, ...], tuple[str, ...]]]] = {
    "conv2d": [case for cases in CONV_WARM_CASES.values() for case in cases],
    "conv_transpose2d": [({"out": 2, "kernel": 2, "stride": 2}, (1, 2, 4, 4), ("train",))],
    "maxpool2d": [({"kernel": 2}, (1, 2, 4, 4), ("train",))],
    "avgpool2d": [({"kernel": 2}, (1, 2, 4, 4), ("train",))],
    "global_avgpool": [({}, (1, 2, 4, 4), ("train",))],
    "adaptive_avgpool2d": [({"size": 2}, (1, 2, 4, 4), ("train",))],
    "batchnorm2d": [({}, (2, 2, 4, 4), ("train", "eval"))],
    "linear": [({"out": 3}, (1, 4), ("train",)), ({"out": 64}, (8, 512), ("train",))],  # one thread, and all
    "relu": [({}, (1, 2, 4, 4), ("train",)), ({}, (1, 4, 256, 256), ("train",))],  # one thread, and all
    "relu6": [({}, (1, 2, 4, 4), ("train",)), ({}, (1, 4, 256, 256), ("train",))],
    "tanh": [({}, (1, 2, 4, 4), ("train",))],
    "sigmoid": [({}, (1, 2, 4, 4), ("train",))],
}


_WARMED: set[str] = set()  # the cases (op and case) whose gradient kernels ran in this process


def warm_up(op_names=None, graph=None) -> None:
    """Compile (or load from the cache) the fast gradient kernels of the forward ops `op_names` (all
    of them when None) by running each on its WARM_CASES; with `graph`, conv2d's only for the kinds
    of convolution it has (`conv_kinds`)."""
    from ...ir.types import TensorType
    from ...ops.registry import RunContext

    names = FAST_OPS if op_names is None else sorted({ops.registry.canonical_name(n) for n in op_names})
    rng = np.random.default_rng(0)
    for name in names:
        op = ops.get(name)
        if op is None or op.backward is None:
            continue
        cases = WARM_CASES.get(name, [])
        if name == "conv2d" and graph is not None:
            cases = [case for kind in sorted(conv_kinds(graph)) for case in CONV_WARM_CASES[kind]]
        for attr_values, shape, modes in cases:
            key = repr((name, attr_values, shape, modes))
            if key in _WARMED:  # (once per process, as kernels.warm_up)
                continue
            attrs = op.attrs.model_validate(attr_values)
            types = [TensorType(shape)]
            x = rng.standard_normal(shape).astype(np.float32)
            for mode in modes:
                params = {p: (np.ones(spec.shape, np.float32) if p == "running_var"
                              else rng.standard_normal(spec.shape).astype(np.float32))
                          for p, spec in op.params(attrs, types).items()}
                y = np.asarray(op.reference(attrs, [x], dict(params), RunContext(mode)), np.float32)
                dy = np.ones_like(y)
                targets = [0] + [p for p, spec in op.params(attrs, types).items() if spec.trainable]
                for wrt in targets:
                    uses = tuple(op.backward.uses(attrs, wrt))
                    a = GradAttrs(op=name, node=name, wrt=wrt, forward=attrs, uses=uses, inputs=1,
                                  input_dims=(shape[1:],), batched=isinstance(wrt, int),
                                  dims=shape[1:] if isinstance(wrt, int) else params[wrt].shape,
                                  params=tuple(params))
                    values = [dy] + ([x] if "inputs" in uses else []) + ([y] if "output" in uses else [])
                    grad_kernel(a, values, params, RunContext(mode, np.random.default_rng(0)))
            _WARMED.add(key)
