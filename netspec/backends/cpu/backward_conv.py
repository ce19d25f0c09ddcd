"""Gradients of conv2d and conv_transpose2d (float32, NCHW), for the `grad` kernel (`backward`).

∂input is a transposed convolution of dy by the weights. Where it takes:
- 1×1 stride-1 layers: Wᵀ · dy[n], one GEMM per image (gemm.py's sgemm blocks), nothing else;
- 3×3 stride-1 layers on maps at least 16 wide: Winograd F(2×2, 3×3) (`backward_winograd`) on the
  weights flipped and transposed (the input gradient of a stride-1 convolution is the stride-1
  convolution of dy by them);
- depthwise layers: the forward kernel (`depthwise`) at stride 1 on those weights; strided ones
  on small maps the same, on dy dilated by zeros; on larger maps a direct scatter kernel;
- large images (a chunk's column matrix would not fit): the forward kernels (`conv.prepare`);
- everything else: per chunk of images one GEMM, Wᵀ (C/G·kh·kw × O/G) times dy transposed
  (O × the chunk's pixels), then the columns scattered back, plane by plane (`_col2im`), or where
  the output is the input's size at stride 1 tap by tap as masked shifted runs (`_col2im_same`).

∂weight is the correlation of x with dy: dW_g (O/G × C/G·kh·kw) = Σ_n dy_g[n] · patches(x[n])ᵀ.
Each thread builds its own rows of the patch matrix for a chunk of images (a few hundred KiB,
still in cache when the GEMM packs them) and accumulates into its own columns of dW with one
single-threaded sgemm per chunk (β = 1 after the first); where dW is narrow (few taps: stems,
LeNet) the threads share the images instead, each into a partial dW, summed after. Depthwise
∂weight is direct: channel blocks of masked shifted runs on small same-size maps, else per
channel one dot product per tap over the padded plane in phases (the forward kernel's layout).

conv_transpose2d's gradients are conv2d's with the roles swapped: ∂input is the conv2d of dy by
the same weights (the forward kernels), ∂weight the correlation of dy (as the input) with x (as
the output gradient).

Measured against PyTorch 2.13's torch.nn.grad.conv2d_input / conv2d_weight (oneDNN) on
ResNet-18's and MobileNet v1's layers at batch 32: see the report of the change that added this.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from . import backward_winograd, conv, depthwise, gemm
from ._act import FMA
from ._util import output, scratch, thread_count

# reductions may reassociate (so they vectorise); sums stay in float32 per run, float64 across runs
_REDUCE = {"contract", "reassoc"}


@dataclass(frozen=True)
class ConvSpec:
    """What `conv.prepare` reads of a conv2d's attributes, padding already resolved (top, left,
    bottom, right): the gradient's convolution is no spec's node."""

    out: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    bias: bool = False


# --- ∂bias ----------------------------------------------------------------------------------------

@njit(cache=True, fastmath=_REDUCE, parallel=True)
def _channel_sums(dy, out):
    """out[c] = Σ_{n, s} dy[n, c, s] for dy: N×C×S (float64 across rows, parallel over channels)."""
    n_, c_, s_ = dy.shape
    for c in prange(c_):
        acc = 0.0
        for n in range(n_):
            row = dy[n, c]
            part = np.float32(0.0)
            for s in range(s_):
                part += row[s]
            acc += part
        out[c] = acc


def channel_sums(dy: np.ndarray, out=None) -> np.ndarray:
    """Σ of dy (N×C×… float32, contiguous) over every axis but the channels: a bias's gradient."""
    y = output(out, (dy.shape[1],))
    _channel_sums(dy.reshape(dy.shape[0], dy.shape[1], -1), y)
    return y


# --- conv2d ∂input --------------------------------------------------------------------------------

