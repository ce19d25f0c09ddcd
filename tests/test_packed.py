"""The CPU backend's packed-weight GEMM (netspec/backends/cpu/packed.py) against float64 numpy references.

`Packed(w, bias).plan(p, n, ...)` runs c[i] = act(W[i % A] · x[i] + bias (+ residual[i])) with the
weights packed once and an LLVM IR micro-kernel (6×16 or 6×8 blocks). These tests cover every path
it chooses: X packed or read in place, panels or row blocks shared among the threads, serial
products, blocks cut short at the right and bottom edges, 8-wide last panels, activations in
registers (ReLU, ReLU6, Leaky ReLU, SiLU: act_row's bits) and after (the rest), residuals, stacks of weights and per-image gated
weights, and the layers that use it (1×1, im2col and Winograd convolutions).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

import netspec.backends.cpu  # noqa: F401  (sets the Numba cache directory and starts the pool first)
import netspec.threads
from netspec.backends.cpu import packed
from netspec.backends.cpu._act import FMA, IR_ACTIVATIONS, NONE, RELU, act_row
from test_gemm import ACTS, ALPHA, assert_close_to_reference, reference  # noqa: E402  (the same float64 judge)


@st.composite
def packed_case(draw):
    p = draw(st.integers(1, 3))
    a_count = draw(st.sampled_from(sorted({1, p})))  # one set of weights, or one per image
    # M around the row block (6) and the direct/packed boundary (128); N around the panel widths (8,
    # 16) and past them; K short and long
    m = draw(st.one_of(st.integers(1, 20), st.integers(125, 140)))
    k = draw(st.one_of(st.integers(1, 20), st.integers(127, 140)))
    n = draw(st.one_of(st.integers(1, 40), st.integers(190, 200)))
    act = draw(st.sampled_from(ACTS))
    return dict(p=p, a_count=a_count, m=m, k=k, n=n, residual=draw(st.booleans()), act=act,
                alpha=ALPHA.get(act, 0.0), threads=draw(st.sampled_from([1, 2])),
                parallel_min=draw(st.sampled_from([packed._PARALLEL_MIN, 0])),
                # 0: every product counts as wide, and runs on OpenBLAS with the weights unpacked
                max_columns=draw(st.sampled_from([packed._MAX_COLUMNS, packed._MAX_COLUMNS, 0])),
                # K in one slice, or in slices of 5: the sums carried through C from one to the next
                k_slice=draw(st.sampled_from([packed._K_SLICE, 5])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=packed_case(), seed=st.integers(0, 2**32 - 1))
def test_packed_product_matches_float64_reference(case, seed):
    """Any M, K, N (edges of the blocks and panels included), stacks of weights, with and without a
    residual, every activation, one or two threads, the packed kernel or (wide products) OpenBLAS
    on the weights unpacked: c agrees with a float64 numpy reference, and
    every element of c is written; K in one slice or several."""
    rng = np.random.default_rng(seed)
    p, m, k, n = case["p"], case["m"], case["k"], case["n"]
    w = rng.uniform(-1, 1, (case["a_count"], m, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, m).astype(np.float32)
    x = rng.uniform(-1, 1, (p, k, n)).astype(np.float32)
    residual = rng.uniform(-1, 1, (p, m, n)).astype(np.float32) if case["residual"] else None
    c = np.full((p, m, n), np.nan, np.float32)
    saved = packed._PARALLEL_MIN, packed._MAX_COLUMNS, packed._K_SLICE
    packed._PARALLEL_MIN, packed._MAX_COLUMNS, packed._K_SLICE = case["parallel_min"], case["max_columns"], case["k_slice"]
    try:
        run = packed.Packed(w if case["a_count"] > 1 else w[0], bias).plan(
            p, n, residual=residual is not None, act=case["act"], alpha=case["alpha"], threads=case["threads"])
    finally:
        packed._PARALLEL_MIN, packed._MAX_COLUMNS, packed._K_SLICE = saved
    assert run(x, c, residual) is c
    want, mag = reference(w, x, bias=bias[None], residual=residual, act=case["act"], alpha=case["alpha"])
    assert_close_to_reference(c, want, mag)


@pytest.mark.parametrize("m, k, n, p", [
    (30, 20, 40, 1),     # 3 panels for 2 threads: the row blocks are shared out instead
    (140, 150, 40, 1),   # the same with X packed (M and K above the direct limit), both threads packing it
    (200, 300, 33, 1),   # an 8-wide last panel of one column; several row groups (K×MR·group > 192 KiB)
    (140, 2000, 70, 2),  # chunks of X smaller than a row of panels (K large): several chunks per image
    (7, 5, 3000, 3),     # many panels, few rows: the panels shared out, across image boundaries
])
def test_packed_paths_match_reference(m, k, n, p):
    """Paths a random draw may miss: row-block sharing with and without packing, narrow last panels,
    several row groups and chunks, and panel ranges that span images."""
    rng = np.random.default_rng(m * k + n)
    w = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, m).astype(np.float32)
    x = rng.uniform(-1, 1, (p, k, n)).astype(np.float32)
    for threads in (1, 2):
        c = np.full((p, m, n), np.nan, np.float32)
        packed.Packed(w, bias).plan(p, n, residual=False, act=RELU, alpha=0.0, threads=threads)(x, c)
        want, mag = reference(w[None], x, bias=bias[None], act=RELU)
        assert_close_to_reference(c, want, mag)


def test_threads_share_the_row_blocks_where_the_panels_would_not_share_evenly():
    """packed._split_rows: a 7²-like product (3 panels and a column, 2 a thread against 1.5) shares
    its row blocks; whole or many panels, or too few row blocks, share the panels."""
    nr = packed.NR
    assert packed._split_rows(1, 3 * nr + 1, 171, 2)
    assert not packed._split_rows(8, 3 * nr + 1, 171, 2)  # 32 panels: 4 images a thread
    assert not packed._split_rows(1, 4 * nr, 171, 2) and not packed._split_rows(1, 3 * nr + 1, 3, 2)
    assert not packed._split_rows(1, 12 * nr + 4, 86, 2)  # 6 panels against 6 and a narrow one: within 10%


@pytest.mark.parametrize("m, k, n, p", [(13, 7, 49, 2), (320, 600, 49, 1), (31, 300, 17, 3), (6, 5, 1, 1)])
@pytest.mark.parametrize("act", ["none", "relu", "silu", "tanh"])
def test_a_last_column_alone_gives_the_wide_tiles_bits(m, k, n, p, act):
    """A panel's last column alone (a 7² map: 49 = 3·16 + 1) runs transposed, BLOCKS row blocks a
    call (`_tile_columns`): every value is the one a whole panel computes for that column (the
    product padded with zero columns), with a residual, K in slices (the sums carried through C),
    every row count (blocks cut short), one or two threads."""
    from netspec.backends.cpu._act import CODES
    code = NONE if act == "none" else CODES[act]
    rng = np.random.default_rng(m + k + n)
    w = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, m).astype(np.float32)
    weights = packed.Packed(w, bias)
    wide = -(-n // packed.NR) * packed.NR + packed.NR  # (the column inside a whole panel)
    x = np.zeros((p, k, wide), np.float32)
    x[:, :, :n] = rng.uniform(-1, 1, (p, k, n))
    res = np.zeros((p, m, wide), np.float32)
    res[:, :, :n] = rng.uniform(-1, 1, (p, m, n))
    assert (n % packed.NR) == packed.COLUMNS
    for threads in (1, 2):
        for residual in (None, res):
            got = np.full((p, m, n), np.nan, np.float32)
            weights.plan(p, n, residual=residual is not None, act=code, alpha=0.1, threads=threads)(
                np.ascontiguousarray(x[:, :, :n]), got, None if residual is None else np.ascontiguousarray(res[:, :, :n]))
            want = np.full((p, m, wide), np.nan, np.float32)
            weights.plan(p, wide, residual=residual is not None, act=code, alpha=0.1, threads=threads)(x, want, residual)
            np.testing.assert_array_equal(got, want[:, :, :n])


@njit(fastmath=FMA)  # as the kernels that run act_row
def _act_rows(c, act, alpha):
    for i in range(c.shape[0]):
        for r in range(c.shape[1]):
            act_row(c[i, r], c[i, r], np.float32(0.0), False, act, alpha)


@pytest.mark.parametrize("act", sorted(set(IR_ACTIVATIONS) - {NONE}))
@pytest.mark.parametrize("m, k, n", [(13, 7, 37), (96, 16, 300), (29, 9, 49)])  # partial blocks and panels
# (an 8-wide one; a last column alone: `_tile_columns`); whole ones
def test_activations_in_registers_give_act_rows_bits(act, m, k, n):
    """The micro-kernel's activations (IR written after act_row's arithmetic) give exactly act_row's
    bits on the product without activation: over ±300 (past the exp's clamps), ±0, ±inf and NaN."""
    rng = np.random.default_rng(act)
    w = rng.uniform(-3, 3, (m, k)).astype(np.float32)
    bias = rng.uniform(-3, 3, m).astype(np.float32)
    x = rng.uniform(-10, 10, (1, k, n)).astype(np.float32)
    x[0, 0, :7] = [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0]
    weights = packed.Packed(w, bias)
    plain = np.empty((1, m, n), np.float32)
    weights.plan(1, n, residual=False, act=NONE, alpha=0.0, threads=2)(x, plain)
    assert np.isnan(plain).any() and np.isinf(plain).any() and (np.abs(plain[np.isfinite(plain)]) > 88).any()
    got = np.empty_like(plain)
    weights.plan(1, n, residual=False, act=act, alpha=0.1, threads=2)(x, got)
    _act_rows(plain, act, np.float32(0.1))
    np.testing.assert_array_equal(got.view(np.int32)[~np.isnan(got)], plain.view(np.int32)[~np.isnan(got)])
    np.testing.assert_array_equal(np.isnan(got), np.isnan(plain))


def test_packing_pads_with_zeros_and_keeps_every_weight():
    """pack: blocks of MR rows, each K×MR, the rows past M zero, the bias likewise."""
    mr = packed.MR
    w = np.arange(1, (mr + 2) * 3 + 1, dtype=np.float32).reshape(mr + 2, 3)
    bias = np.arange(1, mr + 3, dtype=np.float32)
    wp, bp = packed.pack(w, bias)
    assert wp.shape == (2, 3, mr) and bp.shape == (2, mr)
    np.testing.assert_array_equal(wp[0], w[:mr].T)
    np.testing.assert_array_equal(wp[1, :, :2], w[mr:].T)
    assert not wp[1, :, 2:].any() and not bp[1, 2:].any()
    np.testing.assert_array_equal(bp.ravel()[:mr + 2], bias)


def test_gated_weights_scale_each_input_per_image():
    """Packed.gated: image i's weights with input k scaled by gate[i, k]; a product with them is the
    product with W · diag(gate[i]) (a fused squeeze-excitation gate)."""
    rng = np.random.default_rng(5)
    m, k, n, p = 13, 9, 21, 2
    w = rng.uniform(-1, 1, (m, k)).astype(np.float32)
    bias = rng.uniform(-1, 1, m).astype(np.float32)
    gate = rng.uniform(0, 1, (p, k)).astype(np.float32)
    x = rng.uniform(-1, 1, (p, k, n)).astype(np.float32)
    weights = packed.Packed(w, bias)
    per_image = weights.gated(gate, np.empty((p,) + weights.wp.shape[1:], np.float32))
    want, mag = reference(w[None] * gate[:, None, :], x, bias=bias[None])
    for max_columns in (packed._MAX_COLUMNS, 0):  # the packed kernel, and OpenBLAS on them unpacked
        saved, packed._MAX_COLUMNS = packed._MAX_COLUMNS, max_columns
        try:
            run = weights.plan(p, n, residual=False, act=NONE, alpha=0.0, threads=2)
        finally:
            packed._MAX_COLUMNS = saved
        c = np.full((p, m, n), np.nan, np.float32)
        run(x, c, None, per_image)
        assert_close_to_reference(c, want, mag)


def test_unpack_inverts_pack():
    w = np.random.default_rng(1).standard_normal((2, 13, 5)).astype(np.float32)
    weights = packed.Packed(w, np.zeros(13, np.float32))
    np.testing.assert_array_equal(packed.unpack(weights.wp, 13), w)


@pytest.mark.parametrize("kernel, channels, packs", [(1, 12, 1), (3, 12, 1), (3, 64, 2)],
                         ids=["pointwise", "implicit", "im2col"])
def test_a_layer_packs_its_weights_once_for_every_input_shape(kernel, channels, packs):
    """A convolution layer planned for several batch sizes and thread counts packs its weights once
    per use (`_Layer.packed`), not once per plan, and every plan gives the reference's values."""
    from netspec import ops
    from netspec.backends.cpu import conv
    from netspec.ops.registry import RunContext
    op = ops.get("conv2d")
    attrs = op.attrs.model_validate({"out": 20, "kernel": kernel, "stride": 2, "padding": kernel // 2})
    rng = np.random.default_rng(4)
    params = {"weight": rng.standard_normal((20, channels, kernel, kernel)).astype(np.float32),
              "bias": rng.standard_normal(20).astype(np.float32)}
    layer = conv.prepare(attrs, params)
    for batch, threads in [(1, 2), (3, 2), (2, 1)]:
        x = rng.standard_normal((batch, channels, 9, 9)).astype(np.float32)
        with netspec.threads.set_threads(threads):
            got = layer([x])
        np.testing.assert_allclose(got, op.reference(attrs, [x], params, RunContext()), rtol=1e-4, atol=1e-4)
    # a 1×1 or implicit-GEMM layer packs once; an im2col layer once with its bias (batch 1: the GEMM
    # writes y itself) and once without (batch 3 and 2: tiles of several images, the bias added as
    # they are scattered)
    assert len(layer.plans) == 3 and len(layer.packed) == packs


def test_the_vector_width_follows_the_host_and_names_its_own_cache():
    """8 lanes (6×16 blocks) by default on AVX2, 16 (8×32) on AVX-512; NETSPEC_LANES=8 keeps 8 anywhere,
    and the two widths never share a cache folder (their compiled kernels differ)."""
    import os
    import subprocess
    import sys
    from llvmlite import binding
    from netspec.backends import cpu
    wide = "+avx512f" in binding.get_host_cpu_features().flatten().split(",")
    assert cpu.LANES == (16 if wide else 8) or os.environ.get("NETSPEC_LANES") == "8"
    assert packed.NR == 2 * cpu.LANES and packed.MR == (8 if cpu.LANES == 16 else 6)
    probe = "from netspec.backends import cpu; print(cpu.LANES, cpu.DIGEST)"
    lanes, digest = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "NETSPEC_LANES": "8"},
                                   capture_output=True, text=True, check=True).stdout.split()
    assert lanes == "8" and (digest != cpu.DIGEST) == (cpu.LANES == 16)
