"""Activation epilogues shared by the pointwise kernels and the fused convolution epilogues.

`act_row(src, dst, b, has_bias, act, alpha)` writes dst[i] = act(src[i] (+ b)) over one contiguous
row; the standalone activation kernels run this same code (float32), so a fused epilogue gives
bit-for-bit the value the separate bias add and activation would. `src` may be `dst`. The
micro-kernels that apply an activation in registers (packed.py, implicit.py) emit the same IR
(`IR_ACTIVATIONS`), so their results carry the same bits.

Why LLVM IR, not Numba Python: act_row is inlined into a dozen kernels, and Numba's inlining
types the callee anew at every call site. Written in Python (nine loops, exp helpers inlined into
four of them) each call site cost about 4 s of Numba's compile time, a third of ResNet-50's first
compile; as an intrinsic it costs LLVM's time only. The loops run 8 floats per AVX2 instruction
(the last partial vector masked). The transcendental activations use a float32 exp written out
in arithmetic (Cephes expf: ~1 ulp where the result is a normal float, 0 / inf / NaN exactly
where e^x is), not a scalar libm call per element.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import LANES

NONE, RELU, RELU6, LEAKY_RELU, ELU, SILU, HARDSWISH, SIGMOID, TANH = range(9)

# Numba flags of the kernels that multiply and add: a·b + c may become one fused multiply-add
# (one rounding instead of two: as accurate or more, and twice the arithmetic per instruction),
# nothing else of fastmath (no reassociation, NaN and inf kept).
FMA = {"contract"}

# elementwise activation op → its code here (every one but identity, whose code is NONE)
CODES = {"relu": RELU, "relu6": RELU6, "leaky_relu": LEAKY_RELU, "elu": ELU, "silu": SILU, "hardswish": HARDSWISH,
         "sigmoid": SIGMOID, "tanh": TANH}


def activation_code(op: str | None) -> int:
    """The code of a fused epilogue's activation (ops/fused.py `activation`); None: no activation."""
    return NONE if op in (None, "identity") else CODES[op]


# --- constants of the float32 exp ----------------------------------------------------------------
_F = np.float32
_LO, _HI = _F(-110.0), _F(90.0)  # e^x rounds to 0 below −103.98 and overflows above 88.73: clamping
#                                  there changes no result and keeps n within [−159, 130]
_SAT_LO, _SAT_HI = _F(-87.0), _F(89.0)  # `_exp_sat`'s range: e^−87 ≈ 1.6e−38 is still a normal float
_LOG2E = _F(1.44269504088896341)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)  # ln 2 in two parts (Cody–Waite): n·_LN2_HI is exact
_ROUND = _F(12582912.0)  # 1.5·2^23: (v + _ROUND) − _ROUND rounds v to the nearest integer (|v| < 2^22)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)  # Cephes expf
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
# tanh as a 13/6-degree rational function of x (Eigen's `ptanh_float`, Gonnet 2014: within a few ulps),
# odd numerator and even denominator in x², highest coefficient first; |x| clamped where it is ±1
_TANH_CLAMP = 7.99881172180175781  # (with FMAs: the smallest |x| at which it gives exactly 1)
_TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
           1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
_TANH_TINY = 0.0004  # below this |x|, tanh(x) is x (the rational function loses a few ulps there)

# --- the activations in LLVM IR ------------------------------------------------------------------
# Each maps a float32 vector v of LANES lanes (and alpha, a vector) to act(v).
_LANES = LANES  # (8, or 16 on AVX-512: the package's `_host_lanes`)


def _vec(value):
    return ir.Constant(ir.VectorType(ir.FloatType(), _LANES), [float(value)] * _LANES)


def _fma(builder, a, b, c):
    v8 = a.type
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), f"llvm.fma.v{_LANES}f32")
    return builder.call(fma, [a, b, c])


def _min(builder, v, bound):  # v if v < bound, else bound (v is never NaN here)
    return builder.select(builder.fcmp_ordered("<", v, _vec(bound)), v, _vec(bound))


def _pow2(builder, n):
    """2^n for integer-valued n in [−126, 127] (n = 128 gives inf), from its exponent bits."""
    i32v = ir.VectorType(ir.IntType(32), _LANES)
    bits = builder.shl(builder.add(builder.fptosi(n, i32v), ir.Constant(i32v, [127] * _LANES)),
                       ir.Constant(i32v, [23] * _LANES))
    return builder.bitcast(bits, n.type)


