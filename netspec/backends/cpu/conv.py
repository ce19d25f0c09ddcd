"""Convolutions: conv2d (an implicit GEMM for few taps, im2col + GEMM, 1×1 straight to GEMM,
Winograd for 3×3, direct depthwise) and conv_transpose2d (GEMM + col2im).

The GEMMs of ungrouped convolutions run on the layer's weights packed once (`packed`: an LLVM-IR
micro-kernel, the bias, residual and activation fused); grouped 1×1 and transposed convolutions
use `gemm`'s (OpenBLAS's sgemm in blocks on Numba's threads). Everything around them (patch
extraction, scatter) is Numba. A conv2d layer is planned once per input shape (`_Layer`, `_plan`):
a run is its kernel calls.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import depthwise, gemm, implicit, packed, winograd
from ._act import FMA, NONE, act_row, activation_code
from ._util import bias_or_zeros, constant, f32, output, scratch, thread_count, window_out


@njit(cache=True, fastmath=FMA)
def _valid_range(off: int, stride: int, size: int, count: int) -> tuple[int, int]:
    """The indices o in [0, count) with 0 <= o*stride + off < size, as a half-open range [lo, hi)."""
    lo = 0
    if off < 0:
        lo = (-off + stride - 1) // stride
    hi = (size - 1 - off) // stride + 1  # floor division: negative numerators give an empty range
    if hi > count:
        hi = count
    if hi < lo:
        hi = lo
    return lo, hi


@njit(cache=True, fastmath=FMA, parallel=True)
def _column_phases(x, sw, xp):
    """xp[n, c, f, h, q] = x[n, c, h, q·sw + f] (0 past the right edge): the input's columns split by
    their position modulo the stride, so that a strided convolution's patches read contiguous runs."""
    n_, c_, h_, w_ = x.shape
    wq = xp.shape[4]
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        for f in range(sw):
            count = min(wq, (w_ - 1 - f) // sw + 1) if f < w_ else 0
            for r in range(h_):
                dst = xp[n, c, f, r]
                src = x[n, c, r, f:f + (count - 1) * sw + 1:sw] if count > 0 else x[n, c, r, 0:0]
                for q in range(count):
                    dst[q] = src[q]
                for q in range(count, wq):
                    dst[q] = 0.0


@njit(cache=True, fastmath=FMA, parallel=True)
def _im2col(xp, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, w_, wo, n0, n1, oh0, oh1, cols):
    """The patch matrix of one column tile: channels c0..c0+cg of images n0..n1, output rows
    oh0..oh1 of each → cols: (cg·kh·kw) × ((n1−n0)·(oh1−oh0)·wo), rows ordered like weight[o].ravel()
    (c, i, j), columns image by image, row by row. xp: the input (width w_) as column phases
    (`_column_phases`; for stride 1, the input itself as N×C×1×H×W).

    Zero padding (asymmetric allowed), stride and dilation are resolved here, so the GEMM sees a
    plain dense matrix. Tap j of output column ow reads input column ow·sw + j·dw − pl, which is
    column ow + q0 of phase f for j·dw − pl = q0·sw + f: every run is a contiguous slice copy
    (indexed from 0, so it vectorises). Parallel over the rows of cols.
    """
    h_ = xp.shape[3]
    rows = oh1 - oh0
    taps = kh * kw
    for k in prange(cg * taps):
        cl = k // taps
        i = (k - cl * taps) // kw
        j = k - cl * taps - i * kw
        dst_row = cols[k]
        off_w = j * dw - pl
        lo, hi = _valid_range(off_w, sw, w_, wo)
        f = off_w % sw  # (Python's modulo: 0 ≤ f < sw, also for a negative offset)
        q0 = (off_w - f) // sw
        for n in range(n0, n1):
            for oh in range(oh0, oh1):
                dst = dst_row[((n - n0) * rows + oh - oh0) * wo:((n - n0) * rows + oh - oh0 + 1) * wo]
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h_ or hi <= lo:
                    for ow in range(wo):
                        dst[ow] = 0.0
                    continue
                for ow in range(lo):
                    dst[ow] = 0.0
                run = dst[lo:hi]
                src = xp[n, c0 + cl, f, ih, lo + q0:hi + q0]
                for q in range(hi - lo):
                    run[q] = src[q]
                for ow in range(hi, wo):
                    dst[ow] = 0.0


@njit(cache=True, fastmath=FMA, parallel=True)
def _epilogue(t, y, n0, n1, o0, p0, plen, bias, has_bias, act, alpha):
    """y[n, o0 + o, p0:p0 + plen] = act(t[o, (n − n0)·plen + …] + bias[o0 + o]) for a GEMM tile
    t: (O/G) × ((n1 − n0)·plen) and y: N×O×P (bias add and activation fused into the copy)."""
    og = t.shape[0]
    nn = n1 - n0
    for idx in prange(og * nn):
        o = idx // nn
        m = idx - o * nn
        act_row(t[o, m * plen:(m + 1) * plen], y[n0 + m, o0 + o, p0:p0 + plen], bias[o0 + o], has_bias,
                act, alpha)


# A column tile's patch matrix holds at most about this much (large images are cut into bands of
# output rows). Few large GEMMs: each GEMM call has a fixed cost (Python and dispatch), and
# cache-sized tiles measured no faster on one thread pool (stop 12, inconclusive).
_TILE_BYTES = 128 << 20


def conv2d(attrs, inputs, params, ctx, out=None):
    """conv2d, and fused_conv2d: conv2d with what the fuse_epilogues pass gave it (ops/fused.py),
    y = act(conv(x · gate) + residual). An implicit GEMM for few taps, im2col + GEMM, 1×1
    straight to GEMM, Winograd for 3×3, depthwise direct; one call is `prepare` and one run."""
    return prepare(attrs, params)(inputs, out)


fused_conv2d = conv2d


class _Layer:
    """A convolution layer made ready to run (`prepare`): its weights and bias as float32 once, and
    for each input shape (and thread count) a plan — every decision of the convolution taken,
    every size worked out (`_plan`) — so that a run is the kernel calls and little else. In a
    network, Python between two kernels runs slowly (the last layer's data fills the caches): this
    saved 30–40 µs a layer, EfficientNet-B0 −9%, GoogLeNet −5% (in-process A/B, 2 threads)."""

    def __init__(self, attrs, params):
        self.attrs = attrs
        self.gated, self.residual = bool(getattr(attrs, "gate", False)), bool(getattr(attrs, "residual", False))
        self.act, self.alpha = activation_code(getattr(attrs, "activation", None)), float(getattr(attrs, "alpha", 0.0))
        self.weight = constant(f32(params["weight"]))
        self.bias, self.has_bias = bias_or_zeros(params, attrs.out, attrs.bias)
        self.plans = {}
        self.packed = {}  # the weights packed for its GEMMs (`packed`), shared by every input shape's plan

    def __call__(self, inputs, out=None):
        x = f32(inputs[0])
        gate = f32(inputs[1]) if self.gated else None
        residual = f32(inputs[1 + self.gated]) if self.residual else None
        key = (x.shape, thread_count())
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = _plan(self.attrs, x.shape, key[1], self.weight, self.bias, self.has_bias,
                                           self.act, self.alpha, self.residual, self.packed)
        return plan(x, gate, residual, out)


def prepare(attrs, params):
    """conv2d or fused_conv2d for one node (its attributes and weights), as a function of the
    inputs (and the array to write, if any): what the executor runs in eval mode
    (backends/executor.py, Step)."""
    return _Layer(attrs, params)


conv2d.prepare = prepare


_SCALE_PARALLEL = 1 << 15  # elements: below this, waking the thread pool costs more than it saves


@njit(cache=True, fastmath=FMA, parallel=True)
def _scale_parallel(a, s, out):
    for idx in prange(out.shape[0] * out.shape[1]):
        _scale_row(a, s, out, idx)


@njit(cache=True, fastmath=FMA)
def _scale_serial(a, s, out):
    for idx in range(out.shape[0] * out.shape[1]):
        _scale_row(a, s, out, idx)


@njit(inline="always")
def _scale_row(a, s, out, idx):
    i = idx // out.shape[1]
    r = idx - i * out.shape[1]
    src, dst, f = a[i, r], out[i, r], s[i, r]
    for q in range(dst.shape[0]):
        dst[q] = src[q] * f


def _scale(a, s, out, parallel: bool):
    """out[i, r] = a[i, r] · s[i, r] (P×R×Q from P×R×Q and P×R): a fused squeeze-excitation gate
    applied to the input's channels. Numba, into a reused buffer: numpy's broadcast multiply into
    a fresh array took 100–160 µs a layer in EfficientNet-B0."""
    (_scale_parallel if parallel else _scale_serial)(a, s, out)


class _LiveTaps:
    """A layer's attributes with a smaller kernel and explicit padding (`_live_taps`); the rest its own."""

    def __init__(self, attrs, kernel: tuple[int, int], pads: tuple[int, int, int, int]):
        self._attrs, self.kernel, self.pads = attrs, kernel, pads

    def __getattr__(self, name):
        return getattr(self._attrs, name)


def _live_taps(attrs, h: int, w: int, ho: int, wo: int):
    """For a convolution (no dilation) on an h×w input whose kernel has taps that only ever meet the
    zero padding — a 3×3 with padding 1 on a 1×1 map, as in ResNet's last stage at 32×32 inputs, has
    one tap in 9 on data — the live taps' rows [r0, r1) and columns [c0, c1), and the padding that
    keeps every output where it was; None when every tap meets data. The convolution by those taps
    alone is the same, and takes their share of the work (a 1×1 map: a pointwise GEMM)."""
    def live(size: int, k: int, stride: int, before: int, out: int) -> tuple[int, int, int, int] | None:
        taps = [i for i in range(k) if max(0, -(-(before - i) // stride)) <= min(out - 1, (size - 1 + before - i) // stride)]
        if not taps:  # (every output in the padding: nothing to gain, the usual path gives the bias)
            return None
        first, last = taps[0], taps[-1] + 1
        pad_before = before - first
        return first, last, pad_before, max(0, (out - 1) * stride + (last - first) - size - pad_before)
    (kh, kw), (sh, sw), (pt, pl, _, _) = attrs.kernel, attrs.stride, attrs.pads
    rows, columns = live(h, kh, sh, pt, ho), live(w, kw, sw, pl, wo)
    if rows is None or columns is None:
        return None
    (r0, r1, top, bottom), (c0, c1, left, right) = rows, columns
    if (r1 - r0, c1 - c0) == (kh, kw):
        return None
    return (r0, r1), (c0, c1), (top, left, bottom, right)


def _plan(attrs, shape, threads, w, bias, has_bias, act, alpha, residual, packs=None):
    """How a layer convolves inputs of `shape` (N×C×H×W) on `threads` threads: a function
    (x, gate, residual, out) → y (written into `out` where one is given), the convolution of x by
    w (C_out×C/G×kh×kw) + bias, its input channels first scaled by the gate (N×C×1×1, pointwise
    convolutions only) when one is passed, + the residual (output-shaped) if `residual`, then the
    activation `act` (a code of `_act`) with its scalar `alpha`. `packs`: the layer's packed weights
    by use, filled as plans need them (a new dict: not kept)."""
    packs = {} if packs is None else packs
    n, c, h, wd = shape
    o, g = attrs.out, attrs.groups
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    dh, dw = attrs.dilation
    pt, pl, pb, pr = attrs.pads
    ho = window_out(h, dh * (kh - 1) + 1, sh, pt, pb)
    wo = window_out(wd, dw * (kw - 1) + 1, sw, pl, pr)
    is_depthwise = g > 1 and g == c and o == c
    live = None if is_depthwise or (dh, dw) != (1, 1) else _live_taps(attrs, h, wd, ho, wo)
    if live is not None:  # the same convolution with the kernel's live taps only, on its own packed weights
        (r0, r1), (c0, c1), pads = live
        return _plan(_LiveTaps(attrs, (r1 - r0, c1 - c0), pads), shape, threads,
                     np.ascontiguousarray(w[:, :, r0:r1, c0:c1]), bias, has_bias, act, alpha, residual,
                     packs.setdefault(("live taps", r0, r1, c0, c1), {}))
    pointwise = kh == kw == 1 and pt == pl == pb == pr == 0 and not is_depthwise
    tiles = winograd.tiles(n, ho, wo)
    wino_tiles = tiles if winograd.applies(attrs, c, o, tiles) and winograd.fills_tiles(ho, wo) else None
    if not (is_depthwise or pointwise) and implicit.applies(attrs, c, act, wino_tiles, wo):
        if "implicit" not in packs:
            packs["implicit"] = packed.Packed(w.reshape(o, -1), bias)
        convolve = implicit.plan(shape, ((kh, kw), (sh, sw), (dh, dw), (pt, pl)), (ho, wo), packs["implicit"], act,
                                 alpha, threads)
        return lambda x, gate, res, out: convolve(x, res, out)
    if residual and not pointwise:  # the convolution with its bias, then one pass: + residual, activation
        convolve = _plan(attrs, shape, threads, w, bias, has_bias, NONE, 0.0, False, packs)

        def then_residual(x, gate, res, out):
            y = convolve(x, None, None, out)
            gemm.epilogue(y.reshape(n, o, ho * wo), None, res.reshape(n, o, ho * wo), act, alpha)
            return y
        return then_residual

    if is_depthwise:  # a direct kernel, no GEMM
        if wo <= depthwise.BLOCKS_MAX_WIDTH:
            if "depthwise" not in packs:
                packs["depthwise"] = tuple(map(constant, depthwise.interleave(w, bias, has_bias)))
            interleaved = packs["depthwise"]

            def direct(x, gate, res, out):
                y = output(out, (n, o, ho, wo))
                depthwise.by_channel_blocks(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y,
                                            threads, interleaved)
                return y
            return direct

        def direct_planes(x, gate, res, out):
            y = output(out, (n, o, ho, wo))
            depthwise.by_planes(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y, threads)
            return y
        return direct_planes

    if pointwise:
        return _plan_pointwise(shape, threads, w, bias, has_bias, act, alpha, residual, g, (sh, sw), (ho, wo), packs)
    if wino_tiles is not None:
        wino = winograd.plan(shape, w, bias, has_bias, (pt, pl, pb, pr), act, alpha, scratch, threads, packs)
        return lambda x, gate, res, out: wino(x, out)
    return _plan_im2col(shape, threads, w, bias, has_bias, act, alpha, g, ((kh, kw), (sh, sw), (dh, dw), (pt, pl)),
                        (ho, wo), packs)


def workspace_bytes(op: str, attrs, shape) -> int:
    """The scratch memory (bytes) a convolution of inputs `shape` takes, for the memory guard
    (netspec/resources.py): the largest of the buffers of the paths it may take (`paths`) — a bound,
    not the byte."""
    n, c, h, wd = shape
    kh, kw = attrs.kernel
    if op == "conv_transpose2d":  # the column matrix, at most _CHUNK_BYTES unless one image needs more
        k = attrs.out // attrs.groups * kh * kw
        return max(min(n * 4 * attrs.groups * k * h * wd, _CHUNK_BYTES), 4 * attrs.groups * k * h * wd)
    o, g = attrs.out, attrs.groups
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = attrs.stride, attrs.dilation, attrs.pads
    ho = window_out(h, dh * (kh - 1) + 1, sh, pt, pb)
    wo = window_out(wd, dw * (kw - 1) + 1, sw, pl, pr)
    padded = 4 * n * c * (h + pt + pb) * (wd + pl + pr)
    k = c // g * kh * kw
    width = min(max(wo, _TILE_BYTES // (4 * k)), n * ho * wo)  # (a tile's columns, as _plan_im2col)
    rows = 2 * padded  # the implicit GEMM's phase-split padded copy
    flat = padded + 4 * packed.NR + 4 * n * o * (ho * (wo + dw * (kw - 1)) + packed.NR)  # and `_plan_flat`'s stage
    buffers = {
        "gate": 4 * n * c * h * wd,  # the gated copy of the input (or of the weights, when smaller)
        "implicit": rows,
        "implicit flat": flat,  # (the stage: images × channels × each plane's positions)
        "implicit serial": max(rows, flat),  # (either form)
        "im2col": 4 * (k + o // g) * width + (4 * n * c * h * wd if sw > 1 else 0),  # a tile, its column phases
        "winograd": 4 * 16 * (c + o) * winograd.tiles(n, ho, wo),  # the transformed input and product
        # each thread's padded planes, output and input, 8 channels interleaved (by_channel_blocks)
        "depthwise": 32 * ((h + pt + pb) * (wd + pl + pr) + ho * wo + h * wd) * max(1, thread_count()),
        "wide depthwise": padded // n * max(1, thread_count()),
    }
    return max(buffers.get(path, 0) for path in paths(attrs, (c, h, wd)))


def paths(attrs, dims: tuple[int, ...]) -> set[str]:
    """The code paths of `_plan` that a conv2d or fused_conv2d node on C×H×W inputs may take, at any
    batch up to 8: a superset, which the warm-up compiles (kernels.py: a path left out would compile
    in the middle of the first run) and the memory guard sizes (`workspace_bytes`)."""
    c, h, w = dims
    kh, kw = attrs.kernel
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = attrs.stride, attrs.dilation, attrs.pads
    ho, wo = window_out(h, dh * (kh - 1) + 1, sh, pt, pb), window_out(w, dw * (kw - 1) + 1, sw, pl, pr)
    residual = getattr(attrs, "residual", False)
    taken = {"gemm", "gate"} if getattr(attrs, "gate", False) else {"gemm"}
    if attrs.groups > 1 and attrs.groups == c == attrs.out:  # depthwise
        taken.add("depthwise" if wo <= depthwise.BLOCKS_MAX_WIDTH else "wide depthwise")
        return taken | ({"residual"} if residual else set())
    pointwise = kh == kw == 1 and pt == pl == pb == pr == 0
    act = activation_code(getattr(attrs, "activation", None))
    every_batch = (dh, dw) != (1, 1) or _live_taps(attrs, h, w, ho, wo) is None  # (no smaller kernel instead)
    # the implicit GEMM's kernels (`implicit.plan`'s choice): on the calling thread where a batch's
    # multiply-adds are few (any batch, where the live taps may take fewer), in parallel where 8 images' are not
    macs = attrs.out * ho * wo * c * kh * kw
    implicit_paths = (({"implicit serial"} if implicit.serial(macs) or not every_batch else set())
                      | ({"implicit flat" if implicit.flat((sh, sw), wo) else "implicit"}
                         if not implicit.serial(8 * macs) else set()))

    # Which of `_plan`'s three takes the layer at some batch up to 8: batch 1 and 8 tell (the tiles
    # grow with the batch, and each rule flips at most once as they do). Winograd's tiles at each,
    # None where it does not apply, as `_plan` works them out:
    tiles = {b: winograd.tiles(b, ho, wo) for b in (1, 8)}
    wino = {b: t if winograd.applies(attrs, c, attrs.out, t) and winograd.fills_tiles(ho, wo) else None
            for b, t in tiles.items()}
    by_implicit = any(implicit.applies(attrs, c, act, wino[b], wo) for b in (1, 8))
    by_winograd = wino[8] is not None and not implicit.applies(attrs, c, act, wino[8], wo)
    by_im2col = any(wino[b] is None and not implicit.applies(attrs, c, act, None, wo) for b in (1, 8))
    if by_implicit and not (by_winograd or by_im2col or pointwise) and every_batch and taken == {"gemm"}:
        return implicit_paths  # at every batch (LeNet-5's): not the packed GEMM, nor its residual pass
    if 8 * ho * wo > packed._MAX_COLUMNS:  # a product over 8 images' columns (im2col, Winograd) may be wide
        taken.add("wide gemm")
    if pointwise:  # the GEMM adds the residual
        return (taken | ({"grouped gemm"} if attrs.groups > 1 else set())
                | ({"strided pointwise"} if (sh, sw) != (1, 1) else set()))
    taken |= (implicit_paths if by_implicit or not every_batch else set()) | ({"winograd"} if by_winograd else set()) \
        | ({"im2col"} if by_im2col or not every_batch else set())
    if residual and (by_winograd or by_im2col or not every_batch):
        taken.add("residual")  # (the implicit GEMM adds the residual itself)
    return taken


@njit(cache=True, fastmath=FMA, parallel=True)
def _subsample(x, sh, sw, y):
    """y[n, c, i, j] = x[n, c, i·sh, j·sw]: the pixels a strided 1×1 convolution reads, packed."""
    n_, c_, ho, wo = y.shape
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        for i in range(ho):
            src, dst = x[n, c, i * sh], y[n, c, i]
            for j in range(wo):
                dst[j] = src[j * sw]


def _plan_pointwise(shape, threads, w, bias, has_bias, act, alpha, residual, g, stride, out, packs):
    """A 1×1 convolution is one GEMM: the input already is its right-hand side (strided: its every
    sh-th row and sw-th column, copied), and the GEMM writes y directly, its epilogue fused. Ungrouped
    ones run on the layer's packed weights (`packed`), grouped ones on `gemm`'s sgemm blocks."""
    n, c, h, wd = shape
    o = w.shape[0]
    (sh, sw), (ho, wo) = stride, out
    cg, og, p = c // g, o // g, ho * wo
    if g == 1:
        if "pointwise" not in packs:
            packs["pointwise"] = packed.Packed(w.reshape(o, c), bias)
        weights = packs["pointwise"]
        product = weights.plan(n, p, residual=residual, act=act, alpha=alpha, threads=threads)
    else:
        blas = gemm.plan((n * g, og, p, cg), bias=bias.reshape(g, og) if has_bias else None, residual=residual,
                         act=act, alpha=alpha, threads=threads)
        a = w.reshape(g, og, cg)

        def product(x, c, res=None, wp=None):
            return blas(a, x, c, res)
    # A gate (groups 1: the pass fuses one only there) scales the packed weights per image when that
    # is the cheaper side, O·C products instead of C·H·W, else the input.
    gate_weights = o < h * wd
    scale_parallel = (n * c * h * wd) >= _SCALE_PARALLEL

    def run(x, gate, res, out):
        wp = None
        if gate is not None:
            if gate_weights:
                wp = weights.gated(gate.reshape(n, c), scratch("gated", n * weights.wp.size).reshape(
                    (n,) + weights.wp.shape[1:]))
            else:
                gx = scratch("gated", x.size).reshape(n, c, h * wd)
                _scale(x.reshape(n, c, h * wd), gate.reshape(n, c), gx, scale_parallel)
                x = gx.reshape(shape)
        if sh > 1 or sw > 1:
            xs = scratch("strided", n * c * ho * wo).reshape(n, c, ho, wo)
            _subsample(x, sh, sw, xs)
            x = xs
        y = output(out, (n, o, ho, wo))
        shape_y = (n * g, og, p)
        product(x.reshape(n * g, cg, p), y.reshape(shape_y), None if res is None else res.reshape(shape_y), wp)
        return y
    return run


def _plan_im2col(shape, threads, w, bias, has_bias, act, alpha, g, window, out, packs):
    """im2col + GEMM over column tiles: whole output rows of one image when an image is large,
    else whole images (batched into one GEMM); the epilogue scatters, adds bias, activates.
    window: the kernel, stride, dilation and top-left padding, as pairs; out: (ho, wo)."""
    n, c, h, wd = shape
    o = w.shape[0]
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = window
    ho, wo = out
    cg, og = c // g, o // g
    p = ho * wo
    k = cg * kh * kw
    wg = w.reshape(g, og, k)
    target = max(wo, _TILE_BYTES // (4 * k))
    if p >= target:
        rows_per, imgs_per = max(1, target // wo), 1
    else:
        rows_per, imgs_per = ho, max(1, min(n, target // p))
    direct = g == 1 and rows_per >= ho and imgs_per == 1  # a tile is y[n] itself
    tiles = [(n0, min(n, n0 + imgs_per), oh0, min(ho, oh0 + rows_per))
             for n0 in range(0, n, imgs_per) for oh0 in range(0, ho, rows_per)]
    # each group's weights packed (`packed`), with the bias where the GEMM writes y itself
    if ("im2col", direct) not in packs:
        group_bias = bias.reshape(g, og) if has_bias and direct else np.zeros((g, og), np.float32)
        packs["im2col", direct] = [packed.Packed(wg[gi], group_bias[gi]) for gi in range(g)]
    weights = packs["im2col", direct]
    products = {}  # per tile width (the last tile may be narrower), each group's GEMM plan
    for n0, n1, oh0, oh1 in tiles:
        width = (n1 - n0) * (oh1 - oh0) * wo
        if width not in products:
            products[width] = [pk.plan(1, width, residual=False, act=act if direct else NONE, alpha=alpha,
                                       threads=threads) for pk in weights]
    wq = -(-wd // sw)

    def run(x, gate, res, out):
        y = output(out, (n, o, ho, wo)).reshape(n, o, p)
        if sw == 1:
            xp = x.reshape(n, c, 1, h, wd)
        else:
            xp = scratch("phases", n * c * sw * h * wq).reshape(n, c, sw, h, wq)
            _column_phases(x, sw, xp)
        for n0, n1, oh0, oh1 in tiles:
            plen = (oh1 - oh0) * wo
            width = (n1 - n0) * plen
            cols = scratch("cols", k * width).reshape(k, width)
            for gi, product in enumerate(products[width]):
                _im2col(xp, gi * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, wd, wo, n0, n1, oh0, oh1, cols)
                if direct:
                    product(cols[None], y[n0:n0 + 1])
                else:
                    t = scratch("gemm", og * width).reshape(og, width)
                    product(cols[None], t[None])
                    _epilogue(t, y, n0, n1, gi * og, oh0 * wo, plen, bias, has_bias, act, alpha)
        return y.reshape(n, o, ho, wo)
    return run


_CHUNK_BYTES = 32 << 20  # conv_transpose2d's column matrix: at most this much, unless one image needs more


@njit(cache=True, fastmath=FMA, parallel=True)
def _col2im(cols, bias, has_bias, h_, w_, kh, kw, sh, sw, ph, pw, dh, dw, y):
    """Scatter-add cols: N×G×(O/G·kh·kw)×(H·W) into y: N×O×ho×wo (transposed convolution).

    Input pixel (ih, iw) through tap (i, j) lands on (ih·sh − ph + i·dh, iw·sw − pw + j·dw);
    taps that fall into the padding (or beyond output_padding) are dropped.
    """
    n_, g_ = cols.shape[0], cols.shape[1]
    o_, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    og = o_ // g_
    for idx in prange(n_ * o_):  # each thread owns whole output planes
        n = idx // o_
        oc = idx - n * o_
        g = oc // og
        oo = oc - g * og
        yc = y[n, g * og + oo]
        for oh in range(ho):
            for ow in range(wo):
                yc[oh, ow] = 0.0
        for i in range(kh):
            for j in range(kw):
                src = cols[n, g, (oo * kh + i) * kw + j]
                off_w = j * dw - pw
                lo, hi = _valid_range(off_w, sw, wo, w_)
                for ih in range(h_):
                    oh = ih * sh - ph + i * dh
                    if oh < 0 or oh >= ho:
                        continue
                    dst = yc[oh]
                    base = ih * w_
                    for iw in range(lo, hi):
                        dst[iw * sw + off_w] += src[base + iw]
        if has_bias:
            b = bias[g * og + oo]
            for oh in range(ho):
                for ow in range(wo):
                    yc[oh, ow] += b


def conv_transpose2d(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    w = f32(params["weight"])  # C_in × C_out/G × kh × kw
    n, c, h, wd = x.shape
    o, g = attrs.out, attrs.groups
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    oph, opw = attrs.output_padding
    dh, dw = attrs.dilation
    ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + 1 + oph
    wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + 1 + opw
    cg, og = c // g, o // g
    k = og * kh * kw
    # GEMM: per group, Wᵀ (O/G·kh·kw × C/G) · X (C/G × H·W); BLAS reads W transposed
    wg = w.reshape(g, cg, k)
    xg = x.reshape(n * g, cg, h * wd)
    bias, has_bias = bias_or_zeros(params, o, attrs.bias)
    y = output(out, (n, o, ho, wo))
    step = max(1, min(n, _CHUNK_BYTES // max(1, 4 * g * k * h * wd)))
    cols = scratch("cols", step * g * k * h * wd).reshape(step, g, k, h * wd)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        gemm.matmul(wg, xg[n0 * g:n1 * g], cols[:n1 - n0].reshape((n1 - n0) * g, k, h * wd), trans_a=True)
        _col2im(cols[:n1 - n0], bias, has_bias, h, wd, kh, kw, sh, sw, ph, pw, dh, dw, y[n0:n1])
    return y
