"""Depthwise convolution (one filter per channel), direct: `by_planes` for large maps, plane by
plane in long flat runs; `by_channel_blocks` for small ones (output rows up to BLOCKS_MAX_WIDTH),
8 channels per vector. Both: x N×C×H×W, w C×1×kh×kw → y N×C×ho×wo, bias, then the activation.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._act import FMA, NONE, act_row
from ._util import scratch

# Outputs at most this wide go to by_channel_blocks (7² to 112² maps; measured, see there).
BLOCKS_MAX_WIDTH = 112


@njit(cache=True, fastmath=FMA, parallel=True)
def by_planes(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y, threads):
    """Direct depthwise convolution (one filter per channel), x: N×C×H×W, w: C×1×kh×kw → y: N×C×ho×wo,
    as long runs over flat phase planes, the bias and then one row of taps added per pass.

    The zero-padded plane P is split into sh×sw phases, phase (a, b) holding P[r·sh + a, q·sw + b]
    in a flat run of `size` values with row length wq (for stride 1, one phase: P itself). Output
    (oh, ow) at flat position oh·wq + ow then reads tap (i, j) at that position + (i·dh // sh)·wq +
    j·dw // sw of phase (i·dh % sh, j·dw % sw), so each tap is one multiply-add over ho·wq values
    (the wq − wo extra columns per row are computed and dropped). A 3- or 5-wide row of taps is one
    pass (the sum kept in a register, added tap by tap: the rounding of one pass per tap); the
    activation runs over the finished run, before its rows are copied out (rows of 7 or 14 would
    not vectorise).

    Where each tap reads and where each input row goes are worked out once per call, not per plane:
    on 7² and 14² planes the per-plane integer divisions and bounds cost as much as the taps.
    Parallel over (image, channel) planes, one run of planes per thread, so each thread allocates
    its buffers once: their padding is written once, as zeros, and only the inside per plane."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    hq = ho + ((kh - 1) * dh) // sh  # rows per phase the windows reach
    wq = wo + ((kw - 1) * dw) // sw  # columns per phase the windows reach
    size = hq * wq + wq  # one spare row: the last tap's run ends past hq·wq
    m = ho * wq
    planes = n_ * c_
    taps, fills, n_even, n_odd = _phase_plan(h_, w_, kh, kw, sh, sw, pt, pl, dh, dw, hq, wq, size)
    for t in prange(threads):
        phases = np.zeros(sh * sw * size, np.float32)
        acc = np.empty(m, np.float32)
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            xc = x[n, c]
            _fill_phases(xc, fills, sw, n_even, n_odd, phases)
            b0 = bias[c] if has_bias else np.float32(0.0)
            wc = w[c, 0]
            for i in range(kh):
                t0 = taps[i * kw:(i + 1) * kw]
                if kw == 3 or kw == 5:
                    s0, s1, s2 = phases[t0[0]:t0[0] + m], phases[t0[1]:t0[1] + m], phases[t0[2]:t0[2] + m]
                    w0, w1, w2 = wc[i, 0], wc[i, 1], wc[i, 2]
                    if kw == 3:
                        for k in range(m):
                            v = b0 if i == 0 else acc[k]  # (the first row of taps starts from the bias)
                            v += w0 * s0[k]
                            v += w1 * s1[k]
                            v += w2 * s2[k]
                            acc[k] = v
                    else:
                        s3, s4 = phases[t0[3]:t0[3] + m], phases[t0[4]:t0[4] + m]
                        w3, w4 = wc[i, 3], wc[i, 4]
                        for k in range(m):
                            v = b0 if i == 0 else acc[k]
                            v += w0 * s0[k]
                            v += w1 * s1[k]
                            v += w2 * s2[k]
                            v += w3 * s3[k]
                            v += w4 * s4[k]
                            acc[k] = v
                else:
                    if i == 0:
                        for k in range(m):
                            acc[k] = b0
                    for j in range(kw):
                        wv = wc[i, j]
                        s = phases[t0[j]:t0[j] + m]
                        for k in range(m):
                            acc[k] += wv * s[k]
            if act != NONE:  # over the whole run, dropped columns too: one long vectorised loop
                act_row(acc, acc, np.float32(0.0), False, act, alpha)
            yc = y[n, c]
            for oh in range(ho):
                src, dst = acc[oh * wq:oh * wq + wo], yc[oh]
                for k in range(wo):
                    dst[k] = src[k]


@njit(cache=True)
def _phase_plan(h_, w_, kh, kw, sh, sw, pt, pl, dh, dw, hq, wq, size):
    """What by_planes works out once per call, not per plane (see there for the phases):
    taps[i·kw + j], where tap (i, j)'s run starts in the phases; fills, the input rows' runs in the
    phases: (first value in the phases, input row, first input column, count), the columns of a run
    sw apart; for sw == 2, one entry per phase row instead: (where its even input columns go,
    input row, where its odd ones go, unused), with n_even and n_odd, how many of each the windows
    reach (see _deinterleave)."""
    taps = np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            phase = ((i * dh) % sh) * sw + (j * dw) % sw
            taps[i * kw + j] = phase * size + ((i * dh) // sh) * wq + (j * dw) // sw
    fills = np.zeros((sh * hq * sw, 4), np.int64)
    nf = 0
    even = pl % 2  # the column phase of the even input columns (sw == 2)
    n_even = max(0, min((w_ + 1) // 2, wq - pl // 2))
    n_odd = max(0, min(w_ // 2, wq - (pl + 1) // 2))
    for a in range(sh):
        for r in range(hq):
            ih = r * sh + a - pt
            if ih < 0 or ih >= h_:
                continue
            if sw == 2:
                fills[nf, 0] = (a * 2 + even) * size + r * wq + pl // 2
                fills[nf, 1] = ih
                fills[nf, 2] = (a * 2 + 1 - even) * size + r * wq + (pl + 1) // 2
                nf += 1
                continue
            for b in range(sw):
                # phase column q is input column q·sw + b − pl: the q that land inside the input
                q_lo = max(0, (pl - b + sw - 1) // sw)
                q_hi = min(wq, (w_ - 1 + pl - b) // sw + 1)
                if q_hi > q_lo:
                    fills[nf, 0] = (a * sw + b) * size + r * wq + q_lo
                    fills[nf, 1] = ih
                    fills[nf, 2] = q_lo * sw + b - pl
                    fills[nf, 3] = q_hi - q_lo
                    nf += 1
    return taps, fills[:nf], n_even, n_odd


@njit(cache=True, fastmath=FMA, inline="always")
def _fill_phases(xc, fills, sw, n_even, n_odd, phases):
    """Copy the input rows' runs of one channel plane `xc` into its column phases, as `fills` (from
    _phase_plan) lays them out; only the inside is written, the padding left as it was."""
    for f in range(fills.shape[0]):
        d0, ih, first, count = fills[f, 0], fills[f, 1], fills[f, 2], fills[f, 3]
        if sw == 2:  # (then `first` is where the odd input columns go: see _phase_plan)
            _deinterleave(xc[ih], phases, d0, first, n_even, n_odd)
            continue
        dst = phases[d0:d0 + count]
        if sw == 1:  # a contiguous slice: Numba types a stepped one as strided, slower
            src = xc[ih, first:first + count]
            for k in range(count):
                dst[k] = src[k]
        else:
            src_s = xc[ih, first:first + (count - 1) * sw + 1:sw]
            for k in range(count):
                dst[k] = src_s[k]


@njit(cache=True, fastmath=FMA, inline="always")
def _deinterleave(row, out, even0, odd0, n_even, n_odd):
    """out[even0 + k] = row[2k] for k < n_even and out[odd0 + k] = row[2k + 1] for k < n_odd: both
    column phases of a stride-2 row in one pass that reads the row contiguously, which LLVM
    vectorises (a strided copy per phase stays scalar: stride-2 depthwise layers spent most of
    their time there). Unsigned indices, so that Numba leaves out its negative-index test."""
    e = out[even0:even0 + n_even]
    o = out[odd0:odd0 + n_odd]
    both = min(n_even, n_odd)
    for k in range(both):
        ku = np.uint64(k)
        e[ku] = row[np.uint64(2) * ku]
        o[ku] = row[np.uint64(2) * ku + np.uint64(1)]
    for k in range(both, n_even):
        e[k] = row[2 * k]
    for k in range(both, n_odd):
        o[k] = row[2 * k + 1]


_STEP = 32  # bytes from one interleaved position (8 float32 lanes) to the next

_SIG = types.void(types.int64, types.int64, types.int64, types.int64, types.int64, types.int64, types.int64,
                  types.int64)


_GROUP = 4  # output positions per pass of `_row`: independent sums, so the FMAs' latencies overlap


def _open_loops(builder, lo, hi, name):
    """LLVM IR: the blocks of `for q in range(lo, hi, step)` around an inner loop, the builder left
    in the outer loop's body: (q's phi, the inner loop's block, the block after it, the exit)."""
    entry = builder.block
    outer = builder.append_basic_block(f"{name}.q")
    inner = builder.append_basic_block(f"{name}.inner")
    inner_end = builder.append_basic_block(f"{name}.inner_end")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed("<", lo, hi), outer, done)
    builder.position_at_end(outer)
    q = builder.phi(ir.IntType(64))
    q.add_incoming(lo, entry)
    return q, inner, inner_end, done


def _close_loops(builder, q, step, hi, inner_end, done):
    """LLVM IR: the end of `_open_loops`' outer loop (from the block after the inner one): q += step,
    back while q < hi, then on at the exit."""
    nq = builder.add(q, ir.Constant(ir.IntType(64), step))
    q.add_incoming(nq, inner_end)
    builder.cbranch(builder.icmp_signed("<", nq, hi), q.parent, done)
    builder.position_at_end(done)


def _emit_positions(builder, fma, p, lo, hi, width):
    """LLVM IR: for q in range(lo, hi, width), outputs q .. q + width − 1 of `_row` (hi − lo a
    multiple of width), their sums in `width` registers: each tap's weights loaded once, then one
    FMA per position — a lone sum waits out each FMA's latency, tap after tap."""
    i64, v8 = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
    vptr = v8.as_pointer()
    zero, step_c = ir.Constant(i64, 0), ir.Constant(i64, _STEP)
    q, inner, inner_end, done = _open_loops(builder, lo, hi, "row")
    bases = [builder.gep(p["src"], [builder.mul(builder.add(q, ir.Constant(i64, k)), p["step"])])
             for k in range(width)]
    outer_block = builder.block
    builder.cbranch(builder.icmp_signed(">", p["taps"], zero), inner, inner_end)
    builder.position_at_end(inner)  # for t in range(taps): sum_k = fma(w[t], src[base_k + offs[t]], sum_k)
    t = builder.phi(i64)
    sums = [builder.phi(v8) for _ in range(width)]
    t.add_incoming(zero, outer_block)
    off = builder.load(builder.gep(p["offs"], [t]), align=8)
    wv = builder.load(builder.bitcast(builder.gep(p["wts"], [builder.mul(t, step_c)]), vptr), align=4)
    new_sums = []
    for base, acc in zip(bases, sums):
        acc.add_incoming(p["bias"], outer_block)
        xv = builder.load(builder.bitcast(builder.gep(base, [off]), vptr), align=4)
        new_sums.append(builder.call(fma, [wv, xv, acc]))
    nt = builder.add(t, ir.Constant(i64, 1))
    t.add_incoming(nt, inner)
    for acc, new_sum in zip(sums, new_sums):
        acc.add_incoming(new_sum, inner)
    builder.cbranch(builder.icmp_signed("<", nt, p["taps"]), inner, inner_end)
    builder.position_at_end(inner_end)  # store, next q
    results = [builder.phi(v8) for _ in new_sums]
    for k, (res, new_sum) in enumerate(zip(results, new_sums)):
        res.add_incoming(p["bias"], outer_block)
        res.add_incoming(new_sum, inner)
        at = builder.gep(p["dst"], [builder.mul(builder.add(q, ir.Constant(i64, k)), step_c)])
        builder.store(res, builder.bitcast(at, vptr), align=4)
    _close_loops(builder, q, width, hi, inner_end, done)


@intrinsic
def _row(typingctx, src, step, wts, offs, taps, bias, dst, count):
    """dst[q·8 .. q·8 + 7] = bias[0..7] + Σ_t wts[t·8 .. t·8 + 7] · src[q·step + offs[t] .. + 7] for q < count:
    one output row of 8 channels, their values interleaved (addresses and offsets in bytes, as integers)."""
    def codegen(context, builder, signature, args):
        src, step, wts, offs, taps, bias, dst, count = args
        i64, bptr = ir.IntType(64), ir.IntType(8).as_pointer()
        v8 = ir.VectorType(ir.FloatType(), 8)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
        p = {"src": builder.inttoptr(src, bptr), "step": step, "wts": builder.inttoptr(wts, bptr),
             "offs": builder.inttoptr(offs, i64.as_pointer()), "taps": taps,
             "dst": builder.inttoptr(dst, bptr)}
        p["bias"] = builder.load(builder.bitcast(builder.inttoptr(bias, bptr), v8.as_pointer()), align=4)
        grouped = builder.and_(count, ir.Constant(i64, -_GROUP))  # count rounded down to whole groups
        _emit_positions(builder, fma, p, ir.Constant(i64, 0), grouped, _GROUP)
        _emit_positions(builder, fma, p, grouped, count, 1)
        return context.get_dummy_value()
    return _SIG, codegen


def _emit_sliding(builder, fma, p, lo, hi, width, kw, sw):
    """LLVM IR: like _emit_positions, for taps of one row kw wide whose columns are adjacent (no
    dilation) and outputs sw positions apart: a row of taps over `width` outputs reads only
    (width − 1)·sw + kw positions, each loaded once and used by every output whose window covers
    it (_emit_positions loads width·kw). Each sum still takes its taps in order (kernel row, then
    column; the same bits). Registers: width sums, kw weights, one input."""
    i64, v8 = ir.IntType(64), ir.VectorType(ir.FloatType(), 8)
    vptr = v8.as_pointer()
    zero = ir.Constant(i64, 0)
    q, inner, inner_end, done = _open_loops(builder, lo, hi, "slide")
    start = builder.gep(p["src"], [builder.mul(q, p["step"])])
    outer_block = builder.block
    builder.cbranch(builder.icmp_signed(">", p["rows"], zero), inner, inner_end)
    builder.position_at_end(inner)  # for i in range(rows): this row of taps over the width outputs
    i = builder.phi(i64)
    sums = [builder.phi(v8) for _ in range(width)]
    i.add_incoming(zero, outer_block)
    row = builder.gep(start, [builder.mul(i, p["row_bytes"])])
    first_tap = builder.mul(i, ir.Constant(i64, kw * _STEP))
    weights = [builder.load(builder.bitcast(builder.gep(p["wts"], [builder.add(first_tap, ir.Constant(i64, j * _STEP))]),
                                            vptr), align=4) for j in range(kw)]
    new_sums = list(sums)
    for at in range((width - 1) * sw + kw):  # each input position once, in order
        xv = builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, at * _STEP)]), vptr), align=4)
        for g in range(width):
            j = at - g * sw
            if 0 <= j < kw:  # (for sum g, j rises with `at`: its taps stay in order)
                new_sums[g] = builder.call(fma, [weights[j], xv, new_sums[g]])
    for acc, new_sum in zip(sums, new_sums):
        acc.add_incoming(p["bias"], outer_block)
        acc.add_incoming(new_sum, inner)
    ni = builder.add(i, ir.Constant(i64, 1))
    i.add_incoming(ni, inner)
    builder.cbranch(builder.icmp_signed("<", ni, p["rows"]), inner, inner_end)
    builder.position_at_end(inner_end)  # store, next q
    results = [builder.phi(v8) for _ in new_sums]  # (a block's phis come first)
    for g, (res, new_sum) in enumerate(zip(results, new_sums)):
        res.add_incoming(p["bias"], outer_block)
        res.add_incoming(new_sum, inner)
        at = builder.gep(p["dst"], [builder.mul(builder.add(q, ir.Constant(i64, g)), ir.Constant(i64, _STEP))])
        builder.store(res, builder.bitcast(at, vptr), align=4)
    _close_loops(builder, q, width, hi, inner_end, done)


_SLIDE_SIG = types.void(*[types.int64] * 8)
_SLIDE_WIDTH = 8  # outputs per pass of a sliding row: 8 sums + 5 weights + 1 input fit AVX2's 16 registers


def _make_sliding_row(kw, sw):
    """`_row` for windows kw wide, undilated, stride sw (3 or 5, 1 or 2: MobileNet's and
    EfficientNet's), as _emit_sliding: dst[q] for q < count, from rows of taps `row_bytes` apart."""
    @intrinsic
    def row(typingctx, src, wts, rows, row_bytes, bias, dst, count, unused):
        def codegen(context, builder, signature, args):
            src, wts, rows, row_bytes, bias, dst, count, _ = args
            i64, bptr = ir.IntType(64), ir.IntType(8).as_pointer()
            v8 = ir.VectorType(ir.FloatType(), 8)
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
            p = {"src": builder.inttoptr(src, bptr), "step": ir.Constant(i64, sw * _STEP),
                 "wts": builder.inttoptr(wts, bptr), "rows": rows, "row_bytes": row_bytes,
                 "dst": builder.inttoptr(dst, bptr)}
            p["bias"] = builder.load(builder.bitcast(builder.inttoptr(bias, bptr), v8.as_pointer()), align=4)
            wide = builder.and_(count, ir.Constant(i64, -_SLIDE_WIDTH))
            four = builder.add(wide, builder.and_(builder.sub(count, wide), ir.Constant(i64, -4)))
            _emit_sliding(builder, fma, p, ir.Constant(i64, 0), wide, _SLIDE_WIDTH, kw, sw)
            _emit_sliding(builder, fma, p, wide, four, 4, kw, sw)
            _emit_sliding(builder, fma, p, four, count, 1, kw, sw)
            return context.get_dummy_value()
        return _SLIDE_SIG, codegen
    return row


_slide_3_1, _slide_3_2, _slide_5_1, _slide_5_2 = (_make_sliding_row(3, 1), _make_sliding_row(3, 2),
                                                  _make_sliding_row(5, 1), _make_sliding_row(5, 2))


# The 8×8 transpose as AVX's unpack / shuffle / lane-permute steps, each a shufflevector of two
# vectors (a's lanes 0–7, b's 8–15): 24 shuffles for 64 values, against 64 scalar loads and stores.
_UNPACK_LO, _UNPACK_HI = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
_PAIRS_LO, _PAIRS_HI = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
_HALVES_LO, _HALVES_HI = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]


@intrinsic
def _transpose8(typingctx, src, src_step, dst, dst_step):
    """dst row p lane l = src row l lane p for an 8×8 block of float32: src rows src_step bytes apart,
    dst rows dst_step bytes apart (addresses as integers). Interleaves 8 planes' runs of 8 values
    (by_channel_blocks' buffer) and back."""
    def codegen(context, builder, signature, args):
        src, src_step, dst, dst_step = args
        i32, i64, bptr = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        v8p = ir.VectorType(ir.FloatType(), 8).as_pointer()

        def row(base, step, k):
            at = builder.gep(builder.inttoptr(base, bptr), [builder.mul(step, ir.Constant(i64, k))])
            return builder.bitcast(at, v8p)

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 8), mask))
        r = [builder.load(row(src, src_step, k), align=4) for k in range(8)]
        t = [shuffle(r[k], r[k + 1], mask) for k in (0, 2, 4, 6) for mask in (_UNPACK_LO, _UNPACK_HI)]
        u = [shuffle(t[a], t[a + 2], mask) for a in (0, 1, 4, 5) for mask in (_PAIRS_LO, _PAIRS_HI)]
        out = [shuffle(u[k], u[k + 4], mask) for mask in (_HALVES_LO, _HALVES_HI) for k in range(4)]
        for k in range(8):
            builder.store(out[k], row(dst, dst_step, k), align=4)
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64, types.int64), codegen


