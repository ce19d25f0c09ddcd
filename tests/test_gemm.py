"""The CPU backend's GEMM (netspec/backends/cpu/gemm.py) against float64 numpy references.

`matmul(a, b, c, ...)` computes c[i] = act(a[i % A] · b[i] + bias[i % Bb, :, None] + residual[i]) for
stacks of float32 matrices, as single-threaded OpenBLAS sgemm calls on Numba's threads (or numpy's
matmul where numpy has no OpenBLAS to call). These tests check its results on every path — serial,
parallel, fallback, transposed operands, sub-blocks of larger arrays — its epilogue's order (bias,
then residual, then activation, bit for bit like the unfused float32 ops), and that it leaves
OpenBLAS's thread count and the process environment as it found them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netspec.backends.cpu  # noqa: F401  (sets the Numba cache directory and starts the pool first)
from netspec.backends.cpu import gemm
from netspec.backends.cpu._act import ELU, HARDSWISH, LEAKY_RELU, NONE, RELU, RELU6, SIGMOID, SILU, TANH
from netspec.threads import set_threads

RTOL = ATOL = 1e-4  # fp32 kernels vs float64 numpy references, as DESIGN.md requires
EPS = float(np.finfo(np.float32).eps)

ACTS = [NONE, RELU, RELU6, LEAKY_RELU, ELU, SILU, HARDSWISH, SIGMOID, TANH]
ALPHA = {LEAKY_RELU: 0.1, ELU: 1.0}  # the others ignore alpha


# --- helpers ------------------------------------------------------------------------------------


def activation(v: np.ndarray, act: int, alpha: float) -> np.ndarray:
    """The activations written out in numpy (float64), independent of `_act`."""
    if act == NONE:
        return v
    if act == RELU:
        return np.maximum(v, 0.0)
    if act == RELU6:
        return np.clip(v, 0.0, 6.0)
    if act == LEAKY_RELU:
        return np.where(v > 0, v, alpha * v)
    if act == ELU:
        return np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0.0)))
    if act == SILU:
        return v / (1.0 + np.exp(-v))
    if act == HARDSWISH:
        return v * np.clip(v + 3.0, 0.0, 6.0) / 6.0
    if act == SIGMOID:
        return 1.0 / (1.0 + np.exp(-v))
    if act == TANH:
        return np.tanh(v)
    raise AssertionError(f"unknown activation code {act}")


def operands(a, b, trans_a, trans_b):
    """a and b in float64 as stacks of M×K and P×K×N matrices (the transposes undone)."""
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    if trans_a:
        a64 = np.swapaxes(a64, 1, 2)
    if trans_b:
        b64 = np.swapaxes(b64, 1, 2)
    return a64, b64


def reference(a, b, *, trans_a=False, trans_b=False, bias=None, residual=None, act=NONE, alpha=0.0):
    """(c, mag) in float64: c as `matmul` defines it, one product at a time; mag = Σ|a·b| + |bias| +
    |residual| per element, the size of the terms summed, which the float32 rounding error scales with."""
    a64, b64 = operands(a, b, trans_a, trans_b)
    p = b64.shape[0]
    c = np.stack([a64[i % a64.shape[0]] @ b64[i] for i in range(p)])
    mag = np.stack([np.abs(a64[i % a64.shape[0]]) @ np.abs(b64[i]) for i in range(p)])
    if bias is not None:
        bias64 = bias.astype(np.float64)
        rows = np.stack([bias64[i % bias64.shape[0]] for i in range(p)])[:, :, None]
        c = c + rows
        mag = mag + np.abs(rows)
    if residual is not None:
        c = c + residual.astype(np.float64)
        mag = mag + np.abs(residual.astype(np.float64))
    return activation(c, act, alpha), mag


def assert_close_to_reference(got, want, mag):
    """|got − want| ≤ RTOL·|want| + ATOL + 1e-6·mag elementwise (1e-6 of Σ|terms| is ~8 float32 ulps:
    room for the sums' rounding on long K, far below what a wrong element or block would be off by)."""
    assert got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    bound = RTOL * np.abs(want) + ATOL + 1e-6 * mag
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"at {worst}: got {got[worst]!r}, want {want[worst]!r} "
                                  f"(|err| {err[worst]:.3g} > {bound[worst]:.3g})")