def _reduce(builder, x, lo, hi):
    """(q, n) with e^t = (1 + q)·2^n, |q| < 0.42, for t = x clamped to [lo, hi]; NaN gives q = NaN
    (a NaN is clamped to lo, so the integer conversion sees a number, then put back)."""
    t = builder.select(builder.fcmp_ordered(">", x, _vec(lo)), x, _vec(lo))
    t = _min(builder, t, hi)
    n = builder.fsub(_fma(builder, t, _vec(_LOG2E), _vec(_ROUND)), _vec(_ROUND))
    minus_n = builder.fsub(_vec(-0.0), n)
    r = _fma(builder, minus_n, _vec(_LN2_HI), t)  # |r| ≤ ln2 / 2
    r = _fma(builder, minus_n, _vec(_LN2_LO), r)
    q = _vec(_P0)
    for coefficient in (_P1, _P2, _P3, _P4, _P5):
        q = _fma(builder, q, r, _vec(coefficient))
    q = _fma(builder, q, builder.fmul(r, r), r)
    return builder.select(builder.fcmp_ordered("==", x, x), q, x), n


def _one_plus_exp(builder, x):
    """1 + e^x for a sigmoid or SiLU: (1 + q)·2^n + 1, one power of two. Below −87 e^x stays at
    e^−87 (1 + e^−87 is 1, as 1 + e^x is); from x ≈ 88.4 on it is inf (2^128), though e^x is
    finite up to 88.72: there a sigmoid of 3e−39 becomes 0, a SiLU of −3e−37 becomes −0."""
    q, n = _reduce(builder, x, _SAT_LO, _SAT_HI)
    return _fma(builder, builder.fadd(_vec(1), q), _pow2(builder, n), _vec(1))


def _expm1(builder, x):
    """e^x − 1 = 2^n2·(q·2^n1 + 2^n1 − 2^−n2), with n = n1 + n2 split in two halves so that each
    power of two is a normal float and the result overflows to inf, and underflows gradually,
    exactly where e^x does; accurate near 0 too (there n1 = n2 = 0 and the result is q itself)."""
    q, n = _reduce(builder, x, _LO, _HI)
    n1 = builder.fsub(_fma(builder, n, _vec(0.5), _vec(_ROUND)), _vec(_ROUND))
    n2 = builder.fsub(n, n1)
    s1 = _pow2(builder, n1)
    return builder.fmul(_pow2(builder, n2),
                        _fma(builder, q, s1, builder.fsub(s1, _pow2(builder, builder.fsub(_vec(-0.0), n2)))))


def _ir_none(builder, v, alpha):
    return v


def _ir_relu(builder, v, alpha):  # v where v > 0 or NaN, else 0 (NaN stays NaN, as np.maximum)
    return builder.select(builder.fcmp_unordered(">", v, _vec(0)), v, _vec(0))


def _ir_relu6(builder, v, alpha):  # clamped to [0, 6], NaN kept
    low = builder.select(builder.fcmp_ordered("<", v, _vec(0)), _vec(0), v)
    return builder.select(builder.fcmp_ordered(">", low, _vec(6)), _vec(6), low)


def _ir_leaky_relu(builder, v, alpha):
    return builder.select(builder.fcmp_ordered(">", v, _vec(0)), v, builder.fmul(v, alpha))


def _ir_elu(builder, v, alpha):
    return builder.select(builder.fcmp_ordered(">", v, _vec(0)), v, builder.fmul(alpha, _expm1(builder, v)))


def _ir_silu(builder, v, alpha):  # v / (1 + e^−v): e^−v = inf for v ≤ −88.4 gives −0.0, not NaN
    return builder.fdiv(v, _one_plus_exp(builder, builder.fsub(_vec(-0.0), v)))


def _ir_hardswish(builder, v, alpha):  # v · clamp(v + 3, 0, 6) / 6
    r = builder.fadd(v, _vec(3))
    r = builder.select(builder.fcmp_ordered("<", r, _vec(0)), _vec(0), r)
    r = builder.select(builder.fcmp_ordered(">", r, _vec(6)), _vec(6), r)
    return builder.fdiv(builder.fmul(v, r), _vec(6))


def _ir_sigmoid(builder, v, alpha):
    return builder.fdiv(_vec(1), _one_plus_exp(builder, builder.fsub(_vec(-0.0), v)))


