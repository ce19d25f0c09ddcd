"""GEMMs on Numba's thread pool: one pool runs every CPU kernel, matrix products included.

numpy's matmul would run each GEMM on OpenBLAS's own threads, and the kernels between the GEMMs on
Numba's. Two pools on the same cores fight: whichever pool's workers are still spinning or asleep
when the other needs the cores costs the next kernel a wake-up or a scheduler slice (on 2 cores,
measured: a depthwise kernel right after a GEMM ran at half speed, and netspec could not let
Numba's workers spin between kernels without starving the GEMMs). So the GEMMs here are cut into
blocks, one task per thread, and each block is one single-threaded `cblas_sgemm` call (`cblas_sgemv`
for a single row or column) made from inside a Numba `prange`, with its epilogue (bias, residual,
activation) run on the block while it is in cache. OpenBLAS's own pool is held at one thread for
the call.

The sgemm is the one numpy already loaded (numpy's wheels bundle OpenBLAS, 64-bit integer
interface, as `scipy_cblas_sgemm64_`). It is handed to Numba by name (an LLVM symbol), so kernels
calling it stay in Numba's on-disk cache. A numpy without that library (one built on another BLAS)
gets numpy's matmul and a separate epilogue instead: the same results, the old speed.
"""
from __future__ import annotations

import ctypes
import glob
import math
import os

import numpy as np
from llvmlite import binding
from numba import get_num_threads, njit, prange, types

from ._act import FMA, NONE, act_row

_SGEMM, _SGEMV = "netspec_cblas_sgemm", "netspec_cblas_sgemv"  # the names Numba's code calls; bound below
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_NEEDED = ("scipy_cblas_sgemm64_", "scipy_cblas_sgemv64_", "scipy_openblas_get_num_threads64_",
           "scipy_openblas_set_num_threads64_")


def _find_openblas() -> ctypes.CDLL | None:
    """numpy's bundled OpenBLAS (already loaded by numpy), or None."""
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*"))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if all(hasattr(lib, name) for name in _NEEDED):
            return lib
    return None


_LIB = _find_openblas()
AVAILABLE = _LIB is not None
if AVAILABLE:
    binding.add_symbol(_SGEMM, ctypes.cast(_LIB.scipy_cblas_sgemm64_, ctypes.c_void_p).value)
    binding.add_symbol(_SGEMV, ctypes.cast(_LIB.scipy_cblas_sgemv64_, ctypes.c_void_p).value)
    _get_blas_threads = _LIB.scipy_openblas_get_num_threads64_
    _set_blas_threads = _LIB.scipy_openblas_set_num_threads64_
    _get_blas_threads.restype = ctypes.c_int
    _set_blas_threads.argtypes = [ctypes.c_int]

# void cblas_sgemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) and
# void cblas_sgemv(order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy), 64-bit integers; the
# pointers are passed as 64-bit integers (the same registers in the C calling convention)
_i32, _i64, _f32 = types.int32, types.int64, types.float32
_sgemm = types.ExternalFunction(_SGEMM, types.void(_i32, _i32, _i32, _i64, _i64, _i64, _f32, _i64, _i64, _i64,
                                                   _i64, _f32, _i64, _i64))
_sgemv = types.ExternalFunction(_SGEMV, types.void(_i32, _i32, _i64, _i64, _f32, _i64, _i64, _i64, _i64, _f32,
                                                   _i64, _i64))


@njit(cache=True, fastmath=FMA)
def _epilogue(c, i, r0, r1, q0, q1, bias, has_bias, res, has_res, act, alpha):
    """In place over rows r0 .. r1 − 1, columns q0 .. q1 − 1 of product i: + bias (per row), then
    + residual, then the activation: the order, and so the float32 results, of the unfused ops."""
    bi = i % bias.shape[0]
    if q1 - q0 == 1:  # one column (a matrix-vector product, e.g. squeeze-excitation): down the
        # column in three passes, not row by row (one-value rows cost ~20 ns each); same sums
        col = c[i, r0:r1, q0]
        if has_bias:
            b = bias[bi, r0:r1]
            for r in range(col.shape[0]):
                col[r] = col[r] + b[r]
        if has_res:
            rc = res[i, r0:r1, q0]
            for r in range(col.shape[0]):
                col[r] = col[r] + rc[r]
        if act != NONE:
            act_row(col, col, np.float32(0.0), False, act, alpha)
        return
    for r in range(r0, r1):
        row = c[i, r, q0:q1]
        if has_res:
            rr = res[i, r, q0:q1]
            if has_bias:
                bv = bias[bi, r]
                for q in range(row.shape[0]):
                    row[q] = (row[q] + bv) + rr[q]
            else:
                for q in range(row.shape[0]):
                    row[q] = row[q] + rr[q]
            if act != NONE:
                act_row(row, row, np.float32(0.0), False, act, alpha)
        else:
            act_row(row, row, bias[bi, r], has_bias, act, alpha)


