"""GEMMs on weights packed once: C[i] = act(W · X[i] + bias (+ residual[i])) for a layer whose W (M×K)
is fixed, X (K×N) and C (M×N) row-major as NCHW lays them out (a 1×1 convolution: K input
channels, M output channels, N pixels; im2col and Winograd products alike). Every ungrouped
convolution's GEMM runs here, not in OpenBLAS's sgemm (`gemm`): against it, hot on 2 threads,
0.7–1.0× the time on the zoo's shapes (the smaller K or M, the larger the gain), and in networks
(in-process A/B) MobileNet v1 0.89×, GoogLeNet 0.90×, ResNet-50 0.94×, YOLOv1 0.91×. Why:

- W is packed when the layer is prepared, not by sgemm on every call: blocks of MR rows, each
  K×MR (`pack`), which the micro-kernel reads as one sequential stream;
- the micro-kernel (`_emit_tile`, LLVM IR: Numba's loops do not keep a register block) holds an
  MR×NR block of C (6×16 on AVX2, 12 of its 16 vector registers; 8×32 on AVX-512, 16 of 32
  registers twice as wide: `LANES`) across a slice of K (`_K_SLICE` rows: the panel's slice stays
  in L1; a later slice starts from the sums stored in C), then adds
  the bias and the residual, applies the activation in registers (ReLU, ReLU6, Leaky ReLU,
  SiLU: `_act.IR_ACTIVATIONS`, act_row's arithmetic in IR, so the same bits), and stores the
  block once;
- X is read where it lies when few row blocks share each panel or K is short (packing it would
  cost more than it saves), else copied chunk by chunk into panels of NR columns that stay in
  L2 (`_pack_chunk`); a last panel of LANES columns or fewer runs one vector wide, and a last
  column alone (a 7×7 map on AVX2: 49 = 3·16 + 1) transposed, a vector across the rows
  (`_tile_columns`);
- each thread takes a share of the panels, or where they do not share out evenly, of the row
  blocks; small products run on the calling thread.

The micro-kernel's gather variant (`_gather_wide`, `_gather_narrow`) reads row k of its panel at an offset
from a table, not k·ldb: the implicit GEMM (`implicit`) runs convolutions with it, each tap read
from the padded input where it lies.

Products wider than _MAX_COLUMNS (Winograd's at batch 8) go to OpenBLAS's sgemm on the weights
unpacked (`Packed._blas_plan`): there the packed kernel measured no faster.

Other activations run through `act_row` (the code every kernel shares) over each chunk's rows
after the micro-kernel. SiLU did too: EfficientNet-B0's 1×1 layers took 1.2–2× the time of
the same product without activation, 1.1–1.7× with SiLU in registers (the network: 0.91× the
time, in-process A/B). The sums run over K in order, one fused multiply-add per term: the
rounding differs from sgemm's, as sgemm's own does between its block sizes.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import LANES, gemm
from ._act import CODES, FMA, IR_ACTIVATIONS, NONE, act_row, switch_activation
from ._util import constant, scratch

_LANES = LANES  # (8, or 16 on AVX-512: the package's `_host_lanes`)
# the micro-kernel's block of C: MR rows (broadcast weights) × NR columns (two vectors); 8×32 on
# AVX-512 (16 of its 32 registers): with K in slices, 0.70–0.98× the time of 6×32 on the zoo's products
MR, NR = (8 if _LANES == 16 else 6), 2 * _LANES

_SIG = types.void(*[types.int64] * 13, types.float32)
# by activation code: whether the micro-kernel applies it (else `act_row` does, after it)
APPLIED_IN_REGISTERS = np.array([code in IR_ACTIVATIONS for code in range(max(CODES.values()) + 1)])


def _emit_epilogue(builder, sums, p, masks, with_res, activation):
    """LLVM IR, straight-line: for each row r < rows of the block, v = (sum + bias[r]) (+ the
    residual), activation(builder, v, alpha), stored to C. `masks`: None for a full block (plain
    loads and stores), else one lane mask per vector (columns ≥ cols left alone)."""
    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    v8 = ir.VectorType(f32, _LANES)
    v8p, fptr = v8.as_pointer(), f32.as_pointer()
    zero = ir.Constant(v8, [0.0] * _LANES)
    align = ir.Constant(i32, 4)
    if masks is not None:
        i1v = ir.VectorType(ir.IntType(1), _LANES)
        mload = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8, [v8p, i32, i1v, v8]), f"llvm.masked.load.v{_LANES}f32.p0v{_LANES}f32")
        mstore = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [v8, v8p, i32, i1v]), f"llvm.masked.store.v{_LANES}f32.p0v{_LANES}f32")
    alpha = _splat(builder, p["alpha"])

    def vector_at(row, j):
        return builder.bitcast(builder.gep(row, [ir.Constant(i64, _LANES * j)]), v8p)

    vectors = len(sums) // MR
    for r in range(MR):
        with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, r), p["rows"])):
            b = _splat(builder, builder.load(builder.gep(p["bias"], [ir.Constant(i64, r)])))
            row = builder.bitcast(builder.gep(p["c"], [builder.mul(p["ldc"], ir.Constant(i64, r))]), fptr)
            res_row = builder.bitcast(builder.gep(p["res"], [builder.mul(p["ldr"], ir.Constant(i64, r))]), fptr)
            for j in range(vectors):
                v = builder.fadd(sums[r * vectors + j], b)
                if with_res:
                    at = vector_at(res_row, j)
                    rv = (builder.load(at, align=4) if masks is None
                          else builder.call(mload, [at, align, masks[j], zero]))
                    v = builder.fadd(v, rv)
                v = activation(builder, v, alpha)
                at = vector_at(row, j)
                if masks is None:
                    builder.store(v, at, align=4)
                else:
                    builder.call(mstore, [v, at, align, masks[j]])


def _splat(builder, x):
    """An 8-lane vector of the float x."""
    v8 = ir.VectorType(ir.FloatType(), _LANES)
    undef = ir.Constant(v8, ir.Undefined)
    lane0 = builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, undef, ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES))


def _k_loop_head(builder, start, initial):
    """At the top of a micro-kernel's loop over K (entered from `start`): kk from 0 and the sums
    from `initial`, as phis the loop's tail (`_k_loop_tail`) completes."""
    kk = builder.phi(ir.IntType(64))
    kk.add_incoming(ir.Constant(ir.IntType(64), 0), start)
    sums = [builder.phi(v.type) for v in initial]
    for s, v in zip(sums, initial):
        s.add_incoming(v, start)
    return kk, sums


