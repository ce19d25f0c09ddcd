"""Winograd F(2×2, 3×3) for the input gradient of a 3×3, stride-1, undilated, ungrouped convolution.

That gradient is itself a 3×3 stride-1 convolution (of dy, by the weights flipped and transposed:
`backward_conv`), with 2.25× fewer multiplications by Winograd than by a GEMM over columns. The
16 products run as one stack of OpenBLAS sgemm blocks (`gemm`: the weights change every step, so
nothing is packed ahead). The transforms work on whole planes: x padded into 4 phases (even or
odd rows and columns), where each value of every tile's 4×4 patch is one run at a fixed offset,
so that each transform is a few long vector operations per plane instead of short ones per row
of tiles; the price is one unused tile per row of tiles, carried through the products (1/8 more
on 16-wide outputs, 1/4 on 8-wide: there the GEMM and scatter path of `backward_conv` wins).

Measured, one thread, batch 32 (ms): ResNet-18 at 64², 64 → 64 on 16²: 7.8 (GEMM and scatter 8.5,
PyTorch 7.1); batch 8, 64 → 64 on 32²: 6.3 (8.6, PyTorch 10.7). Results differ from the direct
convolution by float32 rounding only (~1e-6 relative).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import depthwise, gemm, winograd
from ._act import FMA
from ._util import output, scratch, thread_count


@njit(cache=True, fastmath=FMA, parallel=True)
def _input_transform(x, pt, pl, th, tw, threads, v):
    """v[k, c, n·L + ty·(tw + 1) + tx] = (Bᵀ d B)[k] for tile (ty, tx) of image n, channel c (L =
    th·(tw + 1): a row of tiles has one more, unused, tile), d the 4×4 patch of x from (2ty − pt,
    2tx − pl), zero outside x. Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]].

    Per plane: x zero-padded into 4 phases (even or odd rows × even or odd columns, rows tw + 1
    long), so that value (r, s) of every tile's patch is one run of a phase, at a fixed offset: each
    column b of the transform over all the plane's tiles is then a few long vector operations
    (the unused tile per row is what makes the offsets fixed; its products are dropped).
    Parallel over planes."""
    n_, c_, h_, w_ = x.shape
    w1 = tw + 1
    hp, wp = 2 * th + 2, 2 * w1
    length = th * w1
    size = (th + 1) * w1 + 1  # a phase (one spare value: the last tile's neighbour)
    lo, hi = max(0, -pl), min(w_, wp - pl)  # x's columns inside a padded row
    planes = n_ * c_
    for t in prange(threads):
        phases = np.zeros(4 * size, np.float32)  # [row parity · 2 + column parity]; (the padding stays 0)
        padded = np.zeros(wp, np.float32)
        rows = np.empty((4, length), np.float32)  # column b of the transform d B, for each patch row
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            xc = x[n, c]
            for r in range(hp):
                ih = r - pt
                if ih < 0 or ih >= h_:
                    continue  # (zero from the start: no plane writes these rows)
                src = xc[ih]
                for q in range(hi - lo):
                    padded[lo + pl + q] = src[lo + q]
                row0 = (r % 2) * 2 * size + (r // 2) * w1
                depthwise._deinterleave(padded, phases, row0, row0 + size, w1, w1)
            for b in range(4):
                # the patch's columns this output column reads: (0, 2), (1, 2), (1, 2), (1, 3)
                s_a = 0 if b == 0 else 1
                s_b = 3 if b == 3 else 2
                for r in range(4):
                    a0 = ((r % 2) * 2 + s_a % 2) * size + (r // 2) * w1 + s_a // 2
                    b0 = ((r % 2) * 2 + s_b % 2) * size + (r // 2) * w1 + s_b // 2
                    da = phases[a0:a0 + length]
                    db = phases[b0:b0 + length]
                    out = rows[r]
                    if b == 0:
                        for k in range(length):
                            out[k] = da[k] - db[k]
                    elif b == 1:
                        for k in range(length):
                            out[k] = da[k] + db[k]
                    elif b == 2:
                        for k in range(length):
                            out[k] = db[k] - da[k]
                    else:
                        for k in range(length):
                            out[k] = da[k] - db[k]
                base = n * length
                v0 = v[b, c, base:base + length]
                v1 = v[4 + b, c, base:base + length]
                v2 = v[8 + b, c, base:base + length]
                v3 = v[12 + b, c, base:base + length]
                r0, r1, r2, r3 = rows[0], rows[1], rows[2], rows[3]
                for k in range(length):
                    v0[k] = r0[k] - r2[k]
                    v1[k] = r1[k] + r2[k]
                    v2[k] = r2[k] - r1[k]
                    v3[k] = r1[k] - r3[k]


@njit(cache=True, fastmath=FMA, parallel=True)
def _output_transform(m, th, tw, threads, y):
    """y's 2×2 block of tile (ty, tx) = Aᵀ M A, M the tile's 16 values m[:, c, n·L + ty·(tw + 1) +
    tx] as 4×4 (the layout of `_input_transform`), Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], for y:
    N×C×H×W (tiles past H or W cut). Per plane: the transform over all its tiles as long vector
    operations, then each output row interleaved from its two columns' runs. Parallel over planes."""
    n_, c_, h_, w_ = y.shape
    w1 = tw + 1
    length = th * w1
    planes = n_ * c_
    for t in prange(threads):
        s = np.empty((8, length), np.float32)  # Aᵀ M: [a·4 + b]
        out = np.empty((4, length), np.float32)  # [a·2 + e]: output row 2ty + a, column 2tx + e
        for idx in range(planes * t // threads, planes * (t + 1) // threads):
            n = idx // c_
            c = idx - n * c_
            base = n * length
            for b in range(4):
                m0, m1 = m[b, c, base:base + length], m[4 + b, c, base:base + length]
                m2, m3 = m[8 + b, c, base:base + length], m[12 + b, c, base:base + length]
                a0, a1 = s[b], s[4 + b]
                for k in range(length):
                    a0[k] = m0[k] + m1[k] + m2[k]
                    a1[k] = m1[k] - m2[k] - m3[k]
            for a in range(2):
                s0, s1, s2, s3 = s[4 * a], s[4 * a + 1], s[4 * a + 2], s[4 * a + 3]
                e0, e1 = out[2 * a], out[2 * a + 1]
                for k in range(length):
                    e0[k] = s0[k] + s1[k] + s2[k]
                    e1[k] = s1[k] - s2[k] - s3[k]
            yc = y[n, c]
            for oh in range(h_):
                ty, a = oh // 2, oh % 2
                e0 = out[2 * a, ty * w1:ty * w1 + tw]
                e1 = out[2 * a + 1, ty * w1:ty * w1 + tw]
                dst = yc[oh]
                for q in range(w_ // 2):
                    dst[2 * q] = e0[q]
                    dst[2 * q + 1] = e1[q]
                if w_ % 2:
                    dst[w_ - 1] = e0[w_ // 2]


# Where this path runs (backward_conv decides): channels enough for the GEMMs to dominate, and
# outputs at least this wide. A row of tiles carries one unused tile (see _input_transform): on
# 16-wide outputs 1/8 more products, on 8-wide 1/4 (there, 1 thread, ResNet-18's 128 → 128 at
# batch 32: 1.15× the time of the GEMM and scatter path; 16-wide, 64 → 64: 0.9×).
MIN_CHANNELS = 16
MIN_WIDTH = 16


# The transformed input and product of a chunk of images take at most this much (more images are
# run in chunks); an image needing more goes elsewhere.
CHUNK_BYTES = 32 << 20


def _image_bytes(c: int, o: int, h: int, w: int) -> int:
    return 4 * 16 * (c + o) * ((h + 1) // 2) * ((w + 1) // 2 + 1)


def applies(c: int, o: int, h: int, w: int) -> bool:
    """Whether the input gradient of a c → o layer (3×3, stride 1) with h×w outputs runs here: its
    input's channels are o, its output's c."""
    return min(c, o) >= MIN_CHANNELS and w >= MIN_WIDTH and _image_bytes(c, o, h, w) <= CHUNK_BYTES


def conv3x3(x, w, pads, out=None):
    """The stride-1 convolution of x (N×C×H×W) by w (O×C×3×3), zero padding (top, left, bottom,
    right), no bias: N×O×ho×wo, by Winograd F(2×2, 3×3)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    pt, pl, pb, pr = pads
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    per_image = th * (tw + 1)  # tiles (one unused a row: see _input_transform)
    step = max(1, min(n, CHUNK_BYTES // _image_bytes(c, o, ho, wo)))
    threads = max(1, min(thread_count(), step * max(c, o)))
    u = winograd.transform_weights(w)  # 16×O×C
    v = scratch("grad_wino_v", 16 * c * step * per_image)
    m = scratch("grad_wino_m", 16 * o * step * per_image)
    y = output(out, (n, o, ho, wo))
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        tiles = (n1 - n0) * per_image
        vc = v[:16 * c * tiles].reshape(16, c, tiles)
        mc = m[:16 * o * tiles].reshape(16, o, tiles)
        _input_transform(x[n0:n1], pt, pl, th, tw, threads, vc)
        gemm.matmul(u, vc, mc)  # (OpenBLAS's sgemm in blocks: 0.9× the packed kernel's time here, and no packing)
        _output_transform(mc, th, tw, threads, y[n0:n1])
    return y
