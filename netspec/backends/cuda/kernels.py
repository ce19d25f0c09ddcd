"""The numba.cuda kernels of the CUDA backend. Every tensor is passed as a flat (1-D) float32 device
array in NCHW order, with its dimensions as integer arguments, so each kernel compiles once.

Convolutions (plain, grouped, depthwise, pointwise, transposed) and linear layers are one kernel,
`conv_gemm`: an implicit GEMM with shared-memory tiles. Per group g it computes
    Y[g·og + m, q] = Σ_k A[g, m, k] · B[g, k, q] (+ bias)
where A is the weight (og × C/G·kh·kw, row-major as stored) and B the im2col matrix of the input,
never materialised: each TK×TN tile of B is gathered straight from the input into shared memory
(padding, stride, dilation and, for transposed convolution, the stride-divisibility test resolved
while loading), the TK×TM tile of A likewise, and each thread accumulates an RM×RN block of
outputs in registers. The column index q runs over the batch and the output pixels together, so
small feature maps at batch 32 still fill the GPU. A linear layer is the 1×1 case on a 1×1 map.

The rest are memory-bound and use one thread per output element (grid-stride loops), or one block
per channel with a shared-memory tree reduction for batch-norm statistics.
"""
from __future__ import annotations

import math
import os

from numba import config, cuda, float32, float64

SIMULATOR = bool(config.ENABLE_CUDASIM)


class Tiles:
    """A GEMM tiling: TM×TN output tile per block, TK deep per shared-memory stage, RM×RN outputs per
    thread, so (TM/RM)·(TN/RN) threads per block."""

    def __init__(self, tm: int, tn: int, tk: int, rm: int, rn: int):
        if tm % rm or tn % rn:
            raise ValueError(f"tile {tm}×{tn} is not divisible by the thread block {rm}×{rn}")
        self.tm, self.tn, self.tk, self.rm, self.rn = tm, tn, tk, rm, rn
        self.ntx, self.nty = tn // rn, tm // rm
        self.kernel = make_conv_gemm(tm, tn, tk, rm, rn)

    def __repr__(self) -> str:
        return f"Tiles({self.tm}, {self.tn}, {self.tk}, {self.rm}, {self.rn})"


