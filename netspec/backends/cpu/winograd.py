"""Winograd F(2×2, 3×3) for 3×3, stride-1, undilated, ungrouped convolutions: 2.25× fewer
multiplications than im2col + GEMM.

Each 2×2 output tile comes from a 4×4 input patch d and the 3×3 filter g:
    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
The element-wise product over all channels is 16 independent GEMMs — U[k] (O×C) · V[k] (C×T), for
k = the 16 positions of the 4×4 transformed tile and T = the tiles of all images — run as one batch
on the 16 U[k], packed once per layer (`packed`). The transforms are Numba, vectorised along a row of tiles.

Results differ from the direct convolution only by float32 rounding (the transforms add and
subtract a few values): about 1e−6 relative, well inside the kernels' 1e−4 agreement.
"""
from __future__ import annotations


import numpy as np
from numba import njit, prange

from . import gemm, packed
from .depthwise import _deinterleave
from ._act import FMA, NONE, act_row
from ._util import output


def transform_weights(w: np.ndarray) -> np.ndarray:
    """U = G g Gᵀ for every (output, input) filter: O×C×3×3 → 16×O×C (float32, contiguous)."""
    g = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
    # U[4a + b] = Σ_ij G[a, i]·G[b, j]·g[i, j]: one 16×9 matrix (G ⊗ G) times every flattened filter,
    # by BLAS (5× faster than the einsum it replaces: ResNet-50's first run −0.1 s), in float64 (then
    # rounded once), a chunk of filters at a time into U: whole, the float64 copies of a 1024 × 1024
    # layer took 3× the time, in page faults (YOLOv1's first run: 0.9 s)
    o, c = w.shape[:2]
    filters, gg = w.reshape(o * c, 9), np.kron(g, g)
    u = np.empty((16, o * c), np.float32)
    for start in range(0, o * c, _TRANSFORM_CHUNK):
        part = filters[start:start + _TRANSFORM_CHUNK]
        u[:, start:start + len(part)] = gemm.single_threaded(gg, part.T.astype(np.float64))
    return u.reshape(16, o, c)


_TRANSFORM_CHUNK = 1 << 15  # filters a piece (float64 copies of 2.4 MB, reused)