def shape_a(a_count, m, k, trans_a):
    return (a_count, k, m) if trans_a else (a_count, m, k)


def shape_b(p, k, n, trans_b):
    return (p, n, k) if trans_b else (p, k, n)


def random_case(rng, p, a_count, m, k, n, trans_a=False, trans_b=False):
    a = rng.uniform(-1, 1, shape_a(a_count, m, k, trans_a)).astype(np.float32)
    b = rng.uniform(-1, 1, shape_b(p, k, n, trans_b)).astype(np.float32)
    return a, b


def blas_threads() -> int | set[int]:
    """OpenBLAS's thread count: numpy's OpenBLAS directly where gemm calls it, else threadpoolctl's view."""
    if gemm.AVAILABLE:
        return int(gemm._get_blas_threads())
    from threadpoolctl import threadpool_info
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


# --- 1. the property test -------------------------------------------------------------------------

dim = st.integers(1, 40)


@st.composite
def gemm_case(draw):
    p = draw(st.integers(1, 4))
    a_count = draw(st.sampled_from(sorted({1, p, draw(st.integers(1, p))})))  # any A ≤ P: a[i % A]
    m, k, n = draw(dim), draw(dim), draw(dim)
    big = draw(st.sampled_from([None, None, None, "m", "k", "n"]))  # sometimes well above _PARALLEL_MIN
    if big == "m":
        m = draw(st.integers(300, 3000))
    elif big == "k":
        k = draw(st.integers(300, 3000))
    elif big == "n":
        n = draw(st.integers(300, 3000))
    act = draw(st.sampled_from(ACTS))
    return dict(p=p, a_count=a_count, m=m, k=k, n=n, trans_a=draw(st.booleans()), trans_b=draw(st.booleans()),
                bias_rows=draw(st.sampled_from([None, 1, a_count])), residual=draw(st.booleans()),
                act=act, alpha=ALPHA.get(act, 0.0),
                # 0: even the smallest products take the parallel path (blocks of a few rows or none)
                parallel_min=draw(st.sampled_from([gemm._PARALLEL_MIN, 0])))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=gemm_case(), seed=st.integers(0, 2**32 - 1))
def test_matmul_matches_float64_reference(case, seed):
    """Any stack shape (A ≤ P, Bb = 1 or A), both transposes, with and without bias and residual,
    every activation, serial and parallel paths: c agrees with a float64 numpy reference."""
    rng = np.random.default_rng(seed)
    p, m, k, n = case["p"], case["m"], case["k"], case["n"]
    a, b = random_case(rng, p, case["a_count"], m, k, n, case["trans_a"], case["trans_b"])
    bias = None if case["bias_rows"] is None else rng.uniform(-1, 1, (case["bias_rows"], m)).astype(np.float32)
    residual = rng.uniform(-1, 1, (p, m, n)).astype(np.float32) if case["residual"] else None
    c = np.full((p, m, n), np.nan, np.float32)  # every element must be written
    saved = gemm._PARALLEL_MIN
    gemm._PARALLEL_MIN = case["parallel_min"]
    try:
        out = gemm.matmul(a, b, c, trans_a=case["trans_a"], trans_b=case["trans_b"], bias=bias,
                          residual=residual, act=case["act"], alpha=case["alpha"])
    finally:
        gemm._PARALLEL_MIN = saved
    assert out is c
    want, mag = reference(a, b, trans_a=case["trans_a"], trans_b=case["trans_b"], bias=bias, residual=residual,
                          act=case["act"], alpha=case["alpha"])
    assert_close_to_reference(c, want, mag)


# --- 2. the epilogue: its order, bit for bit ------------------------------------------------------


