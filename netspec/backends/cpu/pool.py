"""Pooling: max (padding, dilation, ceil mode), average (ceil mode, count_include_pad), global and
adaptive average — all with PyTorch's window rules.

Max and average pooling are separable: each kernel pools the window's rows first (a vertical pass
over whole rows) and then its columns. Every pass is a plain loop `for k in range(n)` over slices,
so LLVM vectorises it: an index computed as `ow * sw + off`, possibly negative as far as Numba
knows, brings in its wraparound test and keeps the loop scalar (measured: 5–10× slower).

The general kernels work plane by plane, which on 7²–28² planes costs more in per-row calls than
in arithmetic. The two commonest max pools therefore have their own kernels that run over many
planes at once: stride 1 with a centred window (`_maxpool_same`) and stride 2 on an even width
(`_maxpool_s2`); GoogLeNet's pools went from 3.2× ONNX Runtime's time to 1.5×.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._util import f32, output, thread_count, window_out

# Planes with narrower outputs than this pool their columns as one flat run over all rows (rows of
# 7–28 values are too short to vectorise well); wider ones row by row, straight into the output.
_FLAT_BELOW = 40


@njit(inline="always")
def _mx(a, b):
    """max(a, b) with a NaN winning, as in PyTorch: a select, so loops of it vectorise."""
    return b if (b > a or b != b) else a


@njit(inline="always")
def _max3(d, a, b, c, n, first):
    """d[:n] ← max(a, b, c), or max(d, a, b, c) unless `first`. Never `d[k] = max(d[k], a[k])`
    alone: LLVM turns that select into a masked store, which is slow (measured 2× on AMD EPYC)."""
    if first:
        for k in range(n):
            d[k] = _mx(_mx(a[k], b[k]), c[k])
    else:
        for k in range(n):
            d[k] = _mx(_mx(d[k], a[k]), _mx(b[k], c[k]))


@njit(inline="always")
def _max_run(d, src, start, step, n, taps):
    """d[k] ← the max over t < taps of src[start + t·step + k], for k < n: three taps per pass (a tap
    repeated where fewer are left: max is idempotent), on plain slices (contiguous loads). (Max and
    sum, contiguous and strided are separate functions, not one with flags: Numba inlines every
    branch of a flag, and the pools' compile time grows with what it inlines.)"""
    for t in range(0, taps, 3):
        s0 = start + t * step
        s1 = start + min(t + 1, taps - 1) * step
        s2 = start + min(t + 2, taps - 1) * step
        _max3(d, src[s0:s0 + n], src[s1:s1 + n], src[s2:s2 + n], n, t == 0)


@njit(inline="always")
def _max_strided(d, src, start, step, sw, n, taps):
    """`_max_run` reading every sw-th value: src[start + t·step + k·sw] (strided slices)."""
    span = (n - 1) * sw + 1
    for t in range(0, taps, 3):
        s0 = start + t * step
        s1 = start + min(t + 1, taps - 1) * step
        s2 = start + min(t + 2, taps - 1) * step
        _max3(d, src[s0:s0 + span:sw], src[s1:s1 + span:sw], src[s2:s2 + span:sw], n, t == 0)


@njit(inline="always")
def _max_taps(d, src, start, step, sw, n, taps):
    """d[k] ← the max over t < taps of src[start + t·step + k·sw], for k < n."""
    if sw == 1:
        _max_run(d, src, start, step, n, taps)
    else:
        _max_strided(d, src, start, step, sw, n, taps)


@njit(inline="always")
def _sum_taps(d, src, start, step, sw, n, taps):
    """d[k] ← the sum over t < taps of src[start + t·step + k·sw], in the order of t, for k < n."""
    span = (n - 1) * sw + 1
    for k in range(n):
        d[k] = 0.0
    for t in range(taps):
        s0 = start + t * step
        if sw == 1:
            a = src[s0:s0 + n]
            for k in range(n):
                d[k] += a[k]
        else:
            a = src[s0:s0 + span:sw]
            for k in range(n):
                d[k] += a[k]


def _plane_pooler(taps):
    """A function pooling one plane with `taps` (_max_taps or _sum_taps):

    plane(src, wv, ho, wo, kh, kw, sh, sw, dh, dw, flat, v, q, yc) pools `src` (flat, rows of wv
    values, already padded as the pool needs) into yc (ho×wo): the kh rows of each window into v
    (ho×wv), then the kw columns of each window. With `flat`, the columns are pooled as one run
    over all rows into q (row length wv/sw; wv is a multiple of sw), whose first wo columns are
    then copied out; otherwise row by row into yc."""
    @njit(inline="always")
    def plane(src, wv, ho, wo, kh, kw, sh, sw, dh, dw, flat, v, q, yc):
        if sh == 1:  # consecutive output rows read consecutive rows: one run per tap over the plane
            taps(v, src, 0, dh * wv, 1, ho * wv, kh)
        else:
            for oh in range(ho):
                taps(v[oh * wv:(oh + 1) * wv], src, oh * sh * wv, dh * wv, 1, wv, kh)
        if flat:
            wq = wv // sw
            mq = (ho - 1) * wq + wo  # far enough for the last row's outputs, so no tap reads past v
            taps(q, v, 0, dw, sw, mq, kw)
            for oh in range(ho):
                d = yc[oh]
                s = q[oh * wq:oh * wq + wo]
                for k in range(wo):
                    d[k] = s[k]
        else:
            for oh in range(ho):
                taps(yc[oh], v, oh * wv, dw, sw, wo, kw)
    return plane


_max_plane, _sum_plane = _plane_pooler(_max_taps), _plane_pooler(_sum_taps)


@njit(inline="always")
def _pad_plane(xc, ph, pw, hp, wp, fill, xp):
    """xc (h×w) into the flat buffer xp (hp rows of wp), at row ph, column pw; the rest is `fill`."""
    h_, w_ = xc.shape
    for r in range(hp):
        row = xp[r * wp:(r + 1) * wp]
        ih = r - ph
        if ih < 0 or ih >= h_:
            for k in range(wp):
                row[k] = fill
            continue
        for k in range(pw):
            row[k] = fill
        d = row[pw:pw + w_]
        s = xc[ih]
        for k in range(w_):
            d[k] = s[k]
        tail = row[pw + w_:wp]
        for k in range(wp - pw - w_):
            tail[k] = fill


@njit(cache=True, fastmath=False, parallel=True)
def _maxpool(x, kh, kw, sh, sw, ph, pw, dh, dw, hp, wp, flat, y, threads):
    """Max over each window (padding and the ceil-mode overhang act as −inf; a NaN wins, as in
    PyTorch). Each plane is copied into an hp×wp buffer padded with −inf, unless it needs no
    padding (hp == 0: pooled in place). Parallel over planes, one run of planes per thread, so
    each thread allocates its buffers once."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    wv = wp if hp else w_
    mv = ho * wv
    planes = n_ * c_
    for t in prange(threads):
        buf = np.empty(2 * mv + hp * wp, np.float32)  # v, q and the padded plane: one allocation
        v, q = buf[:mv], buf[mv:2 * mv]
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            if hp:
                src = buf[2 * mv:]
                _pad_plane(x[n, c], ph, pw, hp, wp, np.float32(-np.inf), src)
            else:
                src = x[n, c].reshape(h_ * w_)
            _max_plane(src, wv, ho, wo, kh, kw, sh, sw, dh, dw, flat, v, q, y[n, c])


@njit(cache=True, fastmath=False)
def _max_same_run(x, ph, pw, h_, w_, v, y):
    """`_maxpool_same` over a run of whole planes, flat: x, y (planes·h·w) and the scratch v."""
    size = x.shape[0]
    plane = h_ * w_
    # rows: one pass over the run, each output row the max of the kh input rows around it; the
    # first and last ph rows of each plane read a neighbouring plane there and are redone, with
    # the rows inside the plane only
    n = size - 2 * ph * w_
    if n > 0:
        _max_run(v[ph * w_:ph * w_ + n], x, 0, w_, n, 2 * ph + 1)
    for r in range(h_):
        if ph <= r < h_ - ph:
            continue
        lo, hi = max(0, r - ph), min(h_, r + ph + 1)
        for start in range(0, size, plane):
            _max_run(v[start + r * w_:start + (r + 1) * w_], x, start + lo * w_, w_, w_, hi - lo)
    # columns: the same over v; the first and last pw columns redone down all the run's rows at once
    n = size - 2 * pw
    if n > 0:
        _max_run(y[pw:pw + n], v, 0, 1, n, 2 * pw + 1)
    for q in range(w_):
        if pw <= q < w_ - pw:
            continue
        lo, hi = max(0, q - pw), min(w_, q + pw + 1)
        _max_strided(y[q::w_], v, lo, 1, w_, size // w_, hi - lo)


@njit(cache=True, fastmath=False, parallel=True)
def _maxpool_same(x, ph, pw, y, threads):
    """Max pooling with stride 1, no dilation and a (2·ph + 1)×(2·pw + 1) window centred on each
    output (padding ph, pw: the output is the input's size), the padding left out of each max.

    The general kernel copies every plane into a padded buffer and pools it as rows of 7–28
    values; here the rows pass and the columns pass each run once over many planes at a time,
    flat, and only the border rows and columns are redone, clamped (GoogLeNet's 3×3 pools in
    every inception block: 3.3× ORT's time before). Runs of planes of about 64 KiB, in cache
    between the two passes; parallel over runs."""
    n_, c_, h_, w_ = x.shape
    planes = n_ * c_
    plane = h_ * w_
    per = max(1, (64 << 10) // (4 * plane))
    runs = (planes + per - 1) // per
    xf, yf = x.reshape(planes * plane), y.reshape(planes * plane)
    for t in prange(threads):
        v = np.empty(per * plane, np.float32)
        for run in range(runs * t // threads, runs * (t + 1) // threads):
            p0, p1 = run * per, min(planes, (run + 1) * per)
            _max_same_run(xf[p0 * plane:p1 * plane], ph, pw, h_, w_, v[:(p1 - p0) * plane], yf[p0 * plane:p1 * plane])


@njit(inline="always")
def _max_of_pairs(d, src, base, n, taps):
    """d[k] = max over t < taps (2 or 3) of src[base + 2k + t], for k < n: the columns of a stride-2
    window, read with unsigned indices so that LLVM vectorises the interleaved loads."""
    b = np.uint64(base)
    if taps == 2:
        for k in range(n):
            q = b + np.uint64(2) * np.uint64(k)
            d[k] = _mx(src[q], src[q + np.uint64(1)])
    else:
        for k in range(n):
            q = b + np.uint64(2) * np.uint64(k)
            d[k] = _mx(_mx(src[q], src[q + np.uint64(1)]), src[q + np.uint64(2)])


@njit(cache=True, fastmath=False)
def _max_rows(src, length, h_, ho, kh, ph, dst):
    """dst's row (plane, oh) ← the max of src's rows 2·oh − ph + i (i < kh) inside the plane (one to
    three of them): rows of `length` values, planes of h_ rows in src and ho in dst. Flat unsigned
    indices: rows of 7–112 values, called per row, would cost more in the call than in the loop."""
    planes = dst.shape[0] // (ho * length)
    step = np.uint64(length)
    for p in range(planes):
        for oh in range(ho):
            lo, hi = max(0, 2 * oh - ph), min(h_, 2 * oh - ph + kh)
            a = np.uint64((p * h_ + lo) * length)
            d = np.uint64((p * ho + oh) * length)
            if hi - lo == 1:
                for k in range(length):
                    dst[d + np.uint64(k)] = src[a + np.uint64(k)]
            elif hi - lo == 2:
                for k in range(length):
                    q = a + np.uint64(k)
                    dst[d + np.uint64(k)] = _mx(src[q], src[q + step])
            else:
                for k in range(length):
                    q = a + np.uint64(k)
                    dst[d + np.uint64(k)] = _mx(_mx(src[q], src[q + step]), src[q + step + step])


@njit(cache=True, fastmath=False)
def _max_columns(src, w_, wo, kw, pw, dst):
    """dst (rows × wo) ← the max of src's (rows × w_) columns 2·ow − pw + j (j < kw) inside each row.
    Rows 2·wo long: over every row at once, output column ow of row R reading flat position
    2·(R·wo + ow) − pw + j; the pass stops where a read would leave src, and the columns whose
    window is clipped by the row's edges are redone, clamped, down all the rows. Rows 2·wo + 1
    long (AlexNet's 55, 27, 13; pw = 0, so every window is inside its row): row by row."""
    rows = dst.shape[0] // wo
    if w_ != 2 * wo:
        for r in range(rows):
            _max_of_pairs(dst[r * wo:(r + 1) * wo], src, r * w_, wo, kw)
        return
    f0 = (pw + 1) // 2
    f1 = (src.shape[0] - kw + pw) // 2 + 1
    if f1 > f0:
        _max_of_pairs(dst[f0:f1], src, 2 * f0 - pw, f1 - f0, kw)
    for q in range(wo):
        if 2 * q - pw >= 0 and 2 * q - pw + kw <= w_:
            continue
        lo, hi = max(0, 2 * q - pw), min(w_, 2 * q - pw + kw)
        _max_strided(dst[q::wo], src, lo, 1, w_, rows, hi - lo)


@njit(cache=True, fastmath=False)
def _max_s2_run(x, kh, kw, ph, pw, h_, w_, ho, wo, y, v):
    """`_maxpool_s2` over a run of whole planes: x (planes·h·w), y (planes·ho·wo), scratch v. Windows
    3 high: rows first (into v: planes·ho·w), then columns, on half the rows (GoogLeNet's pools:
    0.76–0.92× the time); 2 high (no overlap): columns first (into v: planes·h·wo), then rows (2×2
    pools of 224² planes took 1.3–1.5× the time rows first, from L3)."""
    planes = x.shape[0] // (h_ * w_)
    if kh == 3:
        rows = v[:planes * ho * w_]
        _max_rows(x, w_, h_, ho, kh, ph, rows)
        _max_columns(rows, w_, wo, kw, pw, y)
    else:
        columns = v[:planes * h_ * wo]
        _max_columns(x, w_, wo, kw, pw, columns)
        _max_rows(columns, wo, h_, ho, kh, ph, y)


@njit(cache=True, fastmath=False, parallel=True)
def _maxpool_s2(x, kh, kw, ph, pw, y, threads):
    """Max pooling with stride 2, no dilation, windows of at most 3×3 and an input twice the output's
    width (GoogLeNet's and ResNet's stride-2 pools, VGG's and YOLO's 2×2), or one more without
    padding (AlexNet's): the columns are pooled
    in one pass over many planes' rows at once, and the rows row by row (in the order
    `_max_s2_run` chooses), each window clipped to the plane (padding and the ceil-mode overhang
    left out of the max), so no plane is copied into a padded buffer. Runs of planes of about
    64 KiB; parallel over runs."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    planes = n_ * c_
    per = max(1, (64 << 10) // (4 * h_ * w_))
    runs = (planes + per - 1) // per
    xf, yf = x.reshape(planes * h_ * w_), y.reshape(planes * ho * wo)
    for t in prange(threads):
        v = np.empty(per * max(ho * w_, h_ * wo), np.float32)
        for run in range(runs * t // threads, runs * (t + 1) // threads):
            p0, p1 = run * per, min(planes, (run + 1) * per)
            _max_s2_run(xf[p0 * h_ * w_:p1 * h_ * w_], kh, kw, ph, pw, h_, w_, ho, wo, yf[p0 * ho * wo:p1 * ho * wo], v)


@njit(inline="always")
def _divisors(size, kernel, stride, pad, out, count_include_pad):
    """The divisor along one axis, per output: the window clipped to the input and its padding
    (count_include_pad; the ceil-mode overhang never counts), or to the input alone."""
    div = np.empty(out, np.float64)
    for o in range(out):
        start = o * stride - pad
        end = min(start + kernel, size + pad)
        if not count_include_pad:
            start, end = max(start, 0), min(end, size)
        div[o] = end - start
    return div


@njit(cache=True, fastmath=False, parallel=True)
def _avgpool(x, kh, kw, sh, sw, ph, pw, hp, wp, flat, count_include_pad, y, threads):
    """PyTorch's avg_pool2d: window sums (float64, padding as zeros, the terms in the same order as
    a direct loop) over the divisor hdiv[oh]·wdiv[ow]. Parallel as _maxpool."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    hdiv = _divisors(h_, kh, sh, ph, ho, count_include_pad)
    wdiv = _divisors(w_, kw, sw, pw, wo, count_include_pad)
    wv = wp if hp else w_
    mv = ho * wv
    m = hp * wp if hp else h_ * w_
    planes = n_ * c_
    for t in prange(threads):
        buf = np.empty(2 * mv + ho * wo + m, np.float64)  # v, q, the sums, the (padded) plane
        v, q = buf[:mv], buf[mv:2 * mv]
        sums = buf[2 * mv:2 * mv + ho * wo].reshape(ho, wo)
        src = buf[2 * mv + ho * wo:]
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            if hp:
                _pad_plane(x[n, c], ph, pw, hp, wp, 0.0, src)
            else:  # float64 sums: the plane converted once
                xs = x[n, c].reshape(h_ * w_)
                for k in range(m):
                    src[k] = xs[k]
            _sum_plane(src, wv, ho, wo, kh, kw, sh, sw, 1, 1, flat, v, q, sums)
            yc = y[n, c]
            for oh in range(ho):
                d = yc[oh]
                sr = sums[oh]
                hd = hdiv[oh]
                for k in range(wo):
                    d[k] = sr[k] / (hd * wdiv[k])


@njit(cache=True, fastmath=False, parallel=True)
def _adaptive_avgpool(x, y):
    """PyTorch's adaptive bins: output o covers [floor(o·H/out), ceil((o+1)·H/out))."""
    n_, c_, h_, w_ = x.shape
    ho, wo = y.shape[2], y.shape[3]
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        xc = x[n, c]
        for oh in range(ho):
            hs = (oh * h_) // ho
            he = ((oh + 1) * h_ + ho - 1) // ho
            for ow in range(wo):
                ws = (ow * w_) // wo
                we = ((ow + 1) * w_ + wo - 1) // wo
                acc = 0.0
                for ih in range(hs, he):
                    for iw in range(ws, we):
                        acc += xc[ih, iw]
                y[n, c, oh, ow] = acc / ((he - hs) * (we - ws))


@njit(cache=True, fastmath=False, parallel=True)
def _global_avgpool(x, y):
    """x: R×P → y: R, the mean of each row, one thread per row."""
    for r in prange(x.shape[0]):
        y[r] = row_mean(x[r])


@njit(cache=True, fastmath=False, inline="always")
def row_mean(row):
    """The mean of a float32 row, accumulated in float64 in eight interleaved partial sums: one
    running sum is a chain of dependent adds that cannot be vectorised without reordering, eight
    independent ones are a vector add per eight values. (Eight scalars, not an array of eight: a
    row's array was a heap allocation, 3x the time of summing a 7×7 plane.)"""
    p_ = row.shape[0]
    whole = p_ - p_ % 8
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    for p in range(0, whole, 8):
        a0 += row[p]
        a1 += row[p + 1]
        a2 += row[p + 2]
        a3 += row[p + 3]
        a4 += row[p + 4]
        a5 += row[p + 5]
        a6 += row[p + 6]
        a7 += row[p + 7]
    acc = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7
    for p in range(whole, p_):
        acc += row[p]
    return acc / p_


def _extent(size, kernel, stride, pad, dilation, out, flat):
    """The padded buffer's length along one axis: the input after its padding, or as far as the
    windows reach (the ceil-mode overhang), whichever is longer; a multiple of the stride for the
    flat column pass."""
    need = max(pad + size, (out - 1) * stride + (kernel - 1) * dilation + 1)
    return -(-need // stride) * stride if flat else need


def _plane_layout(h, w, ho, wo, kernel, stride, padding, dilation):
    """(hp, wp, flat) for _maxpool/_avgpool: hp = wp = 0 when the windows stay inside the input
    and the plane can be pooled in place (no padded copy)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    flat = wo < _FLAT_BELOW
    hp = _extent(h, kh, sh, ph, dh, ho, False)
    wp = _extent(w, kw, sw, pw, dw, wo, flat)
    if ph == pw == 0 and hp == h and wp == w:
        return 0, 0, flat
    return hp, wp, flat


def maxpool_path(attrs, h: int, w: int) -> str:
    """The kernel a max pool of h×w planes runs: "centred" (`_maxpool_same`), "stride 2"
    (`_maxpool_s2`) or "other" (`_maxpool`). (The warm-up compiles only the paths a network takes.)"""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = attrs.kernel, attrs.stride, attrs.padding, attrs.dilation
    wo = window_out(w, dw * (kw - 1) + 1, sw, pw, pw, attrs.ceil_mode)
    if (sh, sw, dh, dw) == (1, 1, 1, 1) and (kh, kw) == (2 * ph + 1, 2 * pw + 1):
        return "centred"
    even = w == 2 * wo or (pw == 0 and w == 2 * wo + 1)  # (rows of 2·wo + 1: every window inside)
    if (sh, sw, dh, dw) == (2, 2, 1, 1) and kh <= 3 and kw in (2, 3) and even:
        return "stride 2"
    return "other"


def maxpool2d(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    dh, dw = attrs.dilation
    ho = window_out(h, dh * (kh - 1) + 1, sh, ph, ph, attrs.ceil_mode)
    wo = window_out(w, dw * (kw - 1) + 1, sw, pw, pw, attrs.ceil_mode)
    y = output(out, (n, c, ho, wo))
    path = maxpool_path(attrs, h, w)
    if path == "centred" and x.size:
        _maxpool_same(x, ph, pw, y, thread_count())
        return y
    if path == "stride 2" and y.size:
        _maxpool_s2(x, kh, kw, ph, pw, y, thread_count())
        return y
    hp, wp, flat = _plane_layout(h, w, ho, wo, attrs.kernel, attrs.stride, attrs.padding, attrs.dilation)
    _maxpool(x, kh, kw, sh, sw, ph, pw, dh, dw, hp, wp, flat, y, thread_count())
    return y


@njit(cache=True, fastmath=False, inline="always")
def _avgpool_2x2_planes(x, y, first, last):
    """_avgpool for 2×2 windows, stride 2, no padding, planes first .. last − 1 (numbered image
    after image): the same float64 sums in the same order ((top left + bottom left) + (top right
    + bottom right), / 4), so the same bits, with none of its buffers or passes (LeNet-5's pools:
    10–30 µs a layer, of which the arithmetic is ~2)."""
    c_ = x.shape[1]
    ho, wo = y.shape[2], y.shape[3]
    for idx in range(first, last):
        n = idx // c_
        xc, yc = x[n, idx - n * c_], y[n, idx - n * c_]
        for i in range(ho):
            top, bottom, d = xc[2 * i], xc[2 * i + 1], yc[i]
            for j in range(wo):
                left = np.float64(top[2 * j]) + np.float64(bottom[2 * j])
                right = np.float64(top[2 * j + 1]) + np.float64(bottom[2 * j + 1])
                d[j] = (left + right) / 4.0


@njit(cache=True, fastmath=False, parallel=True)
def _avgpool_2x2(x, y, threads):
    planes = x.shape[0] * x.shape[1]
    for t in prange(threads):
        _avgpool_2x2_planes(x, y, planes * t // threads, planes * (t + 1) // threads)


@njit(cache=True, fastmath=False)
def _avgpool_2x2_serial(x, y):
    """_avgpool_2x2 on the calling thread (a parallel region costs ~3 µs even on one thread)."""
    _avgpool_2x2_planes(x, y, 0, x.shape[0] * x.shape[1])


# Pools of fewer values than this run on one thread: waking the pool costs more than it saves.
POOL_PARALLEL = 1 << 16


def avgpool_path(attrs, h: int, w: int) -> str:
    """The kernel an average pool of h×w planes runs: "2×2" (`_avgpool_2x2`, or its serial twin
    for fewer than POOL_PARALLEL values) or "other" (`_avgpool`)."""
    ho = window_out(h, attrs.kernel[0], attrs.stride[0], attrs.padding[0], attrs.padding[0], attrs.ceil_mode)
    wo = window_out(w, attrs.kernel[1], attrs.stride[1], attrs.padding[1], attrs.padding[1], attrs.ceil_mode)
    square = (*attrs.kernel, *attrs.stride, *attrs.padding) == (2, 2, 2, 2, 0, 0)
    return "2×2" if square and 2 * ho <= h and 2 * wo <= w else "other"


def avgpool2d(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    kh, kw = attrs.kernel
    sh, sw = attrs.stride
    ph, pw = attrs.padding
    ho = window_out(h, kh, sh, ph, ph, attrs.ceil_mode)
    wo = window_out(w, kw, sw, pw, pw, attrs.ceil_mode)
    y = output(out, (n, c, ho, wo))
    if avgpool_path(attrs, h, w) == "2×2" and y.size:
        if x.size >= POOL_PARALLEL:
            _avgpool_2x2(x, y, thread_count())
        else:
            _avgpool_2x2_serial(x, y)
        return y
    hp, wp, flat = _plane_layout(h, w, ho, wo, attrs.kernel, attrs.stride, attrs.padding, (1, 1))
    _avgpool(x, kh, kw, sh, sw, ph, pw, hp, wp, flat, bool(attrs.count_include_pad), y, thread_count())
    return y


def global_avgpool(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c, h, w = x.shape
    y = output(out, (n, c, 1, 1))
    _global_avgpool(x.reshape(n * c, h * w), y.reshape(n * c))
    return y


def adaptive_avgpool2d(attrs, inputs, params, ctx, out=None):
    x = f32(inputs[0])
    n, c = x.shape[:2]
    y = output(out, (n, c) + tuple(attrs.size))
    _adaptive_avgpool(x, y)
    return y