def _k_loop_tail(builder, k, kk, sums, new, initial, start, done):
    """The loop's end: the next kk and sums (`new`), back to the top while kk < k, else on to
    `done`; there, the final sums (`initial` where k = 0, the loop not entered from `start`)."""
    loop = builder.block
    nk = builder.add(kk, ir.Constant(ir.IntType(64), 1))
    kk.add_incoming(nk, loop)
    for s, n in zip(sums, new):
        s.add_incoming(n, loop)
    builder.cbranch(builder.icmp_signed("<", nk, k), kk.parent, done)
    builder.position_at_end(done)
    final = []
    for n, v in zip(new, initial):
        phi = builder.phi(v.type)
        phi.add_incoming(v, start)
        phi.add_incoming(n, loop)
        final.append(phi)
    return final


def _make_tile(width, gather=False):
    """The micro-kernel for blocks `width` columns wide (8 or 16: one or two vectors a row); with
    `gather`, its ldb is the address of a table of row offsets (see `_emit_tile`)."""
    vectors = width // _LANES

    @intrinsic
    def tile(typingctx, a, b, ldb, k, resume, c, ldc, bias, rows, cols, res, ldr, act, alpha):
        return _SIG, lambda context, builder, signature, args: _emit_tile(builder, args, vectors, context, gather)
    return tile