def _parse_tiles(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


TPB = 16 if SIMULATOR else 256  # threads per block of the elementwise kernels
RED = 16 if SIMULATOR else 256  # threads per block of the reductions (a power of two)
MAX_BLOCKS = 4 if SIMULATOR else 65535


def blocks_for(n: int) -> int:
    return max(1, min(MAX_BLOCKS, (n + TPB - 1) // TPB))


# --- the tiled implicit GEMM (conv2d, conv_transpose2d, linear) --------------------------------


def make_conv_gemm(TM: int, TN: int, TK: int, RM: int, RN: int):
    """The implicit-GEMM convolution kernel for one tiling (the tile sizes are compile-time constants)."""
    NTX = TN // RN  # threads along the columns (threadIdx.x)
    NTY = TM // RM  # threads along the rows (threadIdx.y)
    NT = NTX * NTY
    TM_PAD = TM + 1  # the A tile's row length, +1 so the transposed store avoids bank conflicts
    # (computed here: shared-array shapes must be compile-time constants, which an expression in
    # the kernel body is not for the CUDA compiler, though the simulator accepts it)

    @cuda.jit(fastmath=False)
    def conv_gemm(x, w, bias, has_bias, y, n_img, c_in, h, wd, c_out, og, cg, ho, wo, kh, kw, sh, sw, pt, pl,
                  dh, dw, transposed):
        """y (N×c_out×ho×wo) = conv(x (N×c_in×h×wd), w (G×og×cg×kh×kw)) (+ bias), G = c_in / cg.

        transposed: the gather form of a transposed convolution, output (oh, ow) takes input
        ((oh + pt − i·dh) / sh, ...) where that divides exactly and lands inside the input.
        Grid: (⌈N·ho·wo / TN⌉, ⌈og / TM⌉, G); block: (NTX, NTY).
        """
        sa = cuda.shared.array((TK, TM_PAD), float32)
        sb = cuda.shared.array((TK, TN), float32)
        acc = cuda.local.array((RM, RN), float32)
        ra = cuda.local.array(RM, float32)
        rb = cuda.local.array(RN, float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * NTX + tx
        g = cuda.blockIdx.z
        m0 = cuda.blockIdx.y * TM
        q0 = cuda.blockIdx.x * TN
        khw = kh * kw
        k_total = cg * khw
        p_total = ho * wo
        q_total = n_img * p_total
        for a in range(RM):
            for b in range(RN):
                acc[a, b] = float32(0.0)
        w_base = g * og * k_total
        for k0 in range(0, k_total, TK):
            # A tile: consecutive threads read consecutive k of one weight row (coalesced)
            for e in range(tid, TK * TM, NT):
                kk = e % TK
                mm = e // TK
                m = m0 + mm
                k = k0 + kk
                v = float32(0.0)
                if m < og and k < k_total:
                    v = w[w_base + m * k_total + k]
                sa[kk, mm] = v
            # B tile, gathered from the input (implicit im2col): consecutive threads take consecutive
            # output pixels, so the loads run along input rows
            for e in range(tid, TK * TN, NT):
                qq = e % TN
                kk = e // TN
                q = q0 + qq
                k = k0 + kk
                v = float32(0.0)
                if q < q_total and k < k_total:
                    n = q // p_total
                    p = q - n * p_total
                    oh = p // wo
                    ow = p - oh * wo
                    c = k // khw
                    r = k - c * khw
                    i = r // kw
                    j = r - i * kw
                    if transposed:
                        th = oh + pt - i * dh
                        tw = ow + pl - j * dw
                        if th >= 0 and tw >= 0 and th % sh == 0 and tw % sw == 0:
                            ih = th // sh
                            iw = tw // sw
                            if ih < h and iw < wd:
                                v = x[((n * c_in + g * cg + c) * h + ih) * wd + iw]
                    else:
                        ih = oh * sh - pt + i * dh
                        iw = ow * sw - pl + j * dw
                        if ih >= 0 and ih < h and iw >= 0 and iw < wd:
                            v = x[((n * c_in + g * cg + c) * h + ih) * wd + iw]
                sb[kk, qq] = v
            cuda.syncthreads()
            for kk in range(TK):  # RM + RN shared loads feed RM·RN multiply-adds
                for a in range(RM):
                    ra[a] = sa[kk, ty + a * NTY]
                for b in range(RN):
                    rb[b] = sb[kk, tx + b * NTX]
                for a in range(RM):
                    for b in range(RN):
                        acc[a, b] += ra[a] * rb[b]
            cuda.syncthreads()
        for a in range(RM):
            m = m0 + ty + a * NTY
            if m < og:
                bv = float32(0.0)
                if has_bias:
                    bv = bias[g * og + m]
                for b in range(RN):
                    q = q0 + tx + b * NTX
                    if q < q_total:
                        n = q // p_total
                        p = q - n * p_total
                        y[(n * c_out + g * og + m) * p_total + p] = acc[a, b] + bv
    return conv_gemm


# Real GPUs: 64×64×16 with 4×4 per thread (256 threads); a narrow 64×8×32 tiling for GEMMs with
# few columns (linear layers and tiny maps at small batch). The simulator runs each thread as a Python
# thread, so it gets 16 threads a block: the same code, smaller constants. NETSPEC_CUDA_TILES and
# NETSPEC_CUDA_TILES_NARROW ("TM,TN,TK,RM,RN") override them.
WIDE = Tiles(*_parse_tiles(os.environ.get("NETSPEC_CUDA_TILES")
                           or ("16,16,16,4,4" if SIMULATOR else "64,64,16,4,4")))
NARROW = Tiles(*_parse_tiles(os.environ.get("NETSPEC_CUDA_TILES_NARROW")
                             or ("16,4,16,4,1" if SIMULATOR else "64,8,32,2,2")))


def tiles_for(columns: int) -> Tiles:
    """The tiling for a GEMM with this many columns (N·H_out·W_out)."""
    return NARROW if columns <= 2 * NARROW.tn else WIDE


# --- pointwise ---------------------------------------------------------------------------------


def _unary(fn):
    """A grid-stride kernel y[i] = fn(x[i], a) for a device function fn(value, scalar)."""
    @cuda.jit(fastmath=False)
    def kernel(x, y, n, a):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            y[i] = fn(x[i], a)
    return kernel


@cuda.jit(device=True)
def _relu(v, a):
    if v > 0.0 or v != v:
        return v
    return float32(0.0)


@cuda.jit(device=True)
def _relu6(v, a):
    if v < 0.0:
        return float32(0.0)
    if v > 6.0:
        return float32(6.0)
    return v


@cuda.jit(device=True)
def _sigmoid(v, a):
    return 1.0 / (1.0 + math.exp(-float64(v)))


@cuda.jit(device=True)
def _tanh(v, a):
    return math.tanh(float64(v))


@cuda.jit(device=True)
def _leaky_relu(v, a):
    if v > 0.0:
        return float64(v)
    return float64(v) * a


@cuda.jit(device=True)
def _elu(v, a):
    if v > 0.0:
        return float64(v)
    return a * math.expm1(float64(v))


@cuda.jit(device=True)
def _silu(v, a):
    d = float64(v)
    return d / (1.0 + math.exp(-d))


@cuda.jit(device=True)
def _hardswish(v, a):
    d = float64(v)
    r = d + 3.0
    if r < 0.0:
        r = 0.0
    elif r > 6.0:
        r = 6.0
    return d * r / 6.0


@cuda.jit(device=True)
def _copy(v, a):
    return v


relu = _unary(_relu)
relu6 = _unary(_relu6)
sigmoid = _unary(_sigmoid)
tanh = _unary(_tanh)
leaky_relu = _unary(_leaky_relu)
elu = _unary(_elu)
silu = _unary(_silu)
hardswish = _unary(_hardswish)
copy = _unary(_copy)


@cuda.jit(fastmath=False)
def dropout_apply(x, mask, y, n, keep):
    """y = x / keep where mask, else 0 (the mask drawn on the host, as the reference draws it)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        if mask[i]:
            y[i] = float64(x[i]) / keep
        else:
            y[i] = float32(0.0)


@cuda.jit(fastmath=False)
def add2(a, b, y, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = float64(a[i]) + float64(b[i])


@cuda.jit(fastmath=False)
def mul_bcast(x, z, y, n, dims, zstrides, rank):
    """y = x · z, z broadcast along the dimensions where zstrides is 0 (dims: x's shape)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        rest = i
        zi = 0
        for d in range(rank - 1, -1, -1):
            size = dims[d]
            coord = rest % size
            rest //= size
            zi += coord * zstrides[d]
        y[i] = float64(x[i]) * float64(z[zi])


# --- tensor plumbing -------------------------------------------------------------------------


@cuda.jit(fastmath=False)
def copy_columns(x, y, rows, cx, cy, offset):
    """y[r, offset + c] = x[r, c] for x: rows × cx and y: rows × cy (concat)."""
    n = rows * cx
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = i // cx
        c = i - r * cx
        y[r * cy + offset + c] = x[i]


@cuda.jit(fastmath=False)
def crop(x, y, planes, h, w, ch, cw, top, left):
    n = planes * ch * cw
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        j = i % cw
        t = i // cw
        r = t % ch
        pl = t // ch
        y[i] = x[(pl * h + top + r) * w + left + j]


# --- softmax, maxout -------------------------------------------------------------------------


@cuda.jit(fastmath=False)
def softmax(x, y, outer, length, inner):
    """Softmax along the middle axis of x: outer × length × inner; one thread per (outer, inner)."""
    n = outer * inner
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        o = t // inner
        i = t - o * inner
        base = o * length * inner + i
        m = x[base]
        for l in range(1, length):
            v = x[base + l * inner]
            if v > m or v != v:
                m = v
        s = 0.0
        for l in range(length):
            s += math.exp(float64(x[base + l * inner]) - m)
        for l in range(length):
            y[base + l * inner] = math.exp(float64(x[base + l * inner]) - m) / s


@cuda.jit(fastmath=False)
def maxout(x, y, batch, c_out, pieces, inner):
    """y[n, j, s] = max_t x[n, j·pieces + t, s]; NaN wins, as numpy's max."""
    n = batch * c_out * inner
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s = i % inner
        t = i // inner
        j = t % c_out
        b = t // c_out
        base = ((b * c_out + j) * pieces) * inner + s
        m = x[base]
        for p in range(1, pieces):
            v = x[base + p * inner]
            if v > m or v != v:
                m = v
        y[i] = m


# --- pooling ---------------------------------------------------------------------------------


@cuda.jit(fastmath=False)
def maxpool(x, y, planes, h, w, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw):
    """Max over each window's in-bounds taps (padding and the ceil-mode overhang never win)."""
    n = planes * ho * wo
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        ow = i % wo
        t = i // wo
        oh = t % ho
        pl = t // ho
        m = -math.inf
        for a in range(kh):
            ih = oh * sh - ph + a * dh
            if ih < 0 or ih >= h:
                continue
            for b in range(kw):
                iw = ow * sw - pw + b * dw
                if iw < 0 or iw >= w:
                    continue
                v = x[(pl * h + ih) * w + iw]
                if v > m or v != v:
                    m = v
        y[i] = m


@cuda.jit(fastmath=False)
def avgpool(x, y, planes, h, w, ho, wo, kh, kw, sh, sw, ph, pw, count_include_pad):
    """PyTorch's avg_pool2d divisor: the window clipped to input + padding when padding counts,
    to the input alone otherwise; the sum always over the input."""
    n = planes * ho * wo
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        ow = i % wo
        t = i // wo
        oh = t % ho
        pl = t // ho
        hs = oh * sh - ph
        he = min(hs + kh, h + ph)
        ws = ow * sw - pw
        we = min(ws + kw, w + pw)
        pool = (he - hs) * (we - ws)
        hs = max(hs, 0)
        he = min(he, h)
        ws = max(ws, 0)
        we = min(we, w)
        acc = 0.0
        for ih in range(hs, he):
            for iw in range(ws, we):
                acc += x[(pl * h + ih) * w + iw]
        div = pool if count_include_pad else (he - hs) * (we - ws)
        y[i] = acc / div


@cuda.jit(fastmath=False)
def adaptive_avgpool(x, y, planes, h, w, ho, wo):
    """PyTorch's adaptive bins: output o covers [floor(o·H/out), ceil((o+1)·H/out))."""
    n = planes * ho * wo
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        ow = i % wo
        t = i // wo
        oh = t % ho
        pl = t // ho
        hs = (oh * h) // ho
        he = ((oh + 1) * h + ho - 1) // ho
        ws = (ow * w) // wo
        we = ((ow + 1) * w + wo - 1) // wo
        acc = 0.0
        for ih in range(hs, he):
            for iw in range(ws, we):
                acc += x[(pl * h + ih) * w + iw]
        y[i] = acc / ((he - hs) * (we - ws))


@cuda.jit(device=True)
def block_sum(part, tid):
    """Sum part[0:RED] (one value per thread of the block) by a shared-memory tree; every thread of
    the block must call it, and gets the total."""
    cuda.syncthreads()
    step = RED // 2
    while step > 0:
        if tid < step:
            part[tid] += part[tid + step]
        cuda.syncthreads()
        step //= 2
    return part[0]


@cuda.jit(fastmath=False)
def row_mean(x, y, rows, length):
    """y[r] = mean of x[r, :] (global average pooling); one block per row, a shared-memory tree sum."""
    part = cuda.shared.array(RED, float64)
    tid = cuda.threadIdx.x
    for r in range(cuda.blockIdx.x, rows, cuda.gridDim.x):
        acc = 0.0
        for s in range(tid, length, RED):
            acc += x[r * length + s]
        part[tid] = acc
        total = block_sum(part, tid)
        if tid == 0:
            y[r] = total / length
        cuda.syncthreads()


# --- normalization ---------------------------------------------------------------------------


@cuda.jit(fastmath=False)
def scale_shift(x, y, n, channels, inner, scale, shift):
    """y = x · scale[c] + shift[c] (batch norm; scale and shift float64, folded from the statistics)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        c = (i // inner) % channels
        y[i] = float64(x[i]) * scale[c] + shift[c]


@cuda.jit(fastmath=False)
def bn_train_stats(x, batch, channels, inner, weight, bias, eps, momentum, running_mean, running_var,
                   scale, shift):
    """One block per channel: the batch mean and biased variance (two passes, float64, tree sums in
    shared memory), the folded scale/shift for `scale_shift`, and the running statistics updated in
    place as (1 − momentum)·running + momentum·batch (unbiased variance there), as PyTorch."""
    part = cuda.shared.array(RED, float64)
    tid = cuda.threadIdx.x
    count = batch * inner
    for c in range(cuda.blockIdx.x, channels, cuda.gridDim.x):
        acc = 0.0
        for e in range(tid, count, RED):
            b = e // inner
            s = e - b * inner
            acc += x[(b * channels + c) * inner + s]
        part[tid] = acc
        mean = block_sum(part, tid) / count
        cuda.syncthreads()
        acc = 0.0
        for e in range(tid, count, RED):
            b = e // inner
            s = e - b * inner
            d = x[(b * channels + c) * inner + s] - mean
            acc += d * d
        part[tid] = acc
        total = block_sum(part, tid)
        if tid == 0:
            var = total / count
            inv = 1.0 / math.sqrt(var + eps)
            a = weight[c] * inv
            scale[c] = a
            shift[c] = bias[c] - mean * a
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var * count / (count - 1)
        cuda.syncthreads()


@cuda.jit(fastmath=False)
def lrn(x, y, batch, channels, inner, size, alpha, beta, k):
    """torch.nn.LocalResponseNorm: x / (k + alpha/size · Σ x²)^beta over channels
    [c − size//2, c + (size−1)//2], clipped to the channels."""
    n = batch * channels * inner
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s = i % inner
        t = i // inner
        c = t % channels
        b = t // channels
        lo = max(0, c - size // 2)
        hi = min(channels, c + (size - 1) // 2 + 1)
        acc = 0.0
        for cc in range(lo, hi):
            v = float64(x[(b * channels + cc) * inner + s])
            acc += v * v
        y[i] = float64(x[i]) / (k + alpha / size * acc) ** beta
