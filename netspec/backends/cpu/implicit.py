"""Convolution as an implicit GEMM: no patch matrix. The packed micro-kernel (`packed`) computes
each MR×NR block of output (MR channels × NR pixels of one output row) reading tap k's NR input
values straight from a zero-padded copy of the input, at the offset `offsets[k]` (its gather
variant), instead of from row k of an im2col matrix.

For convolutions with few taps (K = C·kh·kw ≤ MAX_TAPS): stems (3 channels, 7×7 stride 2: K =
147) and small layers. There the patch matrix costs more than the product: a 224² image's 7×7
stem writes and reads 7.4 MB of it, and on small maps im2col and Winograd's transforms are each
a pass, a thread-pool wake-up and a buffer out of cache for a few microseconds of arithmetic. Here
a tap row of a block is read from L1: all the taps of one output row (K rows of NR values) stay
there while the weights' row blocks run over them.

The padded copy is split into column phases (stride sw: phase f holds padded columns q·sw + f),
so that NR neighbouring outputs of a strided convolution read NR consecutive values. Its rows are
padded to whole tiles, so every load stays in its row (the columns past the output are computed
and not stored). A row of tiles wastes wo mod NR lanes (12.5% at 28 and 56 wide), so rows narrower
than a tile, at stride 1, run a plane at a time instead (`_plan_flat`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import packed
from .depthwise import _deinterleave
from ._act import FMA, NONE, act_row
from ._util import output, scratch

# Convolutions with at most this many taps (K = C·kh·kw) take this path: one output row's tap rows,
# K × NR floats, then fit in L1 beside a row block of weights (K × MR). Measured, hot, 2 threads,
# against the path they had (im2col or Winograd): stems (K = 27 to 363) 0.61–0.77× the time, 3×3
# layers of 16 to 48 channels on 7² to 28² maps 0.57–0.99×; K = 576 (64 channels) 1.05–1.10×.
MAX_TAPS = 432
# Except where Winograd (2.25× fewer multiplications) has many tiles to run on and the channels to
# amortise its transforms: GoogLeNet's 32 → 96, 28² (K = 288, 196 tiles) took 1.01–1.10× its time.
WINOGRAD_KEEPS = (144, 196)  # more taps than this, and at least this many tiles
# Output rows at least this wide take this path at any K (where Winograd does not): their tiles are
# 7/8 full or more, and the taps are taken in slices that stay in L1 (`packed._K_SLICE`). Against
# im2col, in-process A/B, 2 threads, batch 1: ResNet's 3×3 stride-2 layers 64 → 128 and 128 → 128
# on 56² inputs (K = 576, 1152) 0.87× and 0.81× the time; 28-wide rows, but not 14 (0.97×) or 7 (1.8×).
WIDE_ROWS = 28
# Layers of fewer multiply-adds than this (at the run's batch) run on the calling thread
# (`_convolve_serial`): a parallel region (its wake-up, its barrier) costs more there than the
# second thread saves. In-process, 2 threads: LeNet-5's 1 → 6 on 32² at batch 1 (0.12M MACs) 7–9
# µs on one thread against 17–40 in parallel, hot; 6 → 16 on 14² at batch 8 (1.9M) 68–89 µs in
# parallel against 90 on one thread, hot, but in the network, between layers on one thread, the
# whole of LeNet-5 at batch 8 took 228 µs with it on one thread against 240 in parallel.
SERIAL_MACS = 1 << 21
# An activation the micro-kernel does not apply (`packed.APPLIED_IN_REGISTERS`) runs over the output
# rows of up to this many bytes at once, each channel's a contiguous run: LeNet-5's tanh on its
# 28-wide rows took 1.8× the time a row at a time.
_ACT_GROUP_BYTES = 16 << 10
_NO_RES = np.zeros(1, np.float32)
_NO_RES4 = np.zeros((1, 1, 1, 1), np.float32)


def applies(attrs, c: int, act: int, winograd_tiles: int | None, wo: int) -> bool:
    """Whether a conv2d (not depthwise or 1×1: caller's check) runs as an implicit GEMM: one group,
    few taps, wide output rows (wo), or (where Winograd does not apply) narrow ones of stride 1,
    whose planes run as one (`_plan_flat`). winograd_tiles: None where Winograd does not apply,
    else its tile count. (`act`: any activation; the micro-kernel applies those of
    `packed.APPLIED_IN_REGISTERS`, act_row the others on each output row while it is in cache.)"""
    kh, kw = attrs.kernel
    taps = c * kh * kw
    if winograd_tiles is not None and taps > WINOGRAD_KEEPS[0] and winograd_tiles >= WINOGRAD_KEEPS[1]:
        return False
    if attrs.groups != 1:
        return False
    return taps <= MAX_TAPS or wo >= WIDE_ROWS or (winograd_tiles is None and flat(attrs.stride, wo))


def serial(macs: int) -> bool:
    """Whether a layer of `macs` multiply-adds (its whole batch) runs on the calling thread."""
    return macs < SERIAL_MACS


def flat(stride, wo: int) -> bool:
    """Whether `plan` takes a layer's planes as one run of tiles (`_plan_flat`): stride 1, output rows
    narrower than a tile. Against im2col + the packed GEMM, in-process A/B, 2 threads, batch 1,
    the same bits: GoogLeNet's and Inception's 7² and 14² layers (3×3 and 5×5, K = 400 to 1728)
    0.78–0.93× the time, 512 → 512 and 1024 → 1024 3×3 on 7² 0.84× and 0.75×. (Not where
    Winograd applies: 112 → 224 on 14² took 1.17× Winograd's time.)"""
    return tuple(stride) == (1, 1) and wo < packed.NR


def plan(shape, window, out, weights: packed.Packed, act: int, alpha: float, threads: int):
    """run(x, res, out) → y for inputs of `shape` (N×C×H×W): the convolution by the layer's packed
    weights (M×K, K ordered (c, i, j) as weight[o].ravel()), their bias, + res (output-shaped) if
    given, then the activation. window: the kernel, stride, dilation and top-left padding, as
    pairs; out: (ho, wo)."""
    n, c, h, w = shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = window
    ho, wo = out
    if flat((sh, sw), wo):
        return _plan_flat(shape, window, out, weights, act, alpha, threads)
    hp = (ho - 1) * sh + (kh - 1) * dh + 1  # padded rows the windows reach
    tiles = -(-wo // packed.NR)
    wq = tiles * packed.NR + (kw - 1) * dw // sw  # phase columns: every tile's loads inside the row
    offsets = np.array([4 * (((ci * sw + j * dw % sw) * hp + i * dh) * wq + j * dw // sw)
                        for ci in range(c) for i in range(kh) for j in range(kw)], np.int64)
    lines = n * ho
    blocks = weights.wp.shape[1]
    convolve, threads = (_convolve_serial, 1) if serial(n * weights.m * ho * wo * len(offsets)) else (_convolve, threads)
    split_rows = packed.split_row_blocks(lines, blocks, threads)  # else the output rows
    alpha32 = np.float32(alpha)
    slices = packed.k_slices(len(offsets))

    def run(x, res, out):
        y = output(out, (n, weights.m, ho, wo))
        xq = scratch("implicit", n * c * sw * hp * wq).reshape(n, c, sw, hp, wq)
        convolve(x, xq, sh, sw, pt, pl, weights.wp[0], weights.bp, weights.m, offsets, y,
                  _NO_RES if res is None else res.reshape(-1), res is not None, act, alpha32, threads, split_rows, slices)
        return y
    return run


def _plan_flat(shape, window, out, weights: packed.Packed, act: int, alpha: float, threads: int):
    """`plan` for stride 1 and output rows narrower than a tile (NR): a row of tiles per output row
    would leave most lanes idle (7 of 32 on a 7² map). Instead the padded input's rows are exactly
    as long as the windows reach (wq = wo + (kw − 1)·dw), so that output (oh, ow) reads tap (i, j)
    at oh·wq + ow + (i·dh·wq + j·dw) of its channel's plane: the outputs of a whole plane, taken
    as ho·wq positions (wq − wo of each row computed and dropped), are one run of tiles, each of
    NR consecutive positions. 7² maps then use 49 lanes of 64, 14² 196 of 224.

    The run is `_convolve`'s, one output row an image, `span` wide, into a stage (N×M×span); then
    `_copy_out` drops the extra positions (and adds the residual, then the activation, where there
    is one). One compiled kernel for both forms: the first run from an empty cache compiles it once."""
    n, c, h, w = shape
    (kh, kw), _, (dh, dw), (pt, pl) = window
    ho, wo = out
    hp = ho + (kh - 1) * dh
    wq = wo + (kw - 1) * dw
    span = -(-ho * wq // packed.NR) * packed.NR  # the positions computed, whole tiles
    offsets = np.array([4 * ((ci * hp + i * dh) * wq + j * dw) for ci in range(c) for i in range(kh)
                        for j in range(kw)], np.int64)
    convolve, threads = (_convolve_serial, 1) if serial(n * weights.m * ho * wo * len(offsets)) else (_convolve, threads)
    split_rows = packed.split_row_blocks(n, weights.wp.shape[1], threads)
    alpha32 = np.float32(alpha)
    slices = packed.k_slices(len(offsets))
    size = n * c * hp * wq

    def run(x, res, out):
        y = output(out, (n, weights.m, ho, wo))
        # (the last tiles read up to a tile past the planes: values computed into dropped positions)
        padded = scratch("implicit", size + 2 * packed.NR)
        padded[size:] = 0.0  # (not garbage: a subnormal there would slow the FMAs that read it)
        xq = padded[:size].reshape(n, c, 1, hp, wq)
        stage = scratch("implicit stage", n * weights.m * span).reshape(n, weights.m, 1, span)
        applied = act if res is None else NONE  # (with a residual, the activation comes after it)
        convolve(x, xq, 1, 1, pt, pl, weights.wp[0], weights.bp, weights.m, offsets, stage, _NO_RES, False,
                  applied, alpha32, threads, split_rows, slices)
        _copy_out(stage, wq, y, _NO_RES4 if res is None else res, res is not None, act, alpha32)
        return y
    return run


@njit(cache=True, fastmath=FMA)
def _copy_out(stage, wq, y, res, has_res, act, alpha):
    """y[n, r, oh, :] = stage[n, r, 0, oh·wq : oh·wq + wo] (+ res, then the activation, where has_res:
    else the stage has it already). Indexed, not sliced: LeNet-5's 1,280 rows of 10 took 2× the time
    as slices."""
    n_, m, ho, wo = y.shape
    for n in range(n_):
        for r in range(m):
            for oh in range(ho):
                at = oh * wq
                if has_res:
                    for q in range(wo):
                        y[n, r, oh, q] = stage[n, r, 0, at + q] + res[n, r, oh, q]
                else:
                    for q in range(wo):
                        y[n, r, oh, q] = stage[n, r, 0, at + q]
            if has_res and act != NONE:  # (the plane's rows are one contiguous run)
                plane = y[n, r].reshape(ho * wo)
                act_row(plane, plane, np.float32(0.0), False, act, alpha)


@njit(cache=True, fastmath=FMA, parallel=True)
def _convolve(x, xq, sh, sw, pt, pl, wp, bp, m, offsets, y, res, has_res, act, alpha, threads, split_rows, slices):
    """y = act(W ∗ x + bias (+ res)): first xq[n, c, f, r, q] = x[n, c, r − pt, q·sw + f − pl] (zero
    outside x), then each thread its share of the output rows or row blocks (`_convolve_share`)."""
    _pad_input(x, xq, pt, pl, sw)
    for t in prange(threads):  # (t as int64: the serial twin's type, so that one compiled share serves both)
        _convolve_share(xq, sh, wp, bp, m, offsets, y, res, has_res, act, alpha, np.int64(t), threads, split_rows,
                        slices)


@njit(cache=True, fastmath=FMA)
def _convolve_serial(x, xq, sh, sw, pt, pl, wp, bp, m, offsets, y, res, has_res, act, alpha, threads, split_rows,
                     slices):
    """`_convolve` on the calling thread, given threads = 1 and split_rows = False (`serial`): for
    layers under SERIAL_MACS, where a parallel region costs more than the second thread saves.
    (Those as arguments, not literals, which would compile `_convolve_share` a second time.)"""
    _pad_input(x, xq, pt, pl, sw)
    _convolve_share(xq, sh, wp, bp, m, offsets, y, res, has_res, act, alpha, threads - 1, threads, split_rows, slices)


@njit(cache=True, fastmath=FMA)
def _convolve_share(xq, sh, wp, bp, m, offsets, y, res, has_res, act, alpha, t, threads, split_rows, slices):
    """Thread t's share (of `threads`) of `_convolve`'s product, from the padded input xq: its output
    rows (or, where split_rows, its row blocks of every row), tile by tile: for each tile of NR
    pixels, every row block of weights (wp: blocks×K×MR, bp: blocks×MR) over the tile's taps."""
    n_, c_, sw_, hp, wq = xq.shape
    o, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    p = ho * wo
    k = offsets.shape[0]
    blocks = wp.shape[0]
    lines = n_ * ho
    ldc = 4 * p
    in_registers = act if packed.APPLIED_IN_REGISTERS[act] else NONE
    plane_bytes = 4 * c_ * sw_ * hp * wq
    zero_bias = np.zeros(packed.MR, np.float32)
    l0, l1, b0, b1 = lines * t // threads, lines * (t + 1) // threads, 0, blocks
    if split_rows:
        l0, l1, b0, b1 = 0, lines, blocks * t // threads, blocks * (t + 1) // threads
    r1 = min(o, b1 * packed.MR)
    group = max(1, _ACT_GROUP_BYTES // max(1, 4 * wo * (r1 - b0 * packed.MR)))  # output rows activated at once
    first = l0  # (of the rows not activated yet)
    for line in range(l0, l1):
        n = line // ho
        oh = line - n * ho
        taps = xq.ctypes.data + n * plane_bytes + 4 * oh * sh * wq
        corner = 4 * (n * o * p + oh * wo)  # of output row oh, channel 0, in y and res
        for ow0 in range(0, wo, packed.NR):
            cols = min(packed.NR, wo - ow0)
            for s in range(slices):  # a slice of the taps at a time: its rows of the tile stay in L1
                k0, k1 = k * s // slices, k * (s + 1) // slices
                last_slice = s == slices - 1
                for blk in range(b0, b1):
                    r0 = blk * packed.MR
                    at = corner + 4 * (r0 * p + ow0)
                    pr = res.ctypes.data + at if has_res and last_slice else 0
                    tile_args = (wp[blk].ctypes.data + 4 * packed.MR * k0, taps + 4 * ow0,
                                 offsets.ctypes.data + 8 * k0, k1 - k0, k0, y.ctypes.data + at, ldc,
                                 bp[blk].ctypes.data if last_slice else zero_bias.ctypes.data,
                                 min(packed.MR, m - r0), cols, pr, ldc, in_registers if last_slice else NONE,
                                 alpha)
                    if cols > packed._LANES:
                        packed._gather_wide(*tile_args)
                    else:
                        packed._gather_narrow(*tile_args)
        if act != in_registers and (oh + 1 == ho or line + 1 == l1 or line + 1 - first == group):
            # rows first..line of image n, every channel of this thread's, still in cache: one run each
            for r in range(b0 * packed.MR, r1):
                run = y[n, r].reshape(ho * wo)[(first - n * ho) * wo:(oh + 1) * wo]
                act_row(run, run, np.float32(0.0), False, act, alpha)
            first = line + 1


@njit(cache=True, fastmath=FMA, inline="always")
def _pad_input(x, xq, pt, pl, sw):
    """xq[n, c, f, r, q] = x[n, c, r − pt, q·sw + f − pl], zero outside x: the input zero-padded and
    split into its column phases, row by row (all phases of a row), in parallel."""
    n_, c_, h_, w_ = x.shape
    sw_, hp, wq = xq.shape[2], xq.shape[3], xq.shape[4]
    even = pl % 2  # (stride 2: the phase holding the even input columns, from column pl // 2 on)
    n_even = max(0, min((w_ + 1) // 2, wq - pl // 2))
    n_odd = max(0, min(w_ // 2, wq - (pl + 1) // 2))
    for idx in prange(n_ * c_ * hp):  # the padded, phase-split input, row by row (all phases of a row)
        nc = idx // hp
        r = idx - nc * hp
        n = nc // c_
        c = nc - n * c_
        ih = r - pt
        phases = xq[n, c]
        for f in range(sw_):
            row = phases[f, r]
            for q in range(wq):
                row[q] = 0.0
        if ih < 0 or ih >= h_:
            continue
        src = x[n, c, ih]
        if sw_ == 2:  # both phases in one pass over the row, read in order (a strided read stays scalar)
            _deinterleave(src, phases.reshape(-1), (even * hp + r) * wq + pl // 2,
                          ((1 - even) * hp + r) * wq + (pl + 1) // 2, n_even, n_odd)
            continue
        for f in range(sw_):  # phase columns q with 0 ≤ q·sw + f − pl < w
            lo = max(0, (pl - f + sw - 1) // sw)
            hi = max(lo, min(wq, (w_ - 1 + pl - f) // sw + 1))
            dst = phases[f, r]
            first = lo * sw + f - pl
            if sw_ == 1:
                s1 = src[first:first + hi - lo]
                for q in range(hi - lo):
                    dst[lo + q] = s1[q]
            else:
                for q in range(hi - lo):
                    dst[lo + q] = src[first + q * sw]