def by_channel_blocks(x, w, bias, has_bias, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y, threads, interleaved=None):
    """Direct depthwise convolution for small maps, 8 channels at a time: their zero-padded planes
    interleaved in one buffer (buf[(row·wp + column)·8 + lane]), so that a tap is one 8-wide fused
    multiply-add for 8 channels and an output row of the block is one `_row` call (LLVM IR: the
    vector sum stays in a register across the taps), or for 3- and 5-wide windows of stride 1 or
    2 one sliding row (`_emit_sliding`: each input loaded once for all the windows it is in; 14²
    to 112² maps 0.64–0.84× the time of `_row`). Same arguments, same float32 operations in
    the same order (bias, then the taps row by row) as `by_planes`, so the same bits. On small
    maps the planes kernel's short loops cost more than its arithmetic. Against it (2 threads,
    MobileNet's and EfficientNet-B0's layers): 0.3× the time on 7² maps, 0.5–0.6× on 14², 0.5–0.8×
    on stride-2 layers with outputs up to 28 wide, 0.8–0.9× on 28²; with the interleaving done by
    8×8 transposes, 0.6–0.97× on 56² outputs (in-network); with sliding rows, 0.70–0.80× on 112²
    outputs (hot, alone), but 1.0× on 224² (its buffers hold whole planes, far past L2). `interleaved`: the
    layer's `interleave(w, bias, has_bias)`, made once per layer (made here when not given)."""
    h_, w_ = x.shape[2], x.shape[3]
    ho, wo = y.shape[2], y.shape[3]
    hp = max(h_ + pt, (ho - 1) * sh + (kh - 1) * dh + 1)  # the zero-padded planes' size
    wp = max(w_ + pl, (wo - 1) * sw + (kw - 1) * dw + 1)
    # a thread's buffers: the block's padded input, its output and its unpadded input, interleaved
    size = (hp * wp + ho * wo + h_ * w_) * 8
    buffers = scratch("depthwise", threads * size).reshape(threads, size)
    weights, biases = interleaved if interleaved is not None else interleave(w, bias, has_bias)
    _by_channel_blocks(x, weights, biases, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y, threads, hp, wp, buffers)