def _emit_tile(builder, args, vectors, context, gather=False):
    """One MR×NR block of C: C[r, q] = act(bias[r] + Σ_k a[k·MR + r] · B_k[q] (+ res[r, q])) for
    r < rows, q < cols. a: the weights' block, packed (K×MR); B_k, row k of the panel of X: at b +
    k·ldb bytes, or with `gather` at b + offsets[k] bytes, ldb then the address of that int64 table
    (a convolution's taps read from its input, `implicit`); resume ≠ 0: the sums start from C's
    values, not 0 (a later slice of K: see `_K_SLICE`); c and res: the block's corner, rows ldc and
    ldr bytes apart; res = 0: no residual; act: an activation code of IR_ACTIVATIONS (another is
    taken as NONE), alpha its parameter. Pointers as integers. `vectors`: NR / LANES."""
    a, b, ldb, k, resume, c, ldc, bias, rows, cols, res, ldr, act, alpha = args
    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    v8 = ir.VectorType(f32, _LANES)
    fptr, bptr = f32.as_pointer(), ir.IntType(8).as_pointer()
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), f"llvm.fma.v{_LANES}f32")
    pa, pb = builder.inttoptr(a, fptr), builder.inttoptr(b, bptr)
    zero = ir.Constant(v8, [0.0] * _LANES)
    lanes = ir.Constant(ir.VectorType(i64, _LANES), list(range(_LANES)))
    cols_v = builder.insert_element(ir.Constant(ir.VectorType(i64, _LANES), ir.Undefined), cols,
                                    ir.Constant(i32, 0))
    cols_v = builder.shuffle_vector(cols_v, cols_v, ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES))
    masks = [builder.icmp_signed("<", builder.add(lanes, ir.Constant(ir.VectorType(i64, _LANES),
                                                                     [_LANES * j] * _LANES)), cols_v)
             for j in range(vectors)]
    entry = builder.block
    reload = builder.append_basic_block("tile.resume")
    start = builder.append_basic_block("tile.start")
    loop = builder.append_basic_block("tile.k")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed("!=", resume, ir.Constant(i64, 0)), reload, start)
    builder.position_at_end(reload)  # the sums so far, from C: rows past `rows` read row 0 (and are not stored)
    mload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v8, [v8.as_pointer(), i32, ir.VectorType(ir.IntType(1), _LANES), v8]),
        f"llvm.masked.load.v{_LANES}f32.p0v{_LANES}f32")
    pc = builder.inttoptr(c, bptr)
    loaded = []
    for r in range(MR):
        inside = builder.icmp_signed("<", ir.Constant(i64, r), rows)
        row = builder.bitcast(builder.gep(pc, [builder.select(inside, builder.mul(ldc, ir.Constant(i64, r)),
                                                              ir.Constant(i64, 0))]), fptr)
        for j in range(vectors):
            at = builder.bitcast(builder.gep(row, [ir.Constant(i64, _LANES * j)]), v8.as_pointer())
            loaded.append(builder.call(mload, [at, ir.Constant(i32, 4), masks[j], zero]))
    builder.branch(start)
    builder.position_at_end(start)
    initial = []
    for value in loaded:
        phi = builder.phi(v8)
        phi.add_incoming(zero, entry)
        phi.add_incoming(value, reload)
        initial.append(phi)
    builder.cbranch(builder.icmp_signed(">", k, ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)  # for kk in range(k): the MR×NR sums, one FMA per vector
    kk, sums = _k_loop_head(builder, start, initial)
    if gather:
        offsets = builder.inttoptr(ldb, i64.as_pointer())
        b_row = builder.bitcast(builder.gep(pb, [builder.load(builder.gep(offsets, [kk]))]), fptr)
    else:
        b_row = builder.bitcast(builder.gep(pb, [builder.mul(kk, ldb)]), fptr)
    bv = [builder.load(builder.bitcast(builder.gep(b_row, [ir.Constant(i64, _LANES * j)]), v8.as_pointer()),
                       align=4) for j in range(vectors)]
    a_row = builder.gep(pa, [builder.mul(kk, ir.Constant(i64, MR))])
    new = []
    for r in range(MR):
        av = _splat(builder, builder.load(builder.gep(a_row, [ir.Constant(i64, r)])))
        for j in range(vectors):
            new.append(builder.call(fma, [av, bv[j], sums[r * vectors + j]]))
    final = _k_loop_tail(builder, k, kk, sums, new, initial, start, done)
    p = {"c": builder.inttoptr(c, bptr), "ldc": ldc, "bias": builder.inttoptr(bias, fptr), "rows": rows,
         "res": builder.inttoptr(res, bptr), "ldr": ldr, "alpha": alpha}
    has_res = builder.icmp_signed("!=", res, ir.Constant(i64, 0))
    full = builder.icmp_signed("==", cols, ir.Constant(i64, _LANES * vectors))

    def by_activation(masks, with_res):  # one straight-line epilogue per activation, chosen once
        switch_activation(builder, act, IR_ACTIVATIONS, NONE,
                          lambda code, activation: _emit_epilogue(builder, final, p, masks, with_res, activation))

    def with_and_without_residual(masks):
        with builder.if_else(has_res) as (yes, no):
            with yes:
                by_activation(masks, True)
            with no:
                by_activation(masks, False)

    # the variants: full block or not (masked loads and stores), residual or not, the activation
    with builder.if_else(full) as (then_full, otherwise):
        with then_full:
            with_and_without_residual(None)
        with otherwise:
            with_and_without_residual(masks)
    return context.get_dummy_value()


# A panel's last column, where it has one (a 7² map: 49 = 3·16 + 1), runs as `_tile_columns`, BLOCKS
# row blocks a call: the narrow tile's MR broadcasts and FMAs a step for that one column made it
# cost 0.67 of a whole panel (a 1×1 layer took 1.20× the time on 49 columns that it took on 48;
# now 1.10×, 8.4 → 9.6 s of the packed GEMM's compile from an empty cache). Transposed, each sum
# is still one chain of FMAs along K (the same bits), so a call takes several blocks to have
# several chains in flight.
COLUMNS, BLOCKS = 1, 4
_COLUMNS_SIG = types.void(*[types.int64] * 14, types.float32)


def _emit_columns(builder, args, context):
    """A panel's last COLUMNS column(s) (cols) for up to BLOCKS row blocks (rows ≤ BLOCKS·MR, the
    blocks `step` bytes apart in the packed weights, their biases one after another), transposed:
    one vector per block and column ("chain"), across the block's MR rows (lane r: row r), so that
    a step of K is one load of each block's MR weights (row k of its K×MR) and, per column, one
    broadcast of X and one FMA per block. Arguments otherwise as `_emit_tile`'s. Each sum is the
    same FMAs in the same order as there (w·x and x·w are the same product), and the epilogue the
    same arithmetic: the same bits. The epilogue runs as loops over a buffer of the chains
    (straight-line, it doubled the packed GEMM's compile)."""
    a, b, ldb, k, resume, c, ldc, bias, rows, cols, res, ldr, act, step, alpha = args
    f32, i64 = ir.FloatType(), ir.IntType(64)
    v8 = ir.VectorType(f32, _LANES)
    buf = cgutils.alloca_once(builder, f32, size=BLOCKS * COLUMNS * _LANES)  # chain c: lanes c·LANES ..
    cgutils.memset(builder, buf, ir.Constant(i64, 4 * BLOCKS * COLUMNS * _LANES), 0)
    pc, pbias, pres = (builder.inttoptr(v, ir.IntType(8).as_pointer()) for v in (c, bias, res))

    def at(base, ld, i, count):
        """Value i of the chains (chain-major, then row): its address in a row-major matrix of rows
        ld bytes apart (row 0's for rows past `rows`), whether its row is one, its slot in buf,
        and its row (0 past `rows`)."""
        per = ir.Constant(i64, MR)
        r, chain = builder.urem(i, per), builder.udiv(i, per)
        j, blk = builder.urem(chain, count), builder.udiv(chain, count)
        row = builder.add(builder.mul(blk, per), r)
        inside = builder.icmp_signed("<", row, rows)
        row = builder.select(inside, row, ir.Constant(i64, 0))
        offset = builder.add(builder.mul(row, ld), builder.mul(j, ir.Constant(i64, 4)))
        slot = builder.add(builder.mul(chain, ir.Constant(i64, _LANES)), r)
        return builder.bitcast(builder.gep(base, [offset]), f32.as_pointer()), inside, slot, row
    count = COLUMNS  # (the caller's cols)
    count_v = ir.Constant(i64, count)
    values = ir.Constant(i64, BLOCKS * count * MR)
    with builder.if_then(builder.icmp_signed("!=", resume, ir.Constant(i64, 0))):  # the sums so far, from C
        with cgutils.for_range(builder, values) as loop:
            where, _, slot, _ = at(pc, ldc, loop.index, count_v)
            builder.store(builder.load(where), builder.gep(buf, [slot]))
    _emit_column_sums(builder, args, count, buf)

    def add(base, ld, is_bias=False):  # value i ← value i + base's at its row and column (the bias: at its row)
        with cgutils.for_range(builder, values) as loop:
            where, _, slot, row = at(base, ld, loop.index, count_v)
            if is_bias:
                where = builder.bitcast(builder.gep(pbias, [builder.mul(row, ir.Constant(i64, 4))]), f32.as_pointer())
            here = builder.gep(buf, [slot])
            builder.store(builder.fadd(builder.load(here), builder.load(where)), here)
    add(pbias, ir.Constant(i64, 0), is_bias=True)
    with builder.if_then(builder.icmp_signed("!=", res, ir.Constant(i64, 0))):
        add(pres, ldr)
    splat_alpha = _splat(builder, alpha)

    def activate(code, activation):
        with cgutils.for_range(builder, builder.mul(count_v, ir.Constant(i64, BLOCKS))) as loop:
            where = builder.bitcast(builder.gep(buf, [builder.mul(loop.index, ir.Constant(i64, _LANES))]), v8.as_pointer())
            builder.store(activation(builder, builder.load(where, align=4), splat_alpha), where, align=4)
    switch_activation(builder, act, IR_ACTIVATIONS, NONE,
                      lambda code, activation: activate(code, activation) if code != NONE else None)
    with cgutils.for_range(builder, values) as loop:  # stored, rows < rows
        where, inside, slot, _ = at(pc, ldc, loop.index, count_v)
        with builder.if_then(inside):
            builder.store(builder.load(builder.gep(buf, [slot])), where)
    return context.get_dummy_value()


def _emit_column_sums(builder, args, count, buf):
    """`_emit_columns`'s loop over K for `count` columns: the chains' sums, from the buffer's values
    and back into it."""
    a, b, ldb, k, resume, c, ldc, bias, rows, cols, res, ldr, act, step, alpha = args
    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    v8 = ir.VectorType(f32, _LANES)
    v8p, fptr, bptr = v8.as_pointer(), f32.as_pointer(), ir.IntType(8).as_pointer()
    i1v = ir.VectorType(ir.IntType(1), _LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), f"llvm.fma.v{_LANES}f32")
    mload = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8p, i32, i1v, v8]),
                                           f"llvm.masked.load.v{_LANES}f32.p0v{_LANES}f32")
    zero = ir.Constant(v8, [0.0] * _LANES)
    block_rows = ir.Constant(i1v, [r < MR for r in range(_LANES)])  # (a row k of a packed block: MR weights)
    pa, pb = builder.inttoptr(a, bptr), builder.inttoptr(b, bptr)
    chains = [(blk, j) for blk in range(BLOCKS) for j in range(count)]
    # block blk's weights, bytes from the first's (the first's again where the call has fewer blocks:
    # read, never stored)
    block_at = [builder.select(builder.icmp_signed("<", ir.Constant(i64, blk * MR), rows),
                               builder.mul(step, ir.Constant(i64, blk)), ir.Constant(i64, 0)) for blk in range(BLOCKS)]
    slots = [builder.bitcast(builder.gep(buf, [ir.Constant(i64, _LANES * n)]), v8p) for n in range(len(chains))]
    initial = [builder.load(slot, align=4) for slot in slots]
    start = builder.block
    loop = builder.append_basic_block("columns.k")
    done = builder.append_basic_block("columns.done")
    builder.cbranch(builder.icmp_signed(">", k, ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)
    kk, sums = _k_loop_head(builder, start, initial)
    row_k = builder.mul(kk, ir.Constant(i64, 4 * MR))
    weights = [builder.call(mload, [builder.bitcast(builder.gep(pa, [builder.add(row_k, block_at[blk])]), v8p),
                                    ir.Constant(i32, 4), block_rows, zero]) for blk in range(BLOCKS)]
    b_row = builder.gep(pb, [builder.mul(kk, ldb)])
    xs = [_splat(builder, builder.load(builder.bitcast(builder.gep(b_row, [ir.Constant(i64, 4 * j)]), fptr)))
          for j in range(count)]
    new = [builder.call(fma, [weights[blk], xs[j], s_]) for (blk, j), s_ in zip(chains, sums)]
    final = _k_loop_tail(builder, k, kk, sums, new, initial, start, done)
    for phi, slot in zip(final, slots):
        builder.store(phi, slot, align=4)


@intrinsic
def _tile_columns(typingctx, a, b, ldb, k, resume, c, ldc, bias, rows, cols, res, ldr, act, step, alpha):
    return _COLUMNS_SIG, lambda context, builder, signature, args: _emit_columns(builder, args, context)


_tile_wide, _tile_narrow = _make_tile(2 * _LANES), _make_tile(_LANES)
_gather_wide, _gather_narrow = _make_tile(2 * _LANES, gather=True), _make_tile(_LANES, gather=True)


def pack(w: np.ndarray, bias: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """W (M×K) as the micro-kernel reads it: blocks of MR rows, each K×MR (row k: the block's MR weights of
    input k), the last block padded with zero rows; and the bias in blocks of MR, likewise. (Written
    in place, one array — `out` where given: a padded copy first cost a large layer's first run its
    page faults twice.)"""
    m, k = w.shape
    blocks, whole = -(-m // MR), m // MR
    wp = np.empty((blocks, k, MR), np.float32) if out is None else out
    wp[:whole] = w[:whole * MR].reshape(whole, MR, k).transpose(0, 2, 1)
    if whole < blocks:
        wp[whole] = 0.0
        wp[whole, :, :m - whole * MR] = w[whole * MR:].T
    bp = np.zeros(blocks * MR, np.float32)
    bp[:m] = bias
    return wp, bp.reshape(blocks, MR)


def unpack(wp: np.ndarray, m: int) -> np.ndarray:
    """Packed weights (A×blocks×K×MR) back to A×M×K, as `pack` had them."""
    a, blocks, k = wp.shape[:3]
    return np.ascontiguousarray(wp.transpose(0, 1, 3, 2).reshape(a, blocks * MR, k)[:, :m])


@njit(cache=True, fastmath=FMA)
def _pack_chunk(xi, first, last, direct, xp):
    """Panels first .. last − 1 of xi (K×N) into xp, panel after panel, each K×NR (a last one of 8
    columns or fewer: K×8), zero past column N; with `direct`, only a last partial panel (the
    whole ones are read in place). Row by row: X read in its order, 16 values a copy
    (a loop per panel row would cost more than the copy)."""
    k, n = xi.shape
    full = min(last, n // NR)  # panels first .. full − 1 are whole
    if not direct:
        for kk in range(k):
            row = xi[kk]
            for q in range(first, full):
                base = (q - first) * k * NR + kk * NR
                q0 = q * NR
                for j in range(NR):
                    xp[base + j] = row[q0 + j]
    if full < last:  # the partial panel
        q0 = full * NR
        cols = n - q0
        width = NR if cols > _LANES else _LANES
        base = (full - first) * k * NR
        for kk in range(k):
            for j in range(cols):
                xp[base + kk * width + j] = xi[kk, q0 + j]
            for j in range(cols, width):
                xp[base + kk * width + j] = 0.0


@njit(cache=True, fastmath=FMA)
def _run_part(wp, bp, m, x, c, res, has_res, act, alpha, g0, g1, b0, b1, chunk, group, slices, direct, xp):
    """One thread's part of the products c[i] = act(W · x[i] + bias (+ res[i])): panels g0 .. g1 − 1
    (numbered image after image, NR columns each), row blocks b0 .. b1 − 1 (MR rows each). In
    chunks of up to `chunk` panels of one image: the chunk packed into xp (`_pack_chunk`), then
    each row block over each of its panels, so that the block's weights stay in L1, the chunk in
    L2, and W is read once per chunk. wp: A×blocks×K×MR (image i's weights: wp[i % A]),
    x: P×K×N, c and res: P×M×N."""
    k, n = x.shape[1], x.shape[2]
    panels = (n + NR - 1) // NR
    zero_bias = np.zeros(BLOCKS * MR, np.float32)  # (a slice of K but the last: its sums stored as they are)
    in_registers = act if APPLIED_IN_REGISTERS[act] else NONE
    ldc, ldr = c.strides[1], res.strides[1]
    g = g0
    while g < g1:
        i = g // panels
        first = g - i * panels
        last = min(panels, first + chunk, first + g1 - g)
        g += last - first
        _pack_chunk(x[i], first, last, direct, xp)
        wi = wp[i % wp.shape[0]]
        for m0 in range(b0, b1, group):  # row blocks m0 .. m1 − 1: their weights stay in L2
            m1 = min(b1, m0 + group)
            for q in range(first, last):  # the panel (a slice of its rows at a time) stays in L1
                q0 = q * NR
                cols = min(NR, n - q0)
                pb, ldb = xp.ctypes.data + (q - first) * k * NR * 4, NR * 4
                if direct and cols == NR:
                    pb, ldb = x.ctypes.data + i * x.strides[0] + q0 * 4, x.strides[1]
                if cols <= _LANES:
                    ldb = _LANES * 4
                for s in range(slices):
                    k0, k1 = k * s // slices, k * (s + 1) // slices
                    last_slice = s == slices - 1
                    few = cols <= COLUMNS  # (BLOCKS row blocks a call: `_tile_columns`)
                    for blk in range(m0, m1, BLOCKS if few else 1):
                        r0 = blk * MR
                        pc = c.ctypes.data + i * c.strides[0] + r0 * ldc + q0 * 4
                        pr = res.ctypes.data + i * res.strides[0] + r0 * ldr + q0 * 4 if has_res and last_slice else 0
                        a = wi[blk].ctypes.data + 4 * MR * k0
                        bias = bp[blk].ctypes.data if last_slice else zero_bias.ctypes.data
                        act_now = in_registers if last_slice else NONE
                        if few:
                            rows = min(MR * min(BLOCKS, m1 - blk), m - r0)
                            _tile_columns(a, pb + k0 * ldb, ldb, k1 - k0, k0, pc, ldc, bias, rows, cols, pr, ldr,
                                          act_now, 4 * MR * k, alpha)
                            continue
                        tile_args = (a, pb + k0 * ldb, ldb, k1 - k0, k0, pc, ldc, bias, min(MR, m - r0), cols, pr, ldr,
                                     act_now, alpha)
                        if cols > _LANES:
                            _tile_wide(*tile_args)
                        else:
                            _tile_narrow(*tile_args)
            if act != in_registers:  # on the blocks' rows of the chunk, still in cache
                for r in range(m0 * MR, min(m, m1 * MR)):
                    row = c[i, r, first * NR:min(n, last * NR)]
                    act_row(row, row, np.float32(0.0), False, act, alpha)


@njit(cache=True, fastmath=FMA, parallel=True)
def _run_parallel(threads, split_rows, wp, bp, m, x, c, res, has_res, act, alpha, chunk, group, slices, direct,
                  buffers):
    p_, k, n = x.shape
    total, blocks = p_ * ((n + NR - 1) // NR), wp.shape[1]
    for w in prange(threads):  # each thread its share of the panels, or of the row blocks; its own buffer
        g0, g1, b0, b1 = total * w // threads, total * (w + 1) // threads, 0, blocks
        if split_rows:
            g0, g1, b0, b1 = 0, total, blocks * w // threads, blocks * (w + 1) // threads
        # (one call: LLVM inlines _run_part, and a second call site was a second copy to compile)
        _run_part(wp, bp, m, x, c, res, has_res, act, alpha, g0, g1, b0, b1, chunk, group, slices, direct,
                  buffers[w])


# Products smaller than this (multiply-adds) run in the calling thread: waking the pool costs more.
_PARALLEL_MIN = 1 << 17
# A chunk of X, packed, holds at most about this much, and a group of row blocks' weights this
# much: both stay in L2 (512 KiB a core here) while the group's blocks run over the chunk's panels.
_CHUNK_BYTES = 256 << 10
_GROUP_BYTES = 192 << 10
# X is read in place, not packed, when M or K is at most this (see `Packed.plan`).
_DIRECT_MAX = 128
# Products wider than this (a 224² map's 112² Winograd tiles at batch 1) go to OpenBLAS's sgemm:
# at 16K–128K columns (Winograd at batch 8) the packed kernel took 1.0–1.2× its time (U-Net,
# batch 8: 1.13× in all), at 4K–12K 0.75–1.0×.
_MAX_COLUMNS = 12544

_NO_RES = np.zeros((1, 1, 1), np.float32)
# K is cut into slices of at most this many rows (even ones), each run over all the row blocks
# before the next: a panel's slice (K_SLICE × NR floats, 32 KiB on AVX-512) then stays in L1.
_K_SLICE = 256


def k_slices(k: int) -> int:
    """Into how many (even) slices of at most _K_SLICE rows a product's K is cut."""
    return -(-k // _K_SLICE)
_L1_SETS, _L1_WAYS, _LINE = 64, 8, 64  # a 32 KiB, 8-way L1 data cache (AMD and Intel alike)


def split_row_blocks(units: int, blocks: int, threads: int) -> bool:
    """Whether threads share a product's row blocks rather than its `units` of columns (panels, or
    output rows): the units are shared where they divide evenly or are many (at most one more for
    some threads: ≤ 1/8 more work), else the row blocks, where there are 2 a thread (each thread
    then reads all of X)."""
    return units % threads != 0 and units < 8 * threads and blocks >= 2 * threads


def _split_rows(p: int, n: int, blocks: int, threads: int) -> bool:
    """Whether threads share a product's row blocks rather than its panels (P images of n columns,
    NR a panel; a last one of LANES columns or fewer costs half): where sharing the panels would
    leave one thread 10% more than an even share, and there are 2 row blocks a thread. Each
    thread then reads (and packs) all of X, which costs less than the imbalance. In-process A/B,
    2 threads, AVX2 (NR = 16), batch 1, rows against panels: 7² maps (4 panels, the last of one
    column: 2 against 1.5) 0.91–0.93× the time for K, M of 512 to 2048 (0.98× for K = 2048,
    M = 512); 14² (12.5 panels: 7 against 5.5) 0.99×; at batch 8, 7² (32 panels) 1.03×: kept."""
    if blocks < 2 * threads:
        return False
    panels, last = -(-n // NR), n % NR
    cost = [1.0] * panels
    if 0 < last <= _LANES:
        cost[-1] = 0.5
    total = p * panels
    share = max(sum(cost[g % panels] for g in range(total * w // threads, total * (w + 1) // threads))
                for w in range(threads))
    return share > 1.1 * p * sum(cost) / threads


def _panel_fits_l1(k: int, n: int, m: int) -> bool:
    """Whether a panel read in place, K rows of X n floats apart, can stay in L1 (or near enough,
    for a product of M rows): rows a multiple of 64 bytes apart fall into 64 / gcd(lines apart, 64)
    of its sets, 8 lines each. A power-of-two row length puts them all in one set (U-Net at batch
    8: Winograd's 131,072-tile rows, 2.7× the time of packing them). Up to twice as many rows as
    ways where M ≤ 64: the few row blocks reading each panel did not pay for packing it
    (EfficientNet-B0's 144 → 24 on 56²: 0.61× the time read in place, 256 → 64 0.85×; with M
    of 96 or 128, 1.07×)."""
    stride = 4 * n
    if stride % _LINE:
        return True
    sets = _L1_SETS // math.gcd(stride // _LINE, _L1_SETS)
    return k <= _L1_WAYS * sets * (2 if m <= 64 else 1)


class Packed:
    """A layer's weights W (M×K, or A×M×K: image i of a product takes W[i % A]) and bias (M), packed
    once (`pack`); `plan` runs products with them."""

    def __init__(self, w: np.ndarray, bias: np.ndarray):
        stack = w.reshape((-1,) + w.shape[-2:])
        self.m, self.k = stack.shape[1:]
        # (each W packed in its place in one array, not stacked: np.stack's copy of Winograd's 16 or
        # 36 packed weights was 0.7 s of YOLOv1's first run)
        wp = np.empty((len(stack), -(-self.m // MR), self.k, MR), np.float32)
        for i, wi in enumerate(stack):
            _, bp = pack(wi, bias, wp[i])
        self.wp, self.bp = constant(wp), constant(bp)

    def plan(self, p: int, n: int, *, residual: bool, act: int, alpha: float, threads: int):
        """A function run(x, c, res=None, wp=None) → c: c[i] = act(W[i % A] · x[i] + bias (+ res[i])) for
        x: P×K×N, c (and res): P×M×N, rows of unit stride. `wp`: per-image weights in place of the
        layer's (`gated`). Decided once, here: whether X is packed, the chunk and group sizes, and
        how the threads share the work."""
        if n > _MAX_COLUMNS:
            return self._blas_plan(p, n, residual=residual, act=act, alpha=alpha, threads=threads)
        panels = -(-n // NR)
        chunk = max(1, _CHUNK_BYTES // (self.k * NR * 4))
        group = max(1, _GROUP_BYTES // (self.k * MR * 4))
        slices = k_slices(self.k)
        blocks = -(-self.m // MR)
        # X read where it lies, not packed, where few row blocks share a panel or a panel is short
        # (K small): then packing costs more than it saves (measured, hot, on the zoo's shapes:
        # packed 1.1–1.4× the time of in place for M ≤ 64; in place 1.0–1.1× for M, K > 128)
        direct = (self.m <= _DIRECT_MAX or self.k <= _DIRECT_MAX) and _panel_fits_l1(self.k, n, self.m)
        if p * self.m * n * self.k < _PARALLEL_MIN:
            threads = 1
        split_rows = _split_rows(p, n, blocks, threads)

        def run(x, c, res=None, wp=None):
            args = (self.wp if wp is None else wp, self.bp, self.m, x, c, _NO_RES if res is None else res,
                    res is not None, act, np.float32(alpha))
            buffers = scratch("panels", threads * chunk * self.k * NR).reshape(threads, chunk * self.k * NR)
            if threads == 1:
                _run_part(*args, 0, p * panels, 0, blocks, chunk, group, slices, direct, buffers[0])
            else:
                _run_parallel(threads, split_rows, *args, chunk, group, slices, direct, buffers)
            return c
        return run

    def _blas_plan(self, p: int, n: int, *, residual: bool, act: int, alpha: float, threads: int):
        """`plan` for products wider than _MAX_COLUMNS: OpenBLAS's sgemm in blocks (`gemm`), on
        the weights unpacked (per-image weights too)."""
        bias = np.ascontiguousarray(self.bp.reshape(1, -1)[:, :self.m])  # (the blocks' padding dropped)
        product = gemm.plan((p, self.m, n, self.k), bias=bias, residual=residual, act=act, alpha=alpha,
                            threads=threads)
        weights = unpack(self.wp, self.m)

        def run(x, c, res=None, wp=None):
            return product(weights if wp is None else unpack(wp, self.m), x, c, res)
        return run

    def gated(self, gate: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The packed weights with input channel k scaled by gate[i, k], per image i (a fused
        squeeze-excitation gate, P×K) → out: P×blocks×K×MR."""
        _gate_weights(self.wp[0], gate, out)
        return out


@njit(cache=True, fastmath=FMA)
def _gate_weights(wp, gate, out):
    """out[i, b, k, r] = wp[b, k, r] · gate[i, k]: the gate spread over a block's K×MR layout once per
    image, then each block scaled by it in one long loop (a loop of MR per input would not vectorise)."""
    blocks, k = wp.shape[0], wp.shape[1]
    spread = np.empty(k * MR, np.float32)
    src = wp.reshape(blocks, k * MR)
    for i in range(out.shape[0]):
        for kk in range(k):
            for r in range(MR):
                spread[kk * MR + r] = gate[i, kk]
        dst = out[i].reshape(blocks, k * MR)
        for b in range(blocks):
            s, d = src[b], dst[b]
            for j in range(k * MR):
                d[j] = s[j] * spread[j]