@njit(inline="always")
def _address(x, i, r, q):
    """The address of x[i, r, q] (any strides), as BLAS takes it."""
    return x.ctypes.data + (i * x.strides[0] + r * x.strides[1] + q * x.strides[2])


@njit(cache=True, fastmath=FMA)
def _run_tasks(t0, t1, a, b, c, trans_a, trans_b, split_m, parts, bias, has_bias, res, has_res, act, alpha):
    """Tasks t0 .. t1 − 1 of the GEMM: task t is block t % parts of product t // parts, a block of
    rows of C (split_m) or of columns. Then the block's epilogue, row by row (see `matmul`)."""
    m, n = c.shape[1], c.shape[2]
    k = a.shape[1] if trans_a else a.shape[2]
    isz = 4
    for t in range(t0, t1):
        i = t // parts
        part = t - i * parts
        ai = i % a.shape[0]
        if split_m:  # rows in multiples of 8 (the sgemm kernel's row tile), columns all
            step = ((m + parts - 1) // parts + 7) // 8 * 8
            r0, r1, q0, q1 = part * step, min(m, (part + 1) * step), 0, n
        else:  # columns in multiples of 16 (two vectors)
            step = ((n + parts - 1) // parts + 15) // 16 * 16
            r0, r1, q0, q1 = 0, m, part * step, min(n, (part + 1) * step)
        if r1 <= r0 or q1 <= q0:
            continue
        # the block's corners: row r0 of op(A) (a column of a stored K×M), column q0 of op(B)
        pa = _address(a, ai, 0, r0) if trans_a else _address(a, ai, r0, 0)
        pb = _address(b, i, q0, 0) if trans_b else _address(b, i, 0, q0)
        pc = _address(c, i, r0, q0)
        ta = _TRANS if trans_a else _NO_TRANS
        tb = _TRANS if trans_b else _NO_TRANS
        lda, ldb, ldc = a.strides[1] // isz, b.strides[1] // isz, c.strides[1] // isz
        one, zero = np.float32(1.0), np.float32(0.0)
        # one row or one column of C (a linear layer at batch 1, a 1×1 map): a matrix-vector
        # product, which streams the matrix once; sgemm would first copy it into its packed form
        if r1 - r0 == 1:  # c row = a row · op(B)
            inc_a = lda if trans_a else 1
            if trans_b:
                _sgemv(_ROW_MAJOR, _NO_TRANS, q1 - q0, k, one, pb, ldb, pa, inc_a, zero, pc, 1)
            else:
                _sgemv(_ROW_MAJOR, _TRANS, k, q1 - q0, one, pb, ldb, pa, inc_a, zero, pc, 1)
        elif q1 - q0 == 1:  # c column = op(A) · b column
            inc_b = 1 if trans_b else ldb
            if trans_a:
                _sgemv(_ROW_MAJOR, _TRANS, k, r1 - r0, one, pa, lda, pb, inc_b, zero, pc, ldc)
            else:
                _sgemv(_ROW_MAJOR, _NO_TRANS, r1 - r0, k, one, pa, lda, pb, inc_b, zero, pc, ldc)
        else:
            _sgemm(_ROW_MAJOR, ta, tb, r1 - r0, q1 - q0, k, one, pa, lda, pb, ldb, zero, pc, ldc)
        if has_bias or has_res or act != NONE:
            _epilogue(c, i, r0, r1, q0, q1, bias, has_bias, res, has_res, act, alpha)


@njit(cache=True, fastmath=FMA, parallel=True)
def _run_parallel(threads, tasks, a, b, c, trans_a, trans_b, split_m, parts, bias, has_bias, res, has_res, act,
                  alpha):
    for w in prange(threads):  # one contiguous run of tasks per thread
        _run_tasks(tasks * w // threads, tasks * (w + 1) // threads, a, b, c, trans_a, trans_b, split_m, parts, bias,
                   has_bias, res, has_res, act, alpha)


# Products smaller than this (multiply-adds) run in the calling thread: waking the pool costs more.
_PARALLEL_MIN = 1 << 17

_NO_BIAS = np.zeros((1, 1), np.float32)
_NO_RES = np.zeros((1, 1, 1), np.float32)


def matmul(a, b, c, *, trans_a=False, trans_b=False, bias=None, residual=None, act=NONE, alpha=0.0):
    """c[i] = act(a[i % A] · b[i] + bias[i % Bb, :, None] + residual[i]) for stacks of matrices:
    a: A×M×K (A×K×M with trans_a: a's transpose), b: P×K×N (P×N×K with trans_b), c: P×M×N; bias: Bb×M or None,
    residual: like c or None; `act` an activation code of `_act` with its `alpha`. Matrices with rows
    of unit stride go to BLAS as they are (sub-blocks of larger arrays included); others are copied."""
    p, m, n = c.shape
    k = a.shape[1] if trans_a else a.shape[2]
    if AVAILABLE and min(p, m, n, k) > 0:
        a, b = _unit_rows(a), _unit_rows(b)
        if not _rows_ok(c):  # (an output BLAS cannot address: computed aside, then copied in)
            tmp = np.empty(c.shape, np.float32)
            matmul(a, b, tmp, trans_a=trans_a, trans_b=trans_b, bias=bias, residual=residual, act=act, alpha=alpha)
            c[...] = tmp
            return c
    return plan((p, m, n, k), trans_a=trans_a, trans_b=trans_b, bias=bias, residual=residual is not None, act=act,
                alpha=alpha)(a, b, c, residual)


def plan(shape, *, trans_a=False, trans_b=False, bias=None, residual=False, act=NONE, alpha=0.0, threads=None):
    """`matmul` with its decisions made once, for products of one shape (P, M, N, K) with this
    epilogue (`residual`: whether there is one): a function run(a, b, c, residual=None) → c, the
    same as matmul(a, b, c, ...) for operands whose rows BLAS can address (`_rows_ok`). For a
    kernel that runs the same product every inference (a layer's plan), this leaves the Python
    of a run at one call; `threads`: Numba's thread count (None: the current one)."""
    p, m, n, k = shape
    if not AVAILABLE or min(p, m, n, k) == 0:
        def fallback(a, b, c, res=None):
            _numpy_matmul(a, b, c, trans_a, trans_b, bias, res, act, alpha)
            return c
        return fallback
    if p * m * n * k < _PARALLEL_MIN:
        threads = 1
    elif threads is None:
        threads = get_num_threads()
    # per product, as many parts as make the total a multiple of the threads: tasks share out evenly
    parts = threads // math.gcd(p, threads)
    split_m = m * 2 >= n  # cut the longer side (skinny late layers: rows; wide early ones: columns)
    head = (trans_a, trans_b, split_m, parts, _NO_BIAS if bias is None else bias, bias is not None)
    tail = (residual, act, np.float32(alpha))
    tasks = p * parts

    def run(a, b, c, res=None):
        args = (a, b, c) + head + (_NO_RES if res is None else res,) + tail
        with _OneBlasThread():
            if threads == 1:
                _run_tasks(0, tasks, *args)
            else:
                _run_parallel(threads, tasks, *args)
        return c
    return run


class _OneBlasThread:
    """Within the block, OpenBLAS's own pool is held at one thread; on leaving it (an exception
    too), the count it had comes back. (Only where AVAILABLE: it calls numpy's OpenBLAS directly.)"""

    def __enter__(self):
        self.previous = _get_blas_threads()
        _set_blas_threads(1)

    def __exit__(self, *exc):
        _set_blas_threads(self.previous)


def single_threaded(a, b):
    """a @ b by numpy, on the calling thread: numpy's BLAS would otherwise start its own pool, whose
    waiting workers then slow the kernels on Numba's (measured: ResNet-50's first run 0.25 → 0.45 s,
    from Winograd's weight transforms)."""
    if not AVAILABLE:
        return a @ b
    with _OneBlasThread():
        return a @ b


def _rows_ok(x) -> bool:
    """Whether BLAS can address x (P×rows×cols float32) as rows of unit stride, one leading
    dimension apart (numpy lets a length-1 axis have any stride, 0 included; BLAS does not)."""
    return (x.dtype == np.float32 and x.strides[2] == 4 and x.strides[1] % 4 == 0
            and x.strides[1] >= 4 * max(1, x.shape[2]))


def _unit_rows(x):
    """x as BLAS can address it (see _rows_ok): a contiguous copy only when it cannot already."""
    if _rows_ok(x):
        return x
    y = np.empty(x.shape, np.float32)  # (fresh strides: ascontiguousarray keeps a length-1 axis's)
    y[...] = x
    return y


def _numpy_matmul(a, b, c, trans_a, trans_b, bias, residual, act, alpha):
    """The fallback without a callable sgemm: numpy's matmul, then the same epilogue."""
    a = np.swapaxes(a, 1, 2) if trans_a else a
    bt = np.swapaxes(b, 1, 2) if trans_b else b
    for i in range(c.shape[0]):
        np.matmul(a[i % a.shape[0]], bt[i], out=c[i])
    epilogue(c, bias, residual, act, alpha)


def epilogue(c, bias, residual, act, alpha):
    """In place: the epilogue of `matmul` over all of c (P×M×N) — for a product computed elsewhere."""
    if bias is not None or residual is not None or act != NONE:
        _epilogue_rows(c, bias if bias is not None else _NO_BIAS, bias is not None,
                       residual if residual is not None else _NO_RES, residual is not None, act, np.float32(alpha))


@njit(cache=True, fastmath=FMA, parallel=True)
def _epilogue_rows(c, bias, has_bias, res, has_res, act, alpha):
    p, m = c.shape[0], c.shape[1]
    for idx in prange(p * m):
        i = idx // m
        r = idx - i * m
        _epilogue(c, i, r, r + 1, 0, c.shape[2], bias, has_bias, res, has_res, act, alpha)