@njit(cache=True, fastmath=FMA, parallel=True)
def _input_transform(x, pt, pl, th, tw, v):
    """V[k, c, t] = (Bᵀ d B)[k] for the 4×4 patch d of tile t (image n, tile row ty, column tx, t =
    (n·th + ty)·tw + tx) of channel c; the patch of tile (ty, tx) starts at input (2ty − pt, 2tx − pl),
    outside the input it is zero. Parallel over (image, channel) planes.

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]. d·B is worked out once per
    padded input row (a row is in two tile rows' patches), from the row split into its even and
    odd columns; then Bᵀ·(d·B) for a whole plane's tiles at once, one long loop per output. Every
    loop runs over contiguous arrays, and the long ones vectorise fully: with the columns read two
    apart, and loops a tile row long (LLVM's vector loop wants 32 iterations or more), this ran
    scalar, and ResNet-18's 56² layer spent 0.54 ms here, 1.2× its 16 products."""
    n_, c_, h_, w_ = x.shape
    wp = 2 * tw + 2
    for idx in prange(n_ * c_):
        n = idx // c_
        c = idx - n * c_
        xc = x[n, c]
        row = np.zeros(wp, np.float32)  # one padded input row
        split = np.empty(wp, np.float32)  # its even columns, then its odd ones (tw + 1 each)
        # d·B of every padded row, (d·B)[j] for each tile column, the even rows and the odd ones apart
        db = np.empty((2, 4, th + 1, tw), np.float32)
        lo, hi = max(0, -pl), min(w_, wp - pl)  # input columns inside the padded row
        for r in range(2 * th + 2):
            ih = r - pt
            u = db[r % 2, :, r // 2]
            if ih < 0 or ih >= h_ or hi <= lo:
                u[:] = 0.0
                continue
            d = row[lo + pl:hi + pl]
            s = xc[ih, lo:hi]
            for q in range(hi - lo):
                d[q] = s[q]
            _deinterleave(row, split, 0, tw + 1, tw + 1, tw + 1)
            # columns 2tx, 2tx + 1, 2tx + 2, 2tx + 3 of every tile
            _by_bt(split[0:tw], split[tw + 1:2 * tw + 1], split[1:tw + 1], split[tw + 2:2 * tw + 2],
                   u[0], u[1], u[2], u[3])
        tiles = th * tw
        base = n * tiles
        for j in range(4):  # rows: Bᵀ·(d·B), patch rows 2ty .. 2ty + 3 of every tile row at once
            even, odd = db[0, j].reshape(-1), db[1, j].reshape(-1)
            _by_bt(even[0:tiles], odd[0:tiles], even[tw:tw + tiles], odd[tw:tw + tiles], v[j, c, base:base + tiles],
                   v[4 + j, c, base:base + tiles], v[8 + j, c, base:base + tiles], v[12 + j, c, base:base + tiles])


@njit(cache=True, fastmath=FMA, inline="always")
def _by_bt(a0, a1, a2, a3, u0, u1, u2, u3):
    """(u0, u1, u2, u3) = Bᵀ·(a0, a1, a2, a3), element by element: both of the transform's passes."""
    for k in range(u0.shape[0]):
        u0[k] = a0[k] - a2[k]
        u1[k] = a1[k] + a2[k]
        u2[k] = a2[k] - a1[k]
        u3[k] = a1[k] - a3[k]


@njit(cache=True, fastmath=FMA, parallel=True)
def _output_transform(m, th, tw, bias, has_bias, act, alpha, y):
    """y[n, o, 2ty + a, 2tx + b] = (Aᵀ M A)[a, b] (+ bias, activation) from M: 16×O×T, dropping the
    tile rows and columns past an odd output edge. Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]. Both
    passes over a whole plane's tiles at once (long loops, which vectorise), then each output row
    made from its tiles' two columns."""
    n_, o_, ho, wo = y.shape
    tiles = th * tw
    for idx in prange(n_ * o_):
        n = idx // o_
        o = idx - n * o_
        base = n * tiles
        s = np.empty((2, 4, tiles), np.float32)  # Aᵀ·M: for output row a of each tile, its 4 columns
        for j in range(4):
            _by_at(m[j, o, base:base + tiles], m[4 + j, o, base:base + tiles], m[8 + j, o, base:base + tiles],
                   m[12 + j, o, base:base + tiles], s[0, j], s[1, j])
        cols = np.empty((2, 2, tiles), np.float32)  # (Aᵀ·M)·A: output row a, column b of each tile
        for a in range(2):
            _by_at(s[a, 0], s[a, 1], s[a, 2], s[a, 3], cols[a, 0], cols[a, 1])
        row = np.empty(2 * tw, np.float32)
        yo = y[n, o]
        for oh in range(ho):
            ty, a = oh // 2, oh % 2
            _merge_even_odd(cols[a, 0, ty * tw:(ty + 1) * tw], cols[a, 1, ty * tw:(ty + 1) * tw], row)
            if has_bias or act != NONE:
                act_row(row[:wo], yo[oh], bias[o], has_bias, act, alpha)
            else:
                dst = yo[oh]
                for q in range(wo):
                    dst[q] = row[q]


@njit(cache=True, fastmath=FMA, inline="always")
def _by_at(m0, m1, m2, m3, s0, s1):
    """(s0, s1) = Aᵀ·(m0, m1, m2, m3), element by element: both of the output transform's passes."""
    for k in range(s0.shape[0]):
        s0[k] = m0[k] + m1[k] + m2[k]
        s1[k] = m1[k] - m2[k] - m3[k]


@njit(cache=True, fastmath=FMA, inline="always")
def _merge_even_odd(even, odd, out):
    """out[2k] = even[k], out[2k + 1] = odd[k]: one pass writing out in order (unsigned indices, as
    depthwise's `_deinterleave`)."""
    for k in range(even.shape[0]):
        ku = np.uint64(k)
        out[np.uint64(2) * ku] = even[ku]
        out[np.uint64(2) * ku + np.uint64(1)] = odd[ku]


def applies(attrs, c: int, o: int, tiles: int) -> bool:
    """Whether a conv2d goes through Winograd: 3×3, stride 1, no dilation, one group, channels
    enough for the GEMMs to dominate, and tiles enough for them to run well (measured on 2 cores
    at batch 1: 1.3–1.5× faster than im2col on ResNet's 56², 28² and 14² layers — 14² is 49
    tiles — and 0.85× on 7², where 16 tiles of 4 outputs cover 49)."""
    return (tuple(attrs.kernel) == (3, 3) and tuple(attrs.stride) == (1, 1) and tuple(attrs.dilation) == (1, 1)
            and attrs.groups == 1 and min(c, o) >= MIN_CHANNELS and tiles >= MIN_TILES)


MIN_CHANNELS = 16
MIN_TILES = 32


def fills_tiles(ho: int, wo: int) -> bool:
    """Whether the 2×2 output tiles covering an ho×wo map are at least half used: Winograd saves 2.25×
    the multiplications of a full tile, so under half it does more work than a GEMM. A 1×1 map (ResNet's
    layer 4 at 32×32 inputs) uses a quarter of its tile, and costs 3.5× im2col's multiplications plus
    the weights' transform (made at every training step): 30 ms a layer at batch 64, against 5."""
    return 2 * ho * wo >= 4 * ((ho + 1) // 2) * ((wo + 1) // 2)


def tiles(n: int, ho: int, wo: int) -> int:
    return n * ((ho + 1) // 2) * ((wo + 1) // 2)


def _transformed(w: np.ndarray, packs: dict) -> packed.Packed:
    """U for this weight array, packed for its 16 products (`packed`), computed once per layer:
    `packs` is the layer's packed weights by use (conv._Layer's, shared by its plans). Never keyed
    by the array's identity: training updates a weight array in place, and its layer is made anew
    each step, so the transform is too."""
    if "winograd" not in packs:
        packs["winograd"] = packed.Packed(transform_weights(w), np.zeros(w.shape[0], np.float32))
    return packs["winograd"]


def conv3x3(x, w, bias, has_bias, pads, act, alpha, buffer):
    """The convolution of x (N×C×H×W) with w (O×C×3×3), stride 1, zero padding `pads` (top, left,
    bottom, right), with bias and activation: N×O×ho×wo. `buffer(name, size)` hands out scratch."""
    return plan(x.shape, w, bias, has_bias, pads, act, alpha, buffer)(x, None)


def plan(shape, w, bias, has_bias, pads, act, alpha, buffer, threads=None, packs=None):
    """`conv3x3` for inputs of one shape, its sizes and GEMM plan worked out once: a function
    (x, out) → y, y written into `out` where one is given. `packs`: the layer's packed weights (see
    `_transformed`; a new dict when not given)."""
    n, c, h, wd = shape
    o = w.shape[0]
    pt, pl, pb, pr = pads
    ho, wo = h + pt + pb - 2, wd + pl + pr - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2
    t = n * th * tw
    product = _transformed(w, {} if packs is None else packs).plan(16, t, residual=False, act=NONE, alpha=0.0, threads=threads)
    alpha = float(alpha)

    def run(x, out):
        v = buffer("wino_v", 16 * c * t).reshape(16, c, t)
        m = buffer("wino_m", 16 * o * t).reshape(16, o, t)
        _input_transform(x, pt, pl, th, tw, v)
        product(v, m)
        y = output(out, (n, o, ho, wo))
        _output_transform(m, th, tw, bias, has_bias, act, alpha, y)
        return y
    return run