def _ir_tanh(builder, v, alpha):
    """x·P(x²) / Q(x²) (`_TANH_P`, `_TANH_Q`), x = v clamped to ±_TANH_CLAMP (±1 from there on, inf
    too); v itself where |v| < _TANH_TINY. Against expm1(2x) / (expm1(2x) + 2): 2.2× the rate (act_row
    over a long run), none of its exponent arithmetic. A NaN fails every test and stays."""
    x = builder.select(builder.fcmp_ordered(">", v, _vec(_TANH_CLAMP)), _vec(_TANH_CLAMP), v)
    x = builder.select(builder.fcmp_ordered("<", x, _vec(-_TANH_CLAMP)), _vec(-_TANH_CLAMP), x)
    x2 = builder.fmul(x, x)

    def polynomial(coefficients):
        value = _vec(coefficients[0])
        for coefficient in coefficients[1:]:
            value = _fma(builder, x2, value, _vec(coefficient))
        return value
    ratio = builder.fdiv(builder.fmul(x, polynomial(_TANH_P)), polynomial(_TANH_Q))
    tiny = builder.and_(builder.fcmp_ordered(">", v, _vec(-_TANH_TINY)), builder.fcmp_ordered("<", v, _vec(_TANH_TINY)))
    return builder.select(tiny, v, ratio)


ACTIVATIONS = {NONE: _ir_none, RELU: _ir_relu, RELU6: _ir_relu6, LEAKY_RELU: _ir_leaky_relu, ELU: _ir_elu,
               SILU: _ir_silu, HARDSWISH: _ir_hardswish, SIGMOID: _ir_sigmoid, TANH: _ir_tanh}
# the ones the GEMM micro-kernels apply in registers (packed.py): the cheap ones, and SiLU
# (EfficientNet's 1×1 layers); each more costs every micro-kernel variant its compile time
IR_ACTIVATIONS = {code: ACTIVATIONS[code] for code in (NONE, RELU, RELU6, LEAKY_RELU, SILU)}


def switch_activation(builder, code, activations: dict, default: int, emit) -> None:
    """LLVM IR choosing by the activation code `code` (an i64): a block per code of `activations`
    running emit(code, activation), `default`'s for any other code; all continue after it."""
    done = builder.append_basic_block("act.chosen")
    fallback = builder.append_basic_block(f"act.{default}")
    switch = builder.switch(code, fallback)
    for number, activation in activations.items():
        block = fallback if number == default else builder.append_basic_block(f"act.{number}")
        if number != default:
            switch.add_case(ir.Constant(ir.IntType(64), number), block)
        builder.position_at_end(block)
        emit(number, activation)
        builder.branch(done)
    builder.position_at_end(done)


# --- act_row ---------------------------------------------------------------------------------------

def _emit_rows(builder, activation, src, dst, n, bias, alpha, add_bias):
    """The loop dst[i] = activation(src[i] + bias) for i < n, 8 lanes at a time, the last partial
    vector through masked loads and stores. `add_bias`: an i1, whether to add it (for NONE,
    whose copy keeps −0; the others add bias, +0 without one, as the unfused ops' rounding)."""
    f32, i64, i32 = ir.FloatType(), ir.IntType(64), ir.IntType(32)
    v8 = ir.VectorType(f32, _LANES)
    v8p = v8.as_pointer()
    i1v = ir.VectorType(ir.IntType(1), _LANES)
    align = ir.Constant(i32, 4)
    mload = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v8, [v8p, i32, i1v, v8]), f"llvm.masked.load.v{_LANES}f32.p0v{_LANES}f32")
    mstore = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [v8, v8p, i32, i1v]), f"llvm.masked.store.v{_LANES}f32.p0v{_LANES}f32")

    def compute(v):
        w = builder.fadd(v, bias)
        return activation(builder, w if add_bias is None else builder.select(add_bias, w, v), alpha)

    eight = ir.Constant(i64, _LANES)
    entry = builder.block
    loop = builder.append_basic_block("act.loop")
    tail = builder.append_basic_block("act.tail")
    last = builder.append_basic_block("act.last")
    done = builder.append_basic_block("act.done")
    builder.cbranch(builder.icmp_signed("<=", eight, n), loop, tail)
    builder.position_at_end(loop)
    i = builder.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    v = builder.load(builder.bitcast(builder.gep(src, [i]), v8p), align=4)
    builder.store(compute(v), builder.bitcast(builder.gep(dst, [i]), v8p), align=4)
    following = builder.add(i, eight)
    i.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<=", builder.add(following, eight), n), loop, tail)
    builder.position_at_end(tail)
    at = builder.phi(i64)
    at.add_incoming(ir.Constant(i64, 0), entry)
    at.add_incoming(following, loop)
    builder.cbranch(builder.icmp_signed("<", at, n), last, done)
    builder.position_at_end(last)  # the lanes at + j < n
    lanes = ir.Constant(ir.VectorType(i64, _LANES), list(range(_LANES)))
    at_v = builder.insert_element(ir.Constant(ir.VectorType(i64, _LANES), ir.Undefined), at, ir.Constant(i32, 0))
    at_v = builder.shuffle_vector(at_v, at_v, ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES))
    n_v = builder.insert_element(ir.Constant(ir.VectorType(i64, _LANES), ir.Undefined), n, ir.Constant(i32, 0))
    n_v = builder.shuffle_vector(n_v, n_v, ir.Constant(ir.VectorType(i32, _LANES), [0] * _LANES))
    mask = builder.icmp_signed("<", builder.add(at_v, lanes), n_v)
    v = builder.call(mload, [builder.bitcast(builder.gep(src, [at]), v8p), align, mask, _vec(0)])
    builder.call(mstore, [compute(v), builder.bitcast(builder.gep(dst, [at]), v8p), align, mask])
    builder.branch(done)
    builder.position_at_end(done)