@pytest.mark.parametrize("parallel_min", [gemm._PARALLEL_MIN, 0], ids=["serial", "parallel"])
def test_fused_epilogue_is_bit_exact_with_unfused_float32_ops(monkeypatch, parallel_min):
    """bias + residual + relu fused into matmul give bit for bit the unfused float32 ops in the
    order the docstring promises: relu((c + bias) + residual) on the plain product."""
    monkeypatch.setattr(gemm, "_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(2)
    p, m, k, n = 2, 24, 17, 45
    a, b = random_case(rng, p, 1, m, k, n)
    bias = rng.standard_normal((1, m)).astype(np.float32) * 3
    residual = rng.standard_normal((p, m, n)).astype(np.float32) * 3

    fused = np.empty((p, m, n), np.float32)
    gemm.matmul(a, b, fused, bias=bias, residual=residual, act=RELU)

    plain = np.empty((p, m, n), np.float32)
    gemm.matmul(a, b, plain)  # the same sgemm blocks, so the same product bits
    summed = (plain + bias[0][None, :, None]) + residual  # float32 throughout
    assert summed.dtype == np.float32
    assert np.array_equal(fused, np.maximum(summed, np.float32(0)))

    # the same through `epilogue`, in two steps and in one
    two_steps = summed.copy()
    gemm.epilogue(two_steps, None, None, RELU, 0.0)
    assert np.array_equal(fused, two_steps)
    one_step = plain.copy()
    gemm.epilogue(one_step, bias, residual, RELU, 0.0)
    assert np.array_equal(fused, one_step)

    # a different order, bias added last, rounds differently somewhere: the test can tell the orders apart
    other = np.maximum((plain + residual) + bias[0][None, :, None], np.float32(0))
    assert not np.array_equal(fused, other)


@pytest.mark.parametrize("parallel_min", [gemm._PARALLEL_MIN, 0], ids=["serial", "parallel"])
@pytest.mark.parametrize("p, m, n", [(2, 300, 1), (1, 4, 17)], ids=["column", "last-block-one-column"])
@pytest.mark.parametrize("act", [RELU, SIGMOID])
def test_epilogue_down_a_single_column_is_bit_exact(monkeypatch, parallel_min, p, m, n, act):
    """A block of one column (a matrix-vector product, or the last block of a column split: 17
    columns in two parts are 16 + 1) takes the epilogue down the column: still bit for bit
    act((c + bias) + residual), for the column of a wider matrix too (row stride n)."""
    monkeypatch.setattr(gemm, "_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(5)
    a, b = random_case(rng, p, 1, m, 33, n)
    bias = rng.standard_normal((1, m)).astype(np.float32) * 3
    residual = rng.standard_normal((p, m, n)).astype(np.float32) * 3
    fused = np.empty((p, m, n), np.float32)
    gemm.matmul(a, b, fused, bias=bias, residual=residual, act=act)
    plain = np.empty((p, m, n), np.float32)
    gemm.matmul(a, b, plain)
    summed = (plain + bias[0][None, :, None]) + residual
    unfused = summed.copy()
    gemm.epilogue(unfused, None, None, act, 0.0)  # the activation alone, over whole rows
    assert np.array_equal(fused, unfused)


# --- 3. serial and parallel paths -----------------------------------------------------------------


def test_parallel_and_serial_paths_agree():
    """One large product (M=64, K=32, N=3000) with 1 thread and with 2. The parallel path cuts it into
    column blocks, and OpenBLAS does not promise the same K-summation (kernel, blocking) for a block as
    for the whole matrix — measured: differences of a few ulps — so the check is the bound on two
    float32 sums of the same K terms: |c₁ − c₂| ≤ K·eps·Σ|a·b| elementwise, with both near the float64
    reference."""
    rng = np.random.default_rng(3)
    p, m, k, n = 1, 64, 32, 3000
    assert p * m * k * n >= gemm._PARALLEL_MIN
    a, b = random_case(rng, p, 1, m, k, n)
    serial, parallel = np.empty((p, m, n), np.float32), np.empty((p, m, n), np.float32)
    with set_threads(1):
        gemm.matmul(a, b, serial)
    with set_threads(2):
        gemm.matmul(a, b, parallel)
    want, mag = reference(a, b)
    assert np.all(np.abs(serial.astype(np.float64) - parallel) <= k * EPS * mag)
    assert_close_to_reference(serial, want, mag)
    assert_close_to_reference(parallel, want, mag)


def test_parallel_path_is_bit_exact_when_products_are_not_split():
    """With P a multiple of the thread count each product is one whole sgemm call on either path (the
    threads share out whole products), so 1 and 2 threads agree bit for bit."""
    rng = np.random.default_rng(4)
    p, m, k, n = 4, 48, 40, 200
    assert p * m * k * n >= gemm._PARALLEL_MIN
    a, b = random_case(rng, p, 2, m, k, n)
    bias = rng.standard_normal((2, m)).astype(np.float32)
    serial, parallel = np.empty((p, m, n), np.float32), np.empty((p, m, n), np.float32)
    with set_threads(1):
        gemm.matmul(a, b, serial, bias=bias, act=TANH)
    with set_threads(2):
        gemm.matmul(a, b, parallel, bias=bias, act=TANH)
    assert np.array_equal(serial, parallel)


# --- 4. the numpy fallback ------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("a_count", [1, 2])
def test_fallback_gives_the_same_results(monkeypatch, trans_a, trans_b, a_count):
    """With no sgemm to call (gemm.AVAILABLE false) numpy's matmul and `epilogue` give the same c as
    the sgemm path, to 1e-5 relative: transposes, A = 1 and A = 2 of P = 4, bias, residual, silu."""
    rng = np.random.default_rng(5)
    p, m, k, n = 4, 19, 23, 300  # above _PARALLEL_MIN: the sgemm path runs in parallel
    a, b = random_case(rng, p, a_count, m, k, n, trans_a, trans_b)
    bias = rng.standard_normal((a_count, m)).astype(np.float32)
    residual = rng.standard_normal((p, m, n)).astype(np.float32)
    kwargs = dict(trans_a=trans_a, trans_b=trans_b, bias=bias, residual=residual, act=SILU)
    fast = gemm.matmul(a, b, np.empty((p, m, n), np.float32), **kwargs)
    monkeypatch.setattr(gemm, "AVAILABLE", False)
    slow = gemm.matmul(a, b, np.full((p, m, n), np.nan, np.float32), **kwargs)
    want, mag = reference(a, b, **kwargs)
    np.testing.assert_allclose(slow, fast, rtol=1e-5, atol=1e-5)
    assert_close_to_reference(slow, want, mag)


def test_empty_inner_dimension_gives_the_epilogue_alone():
    """K = 0: the product is zero, so c = act(bias + residual) (these shapes go to numpy's matmul)."""
    rng = np.random.default_rng(6)
    p, m, n = 3, 5, 7
    a, b = np.empty((1, m, 0), np.float32), np.empty((p, 0, n), np.float32)
    bias = rng.standard_normal((1, m)).astype(np.float32)
    residual = rng.standard_normal((p, m, n)).astype(np.float32)
    c = np.full((p, m, n), np.nan, np.float32)
    gemm.matmul(a, b, c, bias=bias, residual=residual, act=RELU6)
    want = np.clip((np.zeros((p, m, n), np.float32) + bias[0][:, None]) + residual, 0, 6)
    assert np.array_equal(c, want)


# --- 5. sub-blocks of larger arrays ---------------------------------------------------------------


@pytest.mark.parametrize("parallel_min", [gemm._PARALLEL_MIN, 0], ids=["serial", "parallel"])
@pytest.mark.parametrize("trans_a", [False, True])
def test_sub_blocks_with_row_strides(monkeypatch, parallel_min, trans_a):
    """a, b, c and the residual as views into larger arrays (their own row strides, unit stride along
    rows): c is right, and nothing of the larger output array outside the view is written."""
    monkeypatch.setattr(gemm, "_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(7)
    p, m, k, n = 3, 8, 21, 37
    big_a = rng.uniform(-1, 1, (2, 50, 60)).astype(np.float32)
    a = big_a[:1, 3:3 + k, 5:5 + m] if trans_a else big_a[:1, 3:3 + m, 5:5 + k]
    big_b = rng.uniform(-1, 1, (p + 1, k + 4, n + 9)).astype(np.float32)
    b = big_b[1:, 2:2 + k, 4:4 + n]
    big_r = rng.uniform(-1, 1, (p, m + 3, n + 6)).astype(np.float32)
    residual = big_r[:, 1:1 + m, 2:2 + n]
    bias = rng.uniform(-1, 1, (1, m)).astype(np.float32)
    big = np.full((p, 12, n + 5), 7.0, np.float32)
    c = big[:, 2:10, 1:1 + n]
    for x in (a, b, c, residual):
        assert x.strides[2] == 4 and not x.flags.c_contiguous  # genuinely sub-blocks
    before = big.copy()

    out = gemm.matmul(a, b, c, trans_a=trans_a, bias=bias, residual=residual, act=LEAKY_RELU, alpha=0.1)
    assert out is c
    want, mag = reference(a, b, trans_a=trans_a, bias=bias, residual=residual, act=LEAKY_RELU, alpha=0.1)
    assert_close_to_reference(big[:, 2:10, 1:1 + n], want, mag)  # written through the view
    outside = np.ones(big.shape, bool)
    outside[:, 2:10, 1:1 + n] = False
    assert np.array_equal(big[outside], before[outside])


@pytest.mark.parametrize("parallel_min", [gemm._PARALLEL_MIN, 0], ids=["serial", "parallel"])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, n", [(1, 300), (300, 1), (1, 1)], ids=["row", "column", "dot"])
def test_single_row_or_column_products(monkeypatch, parallel_min, trans_a, trans_b, m, n):
    """One row of C (a linear layer at batch 1) or one column (a 1×1 map) goes through sgemv, each
    operand layout with its own increments; with bias, residual and an activation."""
    monkeypatch.setattr(gemm, "_PARALLEL_MIN", parallel_min)
    rng = np.random.default_rng(11)
    a, b = random_case(rng, 2, 1, m, 70, n, trans_a, trans_b)
    bias = rng.uniform(-1, 1, (1, m)).astype(np.float32)
    residual = rng.uniform(-1, 1, (2, m, n)).astype(np.float32)
    c = np.full((2, m, n), np.nan, np.float32)
    gemm.matmul(a, b, c, trans_a=trans_a, trans_b=trans_b, bias=bias, residual=residual, act=ELU, alpha=1.0)
    want, mag = reference(a, b, trans_a=trans_a, trans_b=trans_b, bias=bias, residual=residual, act=ELU, alpha=1.0)
    assert_close_to_reference(c, want, mag)


@pytest.mark.parametrize("case", ["b_broadcast_row", "a_transposed_row", "c_transposed_row"])
def test_length_one_axes_with_any_stride(case):
    """numpy lets a length-1 axis have any stride (0 included), which BLAS refuses as a leading
    dimension: such operands are copied, such an output computed aside — never left unwritten."""
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    if case == "b_broadcast_row":
        a, b = np.full((1, 4, 1), 2.0, np.float32), x[:, None, :]  # b strides (24, 0, 4)
        c = np.full((2, 4, 6), np.nan, np.float32)
    elif case == "a_transposed_row":
        a, b = np.ones((1, 5, 1), np.float32).transpose(0, 2, 1), np.ones((1, 5, 3), np.float32)
        c = np.full((1, 1, 3), np.nan, np.float32)
    else:
        a, b = np.ones((1, 1, 4), np.float32), np.ones((1, 4, 3), np.float32)
        c = np.full((1, 3, 1), np.nan, np.float32).transpose(0, 2, 1)  # 1×1×3, row stride 4 bytes: shorter than a row
    want = np.stack([a[i % a.shape[0]].astype(np.float64) @ b[i] for i in range(c.shape[0])])
    gemm.matmul(a, b, c)
    np.testing.assert_allclose(c, want, rtol=1e-6)


def test_fallback_takes_any_count_of_left_matrices(monkeypatch):
    """a[i % A] for every i, on the fallback too, also where A does not divide P."""
    monkeypatch.setattr(gemm, "AVAILABLE", False)
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 3, 4), dtype=np.float32), rng.standard_normal((3, 4, 5), dtype=np.float32)
    c = np.empty((3, 3, 5), np.float32)
    gemm.matmul(a, b, c)
    want = np.stack([a[i % 2].astype(np.float64) @ b[i] for i in range(3)])
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


# --- 6. OpenBLAS's thread count -------------------------------------------------------------------


@pytest.mark.parametrize("n", [4, 3000], ids=["serial", "parallel"])
def test_blas_thread_count_is_restored(n):
    """matmul holds OpenBLAS at one thread during the call and gives back the count it found, both
    the default and one set by `set_threads`."""
    rng = np.random.default_rng(8)
    a, b = random_case(rng, 1, 1, 64, 32, n)
    c = np.empty((1, 64, n), np.float32)
    before = blas_threads()
    gemm.matmul(a, b, c)
    assert blas_threads() == before
    with set_threads(2):
        inside = blas_threads()
        gemm.matmul(a, b, c, act=RELU)
        assert blas_threads() == inside
    assert blas_threads() == before


def test_single_threaded_product_is_numpys_and_restores_the_thread_count():
    """gemm.single_threaded (numpy's a @ b with OpenBLAS held at one thread: Winograd's weight
    transform) gives numpy's product and leaves the thread count as it found it."""
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((16, 9)), rng.standard_normal((9, 300))
    with set_threads(2):
        before = blas_threads()
        np.testing.assert_array_equal(gemm.single_threaded(a, b), a @ b)
        assert blas_threads() == before


# --- 7. the thread policy's environment variable --------------------------------------------------

_PROBE = """
import json, os
seen = os.environ.get("GOMP_SPINCOUNT")
import numpy as np
import netspec.backends.cpu
from netspec.backends.cpu import gemm
after_import = os.environ.get("GOMP_SPINCOUNT")
a = np.ones((1, 64, 32), np.float32); b = np.ones((1, 32, 3000), np.float32); c = np.empty((1, 64, 3000), np.float32)
gemm.matmul(a, b, c)  # runs on Numba's threads
print(json.dumps({"before": seen, "after_import": after_import, "after_run": os.environ.get("GOMP_SPINCOUNT"),
                  "policy": os.environ.get("OMP_WAIT_POLICY"), "ok": bool((c == 32).all())}))
"""


def probe_environment(**preset: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(preset)
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_leaves_no_spin_count_in_the_environment():
    """Importing the CPU backend sets GOMP_SPINCOUNT only while Numba's pool starts: afterwards the
    process environment (which child processes and other OpenMP runtimes read) does not have it."""
    seen = probe_environment()
    assert seen == {"before": None, "after_import": None, "after_run": None, "policy": None, "ok": True}


def test_a_users_wait_policy_is_left_alone():
    """A user's OMP_WAIT_POLICY=passive stays as it is and no GOMP_SPINCOUNT is added; a user's own
    GOMP_SPINCOUNT stays, unchanged."""
    seen = probe_environment(OMP_WAIT_POLICY="passive")
    assert seen == {"before": None, "after_import": None, "after_run": None, "policy": "passive", "ok": True}
    seen = probe_environment(GOMP_SPINCOUNT="5")
    assert seen == {"before": "5", "after_import": "5", "after_run": "5", "policy": None, "ok": True}