def _flipped(w: np.ndarray, groups: int) -> np.ndarray:
    """The stride-1 input gradient's weights: W'[g·C/G + c, o] = W[g·O/G + o, c] flipped in h and w."""
    o, cg, kh, kw = w.shape
    og = o // groups
    wf = w.reshape(groups, og, cg, kh, kw)[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(wf.reshape(groups * cg, og, kh, kw))


def conv2d_input(dy, w, x_shape, stride, dilation, pads, groups, out=None):
    """∂L/∂x of y = conv2d(x, w) (stride, dilation, pads (top, left, bottom, right), groups) from
    dy: N×O×ho×wo, for an input of shape x_shape."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pads
    ho, wo = dy.shape[2], dy.shape[3]
    is_depthwise = groups == c == o and groups > 1
    pointwise = kh == kw == 1 and pt == pl == pb == pr == 0 and sh == sw == 1
    if pointwise and groups == 1 and ho * wo >= _MIN_WIDTH:  # Wᵀ · dy[n], image by image: no scatter
        dx = output(out, (n, c, h, wd))
        gemm.matmul(w.reshape(1, o, c), dy.reshape(n, o, ho * wo), dx.reshape(n, c, h * wd), trans_a=True)
        return dx
    reach_h, reach_w = dh * (kh - 1), dw * (kw - 1)
    flipped_pads = (reach_h - pt, reach_w - pl, h - ho + pt, wd - wo + pl)  # (bottom: reach_h − pb, …)
    if (kh, kw, sh, sw, dh, dw, groups) == (3, 3, 1, 1, 1, 1, 1) and min(flipped_pads) >= 0 \
            and backward_winograd.applies(c, o, h, wd):
        return backward_winograd.conv3x3(dy, _flipped(w, 1), flipped_pads, out)
    if sh == sw == 1 and (is_depthwise or 4 * cg * kh * kw * ho * wo > _CHUNK_BYTES):
        # the forward kernels: direct depthwise; for large images (whose columns would not fit a
        # chunk) Winograd's or im2col's tiles. Measured, the GEMM and scatter below take 0.6–1.0× the
        # forward path's time elsewhere (its per-call weight transforms; ResNet's 2² maps: 0.24×).
        if min(flipped_pads) >= 0:
            spec = ConvSpec(out=c, kernel=(kh, kw), dilation=(dh, dw), groups=groups, pads=flipped_pads)
            return conv.prepare(spec, {"weight": _flipped(w, groups)})([dy], out)
    hz, wz = (ho - 1) * sh + 1, (wo - 1) * sw + 1  # dy with sh − 1 and sw − 1 zeros between its values
    dilated_pads = (reach_h - pt, reach_w - pl, h - hz + pt, wd - wz + pl)
    if is_depthwise and wo <= DILATED_MAX_WIDTH and min(dilated_pads) >= 0:
        # small maps: the dilated dy through the forward kernel at stride 1 (4× the multiply-adds of
        # a stride-2 scatter, but there the per-plane costs, not the arithmetic, dominate)
        dz = scratch("grad_dilated", n * c * hz * wz).reshape(n, c, hz, wz)
        _dilate(dy, sh, sw, dz)
        spec = ConvSpec(out=c, kernel=(kh, kw), dilation=(dh, dw), groups=groups, pads=dilated_pads)
        return conv.prepare(spec, {"weight": _flipped(w, groups)})([dz], out)
    dx = output(out, (n, c, h, wd))
    if is_depthwise:
        depthwise_input(dy, w, stride, dilation, (pt, pl), dx)
        return dx
    transposed_conv(dy, w, groups, (kh, kw), stride, dilation, (pt, pl), dx)
    return dx


_CHUNK_BYTES = 4 << 20  # the transposed path's column matrix: at most this much, unless one image needs more


def transposed_conv(x, w, groups, kernel, stride, dilation, pads_tl, y):
    """y (N×C×H×W, written) = the transposed convolution of x (N×O×h×w) by w (O×C/G×kh×kw):
    input pixel (ih, iw) through tap (i, j) lands on (ih·sh − pt + i·dh, iw·sw − pl + j·dw), taps
    outside y dropped. Per chunk of images and group one GEMM, Wᵀ (C/G·kh·kw × O/G) times the
    chunk's x transposed (O × images·h·w: every image's pixels side by side), then the columns are
    scattered back into y's planes (`_col2im`), or where y is x's size at stride 1 added tap by
    tap into y transposed (`_col2im_same`). (Each chunk in buffers of its own: the kernels see
    contiguous arrays, one compiled version each.)"""
    n, o, h, wd = x.shape
    c = y.shape[1]
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = kernel, stride, dilation, pads_tl
    og, cg = o // groups, c // groups
    k, p = cg * kh * kw, h * wd
    wg = w.reshape(groups, og, k)
    step = max(1, min(n, _CHUNK_BYTES // (4 * k * p)))
    cols = scratch("grad_cols", k * step * p)
    xt = scratch("grad_dyt", o * step * p)
    same = sh == sw == 1 and y.shape[2:] == (h, wd)
    if same:
        yt = scratch("grad_yt", c * step * p)
        mask, dist = same_taps(h, wd, kernel, dilation, pads_tl, step)
        threads = max(1, min(thread_count(), cg))
    else:
        threads = max(1, min(thread_count(), n * cg))
        hp, wq = plane_size(y.shape[2], y.shape[3], kernel, stride, dilation, pads_tl, (h, wd))
        planes = scratch("grad_planes", threads * sw * hp * wq).reshape(threads, sw * hp, wq)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        width = (n1 - n0) * p
        xc = xt[:o * width].reshape(o, width)
        _transpose_batch(x[n0:n1].reshape(n1 - n0, o, p), xc)
        cm = cols[:k * width].reshape(1, k, width)
        yc = yt[:c * width].reshape(c, width) if same else None
        for gi in range(groups):
            gemm.matmul(wg[gi:gi + 1], xc[gi * og:(gi + 1) * og][None], cm, trans_a=True)
            if same:
                _col2im_same(cm[0], kh * kw, mask, dist, threads, yc[gi * cg:(gi + 1) * cg])
            else:
                _col2im(cm[0], n0, n1, gi * cg, cg, kh, kw, sh, sw, pt, pl, dh, dw, h, wd, threads, planes, y)
        if same:
            _untranspose_batch(yc, y[n0:n1].reshape(n1 - n0, c, p))
    return y


def same_taps(h, w, kernel, dilation, pads_tl, images):
    """For a stride-1 window whose output is its input's size: each tap's distance in a flattened
    plane from an output position to the input position it reads, d = (i·dh − pt)·W + j·dw − pl, and
    a 0/1 mask over the output positions of `images` planes side by side (1 where the tap stays in
    the plane; the same for every plane). So a tap over all positions is one shifted run."""
    (kh, kw), (dh, dw), (pt, pl) = kernel, dilation, pads_tl
    taps = kh * kw
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    mask = np.empty((taps, images * h * w), np.float32)
    dist = np.empty(taps, np.int64)
    for t in range(taps):
        i, j = divmod(t, kw)
        r, q = rows + i * dh - pt, cols + j * dw - pl  # the input position the tap reads
        inside = (r >= 0) & (r < h) & (q >= 0) & (q < w)
        mask[t] = np.tile(inside.astype(np.float32).ravel(), images)
        dist[t] = (i * dh - pt) * w + j * dw - pl
    return mask, dist


@njit(cache=True, fastmath=FMA, parallel=True)
def _col2im_same(cols, taps, mask, dist, threads, yt):
    """The adjoint of the shifted runs of `same_taps`: yt[c, q] = Σ over taps of cols[c·taps + t, q − d_t]
    where the tap stays in the plane, for yt: C/G × (images·H·W) (written), cols: C/G·taps × that.
    Each tap is one masked multiply-add over a whole row: no per-plane work (on 2² to 8² maps,
    `_col2im`'s per-plane loops cost more than the GEMM's columns). Parallel over channels."""
    cg, m = yt.shape
    for t in prange(threads):
        for cl in range(cg * t // threads, cg * (t + 1) // threads):
            dst = yt[cl]
            for q in range(m):
                dst[q] = 0.0
            for tp in range(taps):
                d = dist[tp]
                lo, hi = max(0, -d), min(m, m - d)  # (past the ends the mask is 0 anyway)
                src = cols[cl * taps + tp, lo:hi]
                mk = mask[tp, lo:hi]
                run = dst[lo + d:hi + d]
                for q in range(hi - lo):
                    run[q] += src[q] * mk[q]


@njit(cache=True, fastmath=FMA, parallel=True)
def _untranspose_batch(yt, y):
    """y[n, c, s] = yt[c, n·S + s]: the inverse of `_transpose_batch`."""
    n_, c_, s_ = y.shape
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        src = yt[c, n * s_:(n + 1) * s_]
        dst = y[n, c]
        for s in range(s_):
            dst[s] = src[s]


@njit(cache=True, fastmath=FMA, parallel=True)
def _col2im(cols, n0, n1, c0, cg, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, threads, planes, y):
    """The adjoint of `_patch_rows`: y[n, c0 + c] (n0 ≤ n < n1, c < cg) = Σ over the taps of the
    column rows scattered to where they were gathered from. Per plane: each tap's rows added as
    contiguous runs into the zero-padded plane in column phases (the layout of `_fill_plane`),
    then its inside copied out. Parallel over planes, a buffer per thread."""
    h_, w_ = y.shape[2], y.shape[3]
    hp, wq = planes.shape[1] // sw, planes.shape[2]
    p = ho * wo
    taps = kh * kw
    units = (n1 - n0) * cg
    for t in prange(threads):
        flat = planes[t].reshape(-1)
        for u in range(units * t // threads, units * (t + 1) // threads):
            nl = u // cg
            cl = u - nl * cg
            for q in range(flat.shape[0]):
                flat[q] = 0.0
            for tp in range(taps):
                i = tp // kw
                j = tp - i * kw
                row = cols[cl * taps + tp]
                src0 = nl * p
                dst0 = ((j * dw) % sw * hp + i * dh) * wq + (j * dw) // sw
                for oh in range(ho):  # (unsigned indices: no negative-index test in the loop)
                    so = np.uint64(src0 + oh * wo)
                    do = np.uint64(dst0 + oh * sh * wq)
                    for q in range(wo):
                        qq = np.uint64(q)
                        flat[do + qq] += row[so + qq]
            yc = y[n0 + nl, c0 + cl]
            for ih in range(h_):
                dst = yc[ih]
                r = ih + pt
                if r >= hp:
                    for q in range(w_):
                        dst[q] = 0.0
                    continue
                for b in range(sw):  # the columns iw with (iw + pl) % sw == b: phase b's row from column q0
                    iw0 = (b - pl) % sw
                    if iw0 >= w_:
                        continue
                    q0 = (iw0 + pl) // sw
                    count = (w_ - 1 - iw0) // sw + 1
                    valid = max(0, min(count, wq - q0))
                    src = flat[(b * hp + r) * wq + q0:(b * hp + r) * wq + q0 + valid]
                    if sw == 1:
                        for q in range(valid):
                            dst[q] = src[q]
                        for q in range(valid, w_):
                            dst[q] = 0.0
                    else:
                        d = dst[iw0:w_:sw]
                        for q in range(valid):
                            d[q] = src[q]
                        for q in range(valid, count):
                            d[q] = 0.0


@njit(cache=True, fastmath=FMA, parallel=True)
def _depthwise_input(dy, w, kh, kw, sh, sw, pt, pl, dh, dw, threads, dx):
    """dx = the transposed depthwise convolution of dy by w (C×1×kh×kw), any stride: per plane,
    each tap scatters w·dy into the zero-padded input plane held in sh×sw phases (phase (a, b):
    padded rows r·sh + a, columns q·sw + b, rows wq long), where tap (i, j) of output (oh, ow)
    lands at flat position oh·wq + ow + ((i·dh) // sh)·wq + (j·dw) // sw of phase
    ((i·dh) % sh, (j·dw) % sw): one contiguous multiply-add per tap over ho·wq values (dy copied
    into rows wq long, zero past wo), as in the forward `depthwise.by_planes`. Then the inside of
    the padded plane is copied out. Parallel over planes, each thread its own buffers."""
    n_, c_, ho, wo = dy.shape
    h_, w_ = dx.shape[2], dx.shape[3]
    hq = ho + ((kh - 1) * dh) // sh
    wq = wo + ((kw - 1) * dw) // sw
    size = hq * wq + wq  # one spare row: the last tap's run ends past hq·wq
    m = ho * wq
    taps = np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            taps[i * kw + j] = (((i * dh) % sh) * sw + (j * dw) % sw) * size + ((i * dh) // sh) * wq + (j * dw) // sw
    planes = n_ * c_
    for t in prange(threads):
        phases = np.empty(sh * sw * size, np.float32)
        dyq = np.zeros(m, np.float32)  # (its columns past wo stay 0)
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            for k in range(phases.shape[0]):
                phases[k] = 0.0
            src = dy[n, c]
            for oh in range(ho):
                d = dyq[oh * wq:oh * wq + wo]
                s = src[oh]
                for k in range(wo):
                    d[k] = s[k]
            wc = w[c, 0]
            for i in range(kh):
                for j in range(kw):
                    wv = wc[i, j]
                    p0 = taps[i * kw + j]
                    run = phases[p0:p0 + m]
                    for k in range(m):
                        run[k] += wv * dyq[k]
            xc = dx[n, c]
            for ih in range(h_):
                r = ih + pt
                a = r % sh
                rq = r // sh
                dst = xc[ih]
                if rq >= hq:
                    for k in range(w_):
                        dst[k] = 0.0
                    continue
                for b in range(sw):  # the columns iw with (iw + pl) % sw == b: phase b's row from column q0
                    iw0 = (b - pl) % sw
                    if iw0 >= w_:
                        continue
                    q0 = (iw0 + pl) // sw
                    count = (w_ - 1 - iw0) // sw + 1
                    valid = max(0, min(count, wq - q0))
                    src = phases[(a * sw + b) * size + rq * wq + q0:(a * sw + b) * size + rq * wq + q0 + valid]
                    if sw == 1:
                        for k in range(valid):
                            dst[k] = src[k]
                        for k in range(valid, w_):
                            dst[k] = 0.0
                    else:
                        d = dst[iw0:w_:sw]
                        for k in range(valid):
                            d[k] = src[k]
                        for k in range(valid, count):
                            d[k] = 0.0


# Strided depthwise input gradients with dy at most this wide take the dilated path (see conv2d_input).
DILATED_MAX_WIDTH = 16


@njit(cache=True, fastmath=FMA, parallel=True)
def _dilate(dy, sh, sw, dz):
    """dz[n, c, oh·sh, ow·sw] = dy[n, c, oh, ow], zero between."""
    n_, c_, ho, wo = dy.shape
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        src, dst = dy[n, c], dz[n, c]
        for r in range(dst.shape[0]):
            row = dst[r]
            for q in range(dst.shape[1]):
                row[q] = 0.0
        for oh in range(ho):
            row = dst[oh * sh]
            s = src[oh]
            for ow in range(wo):
                row[ow * sw] = s[ow]


def depthwise_input(dy, w, stride, dilation, pads_tl, dx):
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = w.shape[2:], stride, dilation, pads_tl
    threads = max(1, min(thread_count(), dx.shape[0] * dx.shape[1]))
    _depthwise_input(dy, w, kh, kw, sh, sw, pt, pl, dh, dw, threads, dx)
    return dx


# --- conv2d ∂weight -------------------------------------------------------------------------------

def plane_size(h, w, kernel, stride, dilation, pads_tl, out_hw):
    """(rows, phase columns) of `_patch_rows`'s padded plane: the padded rows and columns the
    windows reach, the columns split into stride-many phases."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    hp = (ho - 1) * sh + (kh - 1) * dh + 1
    wp = (wo - 1) * sw + (kw - 1) * dw + 1
    return hp, -(-wp // sw)


@njit(cache=True, fastmath=FMA)
def _fill_plane(xc, pt, pl, sw, hp, wq, plane):
    """The inside of the zero-padded plane of xc (H×W): padded row r, column q·sw + b at
    plane[(b·hp + r)·wq + q] (column phases, so that a strided window's row is a contiguous run).
    Only the inside is written: the padding stays as the caller zeroed it."""
    h_, w_ = xc.shape
    for r in range(max(0, pt), min(hp, h_ + pt)):
        src = xc[r - pt]
        for b in range(sw):
            q_lo = max(0, (pl - b + sw - 1) // sw)
            q_hi = min(wq, (w_ - 1 + pl - b) // sw + 1)
            if q_hi <= q_lo:
                continue
            dst = plane[(b * hp + r) * wq + q_lo:(b * hp + r) * wq + q_hi]
            first = q_lo * sw + b - pl
            if sw == 1:
                s = src[first:first + q_hi - q_lo]
                for q in range(q_hi - q_lo):
                    dst[q] = s[q]
            else:
                s2 = src[first:first + (q_hi - q_lo - 1) * sw + 1:sw]
                for q in range(q_hi - q_lo):
                    dst[q] = s2[q]


@njit(cache=True, fastmath=FMA)
def _patch_rows(x, n0, n1, c0, k0, k1, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, plane, cols):
    """Rows k0 .. k1 − 1 of the patch matrix of images n0 .. n1 − 1, channels from c0: cols[k − k0,
    (n − n0)·ho·wo + oh·wo + ow] = x[n, c0 + c, oh·sh − pt + i·dh, ow·sw − pl + j·dw] (0 outside
    x) for k = (c·kh + i)·kw + j, the order of weight[o].ravel(). Plane by plane: its padded copy
    (`_fill_plane`, into `plane`, zeroed by the caller, hp×wq per phase), then each tap's rows as
    contiguous runs of it (no bounds per value: padding is in the plane)."""
    taps = kh * kw
    p = ho * wo
    wq = plane.shape[1]
    hp = plane.shape[0] // sw
    flat = plane.reshape(-1)
    for cl in range(k0 // taps, (k1 - 1) // taps + 1):
        t0 = max(k0, cl * taps) - cl * taps
        t1 = min(k1, (cl + 1) * taps) - cl * taps
        for n in range(n0, n1):
            _fill_plane(x[n, c0 + cl], pt, pl, sw, hp, wq, flat)
            for t in range(t0, t1):
                i = t // kw
                j = t - i * kw
                row = cols[cl * taps + t - k0]
                src0 = ((j * dw) % sw * hp + i * dh) * wq + (j * dw) // sw
                dst0 = (n - n0) * p
                for oh in range(ho):  # (unsigned indices: no negative-index test in the loop)
                    so = np.uint64(src0 + oh * sh * wq)
                    do = np.uint64(dst0 + oh * wo)
                    for q in range(wo):
                        qq = np.uint64(q)
                        row[do + qq] = flat[so + qq]


@njit(cache=True, fastmath=FMA, parallel=True)
def _transpose_batch(dy, dyt):
    """dyt[o, n·S + s] = dy[n, o, s]: dy (N×O×S) as one O × N·S matrix, every channel's rows of all images."""
    n_, o_, s_ = dy.shape
    for idx in prange(n_ * o_):
        o = idx // n_
        n = idx - o * n_
        src = dy[n, o]
        dst = dyt[o, n * s_:(n + 1) * s_]
        for s in range(s_):
            dst[s] = src[s]


@njit(cache=True, fastmath=FMA)
def _weight_tasks(t0, t1, x, dya, lda, row_step, image_step, groups, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, parts_n,
                  parts_k, kstep, chunk, direct, xt, mask, dist, plane, buf, partial):
    """Tasks t0 .. t1 − 1 of the weight gradient. Task (group, image part, column part): dW_g's
    columns k0 .. k1 − 1 (kstep wide) summed over the part's images, into partial[image part]: for
    each chunk of images, its rows of the patch matrix into buf (or, `direct`, a 1×1 convolution's
    input rows where they lie), then dW += dy-chunk · rowsᵀ by one sgemm. dy-chunk: the matrix of
    dy's channel rows of the chunk's images, in `dya` (flat) at row_step values a channel, image_step
    an image, rows lda apart: dy transposed (O × N·P), or for chunks of one image dy itself. Where
    xt has rows (a stride-1 convolution whose output is its input's size: x transposed, C × N·P),
    a patch row is a shifted run of it, masked (`same_taps`), not plane by plane."""
    n_, c_ = x.shape[0], x.shape[1]
    o_ = partial.shape[1]
    cg, og = c_ // groups, o_ // groups
    k_ = partial.shape[2]
    p = ho * wo
    per_group = parts_n * parts_k
    plane[:] = 0.0  # (its padding: every plane writes only its inside)
    for task in range(t0, t1):
        gi = task // per_group
        part_n = (task - gi * per_group) // parts_k
        part_k = task - gi * per_group - part_n * parts_k
        n0, n1 = n_ * part_n // parts_n, n_ * (part_n + 1) // parts_n
        k0 = min(k_, part_k * kstep)
        k1 = min(k_, k0 + kstep)
        if k1 <= k0:
            continue
        pc = partial.ctypes.data + (part_n * partial.strides[0] + gi * og * partial.strides[1] + k0 * 4)
        beta = np.float32(0.0)
        for m0 in range(n0, n1, chunk):
            m1 = min(n1, m0 + chunk)
            width = (m1 - m0) * p
            if direct:  # (chunk 1) x[m0]'s channel rows k0 .. k1 − 1 are those of the patch matrix
                pb = x.ctypes.data + (m0 * x.strides[0] + (gi * cg + k0) * x.strides[1])
                ldb = p
            elif xt.shape[0] > 0:
                _patch_rows_same(xt, m0 * p, width, gi * cg, k0, k1, kh * kw, mask, dist, buf)
                pb = buf.ctypes.data
                ldb = buf.shape[1]
            else:
                _patch_rows(x, m0, m1, gi * cg, k0, k1, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, plane, buf)
                pb = buf.ctypes.data
                ldb = buf.shape[1]
            pa = dya.ctypes.data + 4 * (gi * og * row_step + m0 * image_step)
            gemm._sgemm(gemm._ROW_MAJOR, gemm._NO_TRANS, gemm._TRANS, og, k1 - k0, width, np.float32(1.0), pa, lda,
                        pb, ldb, beta, pc, k_)
            beta = np.float32(1.0)
        if beta == 0.0:  # no images in this part (fewer images than parts): its share is 0
            for r in range(og):
                for k in range(k0, k1):
                    partial[part_n, gi * og + r, k] = 0.0


@njit(cache=True, fastmath=FMA)
def _patch_rows_same(xt, start, width, c0, k0, k1, taps, mask, dist, cols):
    """`_patch_rows` for a stride-1 convolution whose output is its input's size, from x transposed
    (xt: C × N·H·W): row k = (c, t) over positions start .. start + width − 1 of all images is
    xt[c0 + c] shifted by tap t's distance, masked where the tap leaves the plane (`same_taps`)."""
    total = xt.shape[1]
    for k in range(k0, k1):
        c = k // taps
        t = k - c * taps
        d = dist[t]
        lo = max(0, -(start + d))  # (past x's ends the mask is 0 anyway)
        hi = min(width, total - start - d)
        dst = cols[k - k0]
        for q in range(lo):
            dst[q] = 0.0
        run = dst[lo:hi]
        src = xt[c0 + c, start + d + lo:start + d + hi]
        mk = mask[t, lo:hi]
        for q in range(hi - lo):
            run[q] = src[q] * mk[q]
        for q in range(max(lo, hi), width):
            dst[q] = 0.0


@njit(cache=True, fastmath=FMA, parallel=True)
def _weight_parallel(threads, tasks, x, dya, lda, row_step, image_step, groups, kh, kw, sh, sw, pt, pl, dh, dw, ho,
                     wo, parts_n, parts_k, kstep, chunk, direct, xt, mask, dist, planes, bufs, partial):
    for t in prange(threads):  # one contiguous run of tasks per thread, its own buffers
        _weight_tasks(tasks * t // threads, tasks * (t + 1) // threads, x, dya, lda, row_step, image_step, groups, kh,
                      kw, sh, sw, pt, pl, dh, dw, ho, wo, parts_n, parts_k, kstep, chunk, direct, xt, mask, dist,
                      planes[t], bufs[t], partial)


_NO_XT, _NO_MASK, _NO_DIST = np.zeros((0, 1), np.float32), np.zeros((1, 1), np.float32), np.zeros(1, np.int64)

# A thread's patch rows for one chunk of images: at most about this much (the GEMM packs them while
# they are still in L2), and at least this many columns (sgemm's reduction: short ones run poorly).
_PATCH_BYTES = 512 << 10
_MIN_WIDTH = 512
_PARALLEL_MIN = 1 << 17  # multiply-adds: below this, the calling thread alone


def conv2d_weight(x, dy, groups, kernel, stride, dilation, pads_tl, out=None):
    """∂L/∂W (O×C/G×kh×kw) of y = conv2d(x, W) from x (N×C×H×W) and dy (N×O×ho×wo): stride,
    dilation, top-left padding (the bottom and right follow from dy's size)."""
    n, c, h, wd = x.shape
    o, ho, wo = dy.shape[1], dy.shape[2], dy.shape[3]
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = kernel, stride, dilation, pads_tl
    cg = c // groups
    grad = output(out, (o, cg, kh, kw))
    if groups == c == o and groups > 1:
        return depthwise_weight(x, dy, kernel, stride, dilation, pads_tl, grad)
    k, p = cg * kh * kw, ho * wo
    if not gemm.AVAILABLE:  # no sgemm to call: the patch matrix of the whole batch, numpy's matmul
        return _numpy_weight(x, dy, groups, kernel, stride, dilation, pads_tl, grad)
    threads = thread_count() if n * o * p * k >= _PARALLEL_MIN else 1
    # how the threads share the work: the groups, else dW's columns (no partial sums to add up),
    # else, where dW is narrow (few taps: a stem), the images (a partial dW each)
    parts_n = parts_k = 1
    if groups < threads:
        share = -(-threads // groups)
        if k >= 32 * share:
            parts_k = share
        else:
            parts_n = min(n, share)
    kstep = -(-k // parts_k)
    if parts_k > 1:
        kstep = -(-kstep // 16) * 16  # (whole vectors of dW's rows per thread)
    direct = kh == kw == 1 and sh == sw == 1 and pt == pl == 0 and ho == h and wo == wd and p >= _MIN_WIDTH
    chunk = 1 if direct else max(1, min(n, max(-(-_MIN_WIDTH // p), _PATCH_BYTES // (4 * kstep * p))))
    if chunk == 1:  # an image's rows of dy are a matrix as they lie
        dya, lda, row_step, image_step = dy.reshape(-1), p, p, o * p
    else:  # several images' side by side: dy transposed to O × N·P
        dya = scratch("grad_dyt", o * n * p)
        _transpose_batch(dy.reshape(n, o, p), dya.reshape(o, n * p))
        lda, row_step, image_step = n * p, n * p, p
    bufs = scratch("grad_patches", threads * (1 if direct else kstep * chunk * p))
    bufs = bufs.reshape(threads, 1, -1) if direct else bufs.reshape(threads, kstep, chunk * p)
    partial = grad.reshape(1, o, k) if parts_n == 1 else np.empty((parts_n, o, k), np.float32)
    tasks = groups * parts_n * parts_k
    threads = min(threads, tasks)
    hp, wq = plane_size(h, wd, kernel, stride, dilation, pads_tl, (ho, wo))
    planes = scratch("grad_planes", threads * sw * hp * wq).reshape(threads, sw * hp, wq)
    if sh == sw == 1 and (ho, wo) == (h, wd) and chunk > 1:  # small maps: patch rows as shifted runs of x transposed
        xt = scratch("grad_xt", c * n * p).reshape(c, n * p)
        _transpose_batch(x.reshape(n, c, p), xt)
        mask, dist = same_taps(h, wd, kernel, dilation, pads_tl, chunk)
    else:
        xt, mask, dist = _NO_XT, _NO_MASK, _NO_DIST
    args = (x, dya, lda, row_step, image_step, groups, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, parts_n, parts_k, kstep,
            chunk, direct, xt, mask, dist)
    with gemm._OneBlasThread():
        if threads == 1:
            _weight_tasks(0, tasks, *args, planes[0], bufs[0], partial)
        else:
            _weight_parallel(threads, tasks, *args, planes, bufs, partial)
    if parts_n > 1:
        np.sum(partial, axis=0, out=grad.reshape(o, k))
    return grad


def _numpy_weight(x, dy, groups, kernel, stride, dilation, pads_tl, dw_):
    n, c = x.shape[:2]
    o, ho, wo = dy.shape[1:]
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = kernel, stride, dilation, pads_tl
    cg, og, p = c // groups, o // groups, ho * wo
    k = cg * kh * kw
    cols = np.empty((k, n * p), np.float32)
    dyt = np.ascontiguousarray(dy.reshape(n, o, p).transpose(1, 0, 2)).reshape(o, n * p)
    out = dw_.reshape(groups, og, k)
    hp, wq = plane_size(x.shape[2], x.shape[3], kernel, stride, dilation, pads_tl, (ho, wo))
    plane = np.zeros((sw * hp, wq), np.float32)
    for gi in range(groups):
        _patch_rows(x, 0, n, gi * cg, 0, k, kh, kw, sh, sw, pt, pl, dh, dw, ho, wo, plane, cols)
        np.matmul(dyt[gi * og:(gi + 1) * og], cols.T, out=out[gi])
    return dw_


@njit(cache=True, fastmath=_REDUCE, parallel=True)
def _depthwise_weight(x, dy, kh, kw, sh, sw, pt, pl, dh, dw, threads, out):
    """out[c, i·kw + j] = Σ_{n, oh, ow} dy[n, c, oh, ow] · x[n, c, oh·sh − pt + i·dh, ow·sw − pl + j·dw]:
    x's plane zero-padded in phases as the forward kernel lays it out (`depthwise.by_planes`), dy
    in rows wq long (zero past wo), so each tap is one dot product over ho·wq values. Parallel over
    channels (each thread its channels, all images: no partial sums)."""
    n_, c_, h_, w_ = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    hq = ho + ((kh - 1) * dh) // sh
    wq = wo + ((kw - 1) * dw) // sw
    size = hq * wq + wq
    m = ho * wq
    taps, fills, n_even, n_odd = depthwise._phase_plan(h_, w_, kh, kw, sh, sw, pt, pl, dh, dw, hq, wq, size)
    ntaps = kh * kw
    for t in prange(threads):
        phases = np.zeros(sh * sw * size, np.float32)
        dyq = np.zeros(m, np.float32)
        acc = np.zeros(ntaps, np.float64)
        for c in range(c_ * t // threads, c_ * (t + 1) // threads):
            for tp in range(ntaps):
                acc[tp] = 0.0
            for n in range(n_):
                xc = x[n, c]
                depthwise._fill_phases(xc, fills, sw, n_even, n_odd, phases)
                dc = dy[n, c]
                for oh in range(ho):
                    d = dyq[oh * wq:oh * wq + wo]
                    s = dc[oh]
                    for k in range(wo):
                        d[k] = s[k]
                for tp in range(ntaps):
                    run = phases[taps[tp]:taps[tp] + m]
                    v = np.float32(0.0)
                    for k in range(m):
                        v += dyq[k] * run[k]
                    acc[tp] += v
            for tp in range(ntaps):
                out[c, tp] = acc[tp]


@njit(cache=True, fastmath=_REDUCE, parallel=True)
def _depthwise_weight_same(x, dy, kh, kw, pt, pl, dh, dw, threads, cb, out):
    """`_depthwise_weight` for stride 1 where dy's planes are x's size ('same' padding) on small
    maps: no copies at all. The planes of a block of cb channels are one contiguous run of x (and
    of dy), and tap (i, j) reads x at a fixed distance from dy's position, d = (i·dh − pt)·W +
    j·dw − pl, where the window stays inside the plane; a 0/1 mask per tap (the same for every
    plane) drops the positions where it would leave it. So each tap is one long vectorised
    multiply-add per image, into its accumulator row; summed over the images, then over each
    channel's positions (float64). Parallel over channel blocks."""
    n_, c_, h_, w_ = x.shape
    hw = h_ * w_
    taps = kh * kw
    xf, df = x.reshape(-1), dy.reshape(-1)
    total = xf.shape[0]
    size = cb * hw
    mask = np.zeros((taps, size), np.float32)
    dist = np.empty(taps, np.int64)
    for tp in range(taps):
        i = tp // kw
        j = tp - i * kw
        dist[tp] = (i * dh - pt) * w_ + j * dw - pl
        for r in range(h_):
            for q in range(w_):
                if 0 <= r + i * dh - pt < h_ and 0 <= q + j * dw - pl < w_:
                    for cl in range(cb):
                        mask[tp, cl * hw + r * w_ + q] = 1.0
    blocks = (c_ + cb - 1) // cb
    for t in prange(threads):
        acc = np.empty((taps, size), np.float32)
        for blk in range(blocks * t // threads, blocks * (t + 1) // threads):
            c0 = blk * cb
            m = min(cb, c_ - c0) * hw
            acc[:] = 0.0
            for n in range(n_):
                base = (n * c_ + c0) * hw
                for tp in range(taps):
                    d = dist[tp]
                    lo = max(0, -(base + d))  # (x's ends: there the mask is 0 anyway)
                    hi = min(m, total - base - d)
                    a = acc[tp, lo:hi]
                    mk = mask[tp, lo:hi]
                    g = df[base + lo:base + hi]
                    src = xf[base + d + lo:base + d + hi]
                    for k in range(hi - lo):
                        a[k] += g[k] * src[k] * mk[k]
            for tp in range(taps):
                for cl in range(m // hw):
                    row = acc[tp, cl * hw:(cl + 1) * hw]
                    total_c = 0.0
                    for p in range(hw):
                        total_c += row[p]
                    out[c0 + cl, tp] = total_c


# Stride-1 depthwise weight gradients on planes of at most this many values, dy's the size of x's,
# go to `_depthwise_weight_same`; others to the planes kernel.
SAME_MAX_PLANE = 16 * 16
_SAME_BLOCK = 2048  # values of a channel block: its tap accumulators (9 × 8 KiB) stay in L1/L2


def depthwise_weight(x, dy, kernel, stride, dilation, pads_tl, out):
    (kh, kw), (sh, sw), (dh, dw), (pt, pl) = kernel, stride, dilation, pads_tl
    n, c, h, wd = x.shape
    ho, wo = dy.shape[2], dy.shape[3]
    if sh == sw == 1 and (ho, wo) == (h, wd) and h * wd <= SAME_MAX_PLANE:
        cb = max(1, _SAME_BLOCK // (h * wd))
        threads = max(1, min(thread_count(), -(-c // cb)))
        _depthwise_weight_same(x, dy, kh, kw, pt, pl, dh, dw, threads, cb, out.reshape(c, kh * kw))
        return out
    threads = max(1, min(thread_count(), c))
    _depthwise_weight(x, dy, kh, kw, sh, sw, pt, pl, dh, dw, threads, out.reshape(c, kh * kw))
    return out


# --- conv_transpose2d -----------------------------------------------------------------------------

def conv_transpose2d_input(dy, w, x_shape, stride, dilation, padding, groups, out=None):
    """∂L/∂x of y = conv_transpose2d(x, w) (w: C_in×C_out/G×kh×kw): the conv2d of dy by w (the
    same layout as a conv2d's O×C/G×kh×kw), cropped to x's size (output_padding's rows and
    columns reach no input)."""
    n, c, h, wd = x_shape
    ph, pw = padding
    spec = ConvSpec(out=c, kernel=tuple(w.shape[2:]), stride=tuple(stride), dilation=tuple(dilation), groups=groups,
                    pads=(ph, pw, ph, pw))
    layer = conv.prepare(spec, {"weight": w})
    full = layer([dy], None)
    if full.shape[2:] == (h, wd):
        if out is None:
            return full
        out[...] = full
        return out
    y = output(out, (n, c, h, wd))
    y[...] = full[:, :, :h, :wd]
    return y


def conv_transpose2d_weight(x, dy, groups, kernel, stride, dilation, padding, out=None):
    """∂L/∂W (C_in×C_out/G×kh×kw) of y = conv_transpose2d(x, W): the weight gradient of a conv2d
    whose input is dy and whose output gradient is x (y's pixel ih·s − p + i·d meets x's pixel ih)."""
    return conv2d_weight(dy, x, groups, kernel, stride, dilation, padding, out)