def _emit_strided(builder, activation, src, src_step, dst, dst_step, n, bias, alpha, add_bias):
    """`_emit_rows` for rows whose elements are src_step and dst_step bytes apart (a column of a
    matrix): one element at a time, in lane 0 of a vector, so with the same arithmetic."""
    f32, i32 = ir.FloatType(), ir.IntType(32)
    bptr = ir.IntType(8).as_pointer()
    src, dst = builder.bitcast(src, bptr), builder.bitcast(dst, bptr)
    zero = ir.Constant(i32, 0)
    with cgutils.for_range(builder, n) as loop:
        i = loop.index
        x = builder.load(builder.bitcast(builder.gep(src, [builder.mul(i, src_step)]), f32.as_pointer()))
        v = builder.insert_element(_vec(0), x, zero)
        w = builder.fadd(v, bias)
        y = activation(builder, w if add_bias is None else builder.select(add_bias, w, v), alpha)
        builder.store(builder.extract_element(y, zero),
                      builder.bitcast(builder.gep(dst, [builder.mul(i, dst_step)]), f32.as_pointer()))


def _splat(builder, x):
    v8 = ir.VectorType(x.type, _LANES)
    lane0 = builder.insert_element(ir.Constant(v8, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(lane0, lane0, ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES))


@intrinsic
def act_row(typingctx, src, dst, b, has_bias, act, alpha):
    """dst[i] = act(src[i] + b) for every i (b only where has_bias); src and dst float32, 1-d, of
    one length (contiguous, or not: a column); act an activation code (another is taken as
    TANH), alpha its parameter (Leaky ReLU's slope, ELU's alpha)."""
    for a in (src, dst):
        if not (isinstance(a, types.Array) and a.ndim == 1 and a.dtype == types.float32):
            return None
    signature = types.none(src, dst, b, has_bias, act, alpha)
    contiguous = src.layout == "C" and dst.layout == "C"

    def codegen(context, builder, sig, args):
        source = context.make_array(sig.args[0])(context, builder, args[0])
        target = context.make_array(sig.args[1])(context, builder, args[1])
        n = builder.extract_value(target.shape, 0)
        with_bias = context.cast(builder, args[3], sig.args[3], types.boolean)
        bias = builder.select(with_bias, context.cast(builder, args[2], sig.args[2], types.float32),
                              ir.Constant(ir.FloatType(), 0.0))
        alpha_v = _splat(builder, context.cast(builder, args[5], sig.args[5], types.float32))
        code = context.cast(builder, args[4], sig.args[4], types.int64)

        def by_activation(emit):
            switch_activation(builder, code, ACTIVATIONS, TANH,
                              lambda number, activation: emit(activation, with_bias if number == NONE else None))

        def rows(activation, add_bias):
            _emit_rows(builder, activation, source.data, target.data, n, _splat(builder, bias), alpha_v, add_bias)

        def strided(activation, add_bias):
            _emit_strided(builder, activation, source.data, builder.extract_value(source.strides, 0), target.data,
                          builder.extract_value(target.strides, 0), n, _splat(builder, bias), alpha_v, add_bias)

        if contiguous:
            by_activation(rows)
        else:
            four = ir.Constant(ir.IntType(64), 4)
            unit = builder.and_(builder.icmp_signed("==", builder.extract_value(source.strides, 0), four),
                                builder.icmp_signed("==", builder.extract_value(target.strides, 0), four))
            with builder.if_else(unit) as (then, otherwise):
                with then:
                    by_activation(rows)
                with otherwise:
                    by_activation(strided)
        return context.get_dummy_value()
    return signature, codegen