def interleave(w, bias, has_bias) -> tuple[np.ndarray, np.ndarray]:
    """by_channel_blocks' weights: block b's tap t for its 8 channels at [b, t·8 .. t·8 + 7], and
    their biases at [b, 0..7] (zeros past the last channel, and without a bias). Gathered per
    block inside the kernel, they cost a fifth of a 7² layer's time."""
    c, taps = w.shape[0], w.shape[2] * w.shape[3]
    blocks = (c + 7) // 8
    weights = np.zeros((blocks * 8, taps), np.float32)
    weights[:c] = w.reshape(c, taps)
    biases = np.zeros(blocks * 8, np.float32)
    if has_bias:
        biases[:c] = bias
    return (np.ascontiguousarray(weights.reshape(blocks, 8, taps).transpose(0, 2, 1).reshape(blocks, taps * 8)),
            biases.reshape(blocks, 8))


@njit(cache=True, fastmath=FMA, parallel=True)
def _by_channel_blocks(x, weights, biases, kh, kw, sh, sw, pt, pl, dh, dw, act, alpha, y, threads, hp, wp,
                       buffers):
    """by_channel_blocks in Numba, in each thread's reused buffers (a run allocates no planes)."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    blocks = (c_ + 7) // 8
    units = n_ * blocks
    taps = kh * kw
    offs = np.empty(taps, np.int64)
    for i in range(kh):
        for j in range(kw):
            offs[i * kw + j] = ((i * dh) * wp + j * dw) * _STEP
    hw, howo = h_ * w_, ho * wo
    # the sliding rows' variant (kernel width, stride), where one applies (else 0: `_row`)
    sliding = kw * 10 + sw if dw == 1 and (kw == 3 or kw == 5) and (sw == 1 or sw == 2) else 0
    # whether each channel's plane is one contiguous run (the transposes read and write them flat)
    flat_in = x.strides[3] == 4 and x.strides[2] == 4 * w_
    flat_out = y.strides[3] == 4 and y.strides[2] == 4 * wo
    for t in prange(threads):
        buf = buffers[t, :hp * wp * 8]
        buf[:] = 0.0  # (the padding: only the inside is written below)
        out = buffers[t, hp * wp * 8:(hp * wp + howo) * 8]  # the block's output, interleaved
        flat = buffers[t, (hp * wp + howo) * 8:]  # the block's input, interleaved, unpadded
        for u in range(units * t // threads, units * (t + 1) // threads):
            n = u // blocks
            c0 = (u - n * blocks) * 8
            lanes = min(8, c_ - c0)
            # interleave, 8 positions at a time by an 8×8 transpose in registers (position by
            # position, the scalar loads and stores cost as much as the taps on 28² maps): row by
            # row where rows are whole vectors, else over the flat planes and then copied into
            # rows (rows of 7 or 14 would leave most of it scalar: 7² layers 0.64× the time)
            xs = x[n, c0:c0 + lanes]
            if lanes == 8 and w_ % 8 == 0:
                for r in range(h_):
                    d = buf[((r + pt) * wp + pl) * 8:((r + pt) * wp + pl + w_) * 8]
                    for q in range(0, w_, 8):
                        _transpose8(xs[0, r, q:].ctypes.data, xs.strides[0], d[q * 8:].ctypes.data, _STEP)
            elif lanes == 8 and flat_in:
                for p in range(0, hw - 7, 8):
                    _transpose8(xs.ctypes.data + p * 4, xs.strides[0], flat.ctypes.data + p * _STEP, _STEP)
                for p in range(hw - hw % 8, hw):
                    for l in range(8):
                        flat[p * 8 + l] = xs[l, p // w_, p % w_]
                for r in range(h_):  # then each row's run into the padded buffer: contiguous copies
                    d = buf[((r + pt) * wp + pl) * 8:((r + pt) * wp + pl + w_) * 8]
                    src = flat[r * w_ * 8:(r + 1) * w_ * 8]
                    for k in range(w_ * 8):
                        d[k] = src[k]
            else:
                for r in range(h_):
                    d = buf[((r + pt) * wp + pl) * 8:((r + pt) * wp + pl + w_) * 8]
                    for q in range(w_):
                        for l in range(lanes):
                            d[q * 8 + l] = xs[l, r, q]
            wb, b8 = weights[c0 // 8], biases[c0 // 8]
            for oh in range(ho):
                src, dst = buf.ctypes.data + oh * sh * wp * _STEP, out.ctypes.data + oh * wo * _STEP
                if sliding == 31:
                    _slide_3_1(src, wb.ctypes.data, kh, dh * wp * _STEP, b8.ctypes.data, dst, wo, 0)
                elif sliding == 32:
                    _slide_3_2(src, wb.ctypes.data, kh, dh * wp * _STEP, b8.ctypes.data, dst, wo, 0)
                elif sliding == 51:
                    _slide_5_1(src, wb.ctypes.data, kh, dh * wp * _STEP, b8.ctypes.data, dst, wo, 0)
                elif sliding == 52:
                    _slide_5_2(src, wb.ctypes.data, kh, dh * wp * _STEP, b8.ctypes.data, dst, wo, 0)
                else:
                    _row(src, sw * _STEP, wb.ctypes.data, offs.ctypes.data, taps, b8.ctypes.data, dst, wo)
            if act != NONE:  # over the whole block at once (rows of 7·8 values are short for its loops)
                act_row(out, out, np.float32(0.0), False, act, alpha)
            ys = y[n, c0:c0 + lanes]
            if lanes == 8 and flat_out:  # the output is not padded: straight into the flat planes
                for p in range(0, howo - 7, 8):
                    _transpose8(out.ctypes.data + p * _STEP, _STEP, ys.ctypes.data + p * 4, ys.strides[0])
                for p in range(howo - howo % 8, howo):
                    for l in range(8):
                        ys[l, p // wo, p % wo] = out[p * 8 + l]
            else:
                for oh in range(ho):
                    for q in range(wo):
                        for l in range(lanes):
                            ys[l, oh, q] = out[(oh * wo + q) * 8 + l]
