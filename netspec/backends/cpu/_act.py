"""Activation epilogues shared by the pointwise kernels and the fused convolution epilogues.

`act_row(src, dst, b, has_bias, act, alpha)` writes dst[i] = act(src[i] (+ b)) over one contiguous
row; the standalone activation kernels run this same code (float32), so a fused epilogue gives
bit-for-bit the value the separate bias add and activation would. `src` may be `dst`.

Speed: every loop below runs over `range(n)` from 0 with a branch-free body, so LLVM vectorises it
(8 floats per AVX2 instruction). `np.exp`/`np.tanh`/`np.expm1` would be one scalar libm call per
element (Numba keeps them calls without fastmath), so the transcendental activations use `_exp_q`,
a float32 exp written out in arithmetic LLVM can vectorise (Cephes expf: ~1 ulp where the result
is a normal float, 0 / inf / NaN exactly where e^x is).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

NONE, RELU, RELU6, LEAKY_RELU, ELU, SILU, HARDSWISH, SIGMOID, TANH = range(9)

# Numba flags of the kernels that multiply and add: a·b + c may become one fused multiply-add
# (one rounding instead of two: as accurate or more, and twice the arithmetic per instruction),
# nothing else of fastmath (no reassociation, NaN and inf kept). Used by every kernel that runs
# act_row, so a fused epilogue and the standalone activation compile the same arithmetic.
FMA = {"contract"}

# elementwise activation op → its code here (every one but identity, whose code is NONE)
CODES = {"relu": RELU, "relu6": RELU6, "leaky_relu": LEAKY_RELU, "elu": ELU, "silu": SILU, "hardswish": HARDSWISH,
         "sigmoid": SIGMOID, "tanh": TANH}


def activation_code(op: str | None) -> int:
    """The code of a fused epilogue's activation (ops/fused.py `activation`); None: no activation."""
    return NONE if op in (None, "identity") else CODES[op]


# --- a vectorisable float32 exp ----------------------------------------------------------------
# (float32 globals: Numba types a Python float as float64, which would widen the whole loop)
_F = np.float32
_ZERO, _HALF, _ONE, _TWO, _SIX = _F(0.0), _F(0.5), _F(1.0), _F(2.0), _F(6.0)
_LO, _HI = _F(-110.0), _F(90.0)  # e^x rounds to 0 below −103.98 and overflows above 88.73: clamping
#                                  there changes no result and keeps n within [−159, 130]
_SAT_LO, _SAT_HI = _F(-87.0), _F(89.0)  # `_exp_sat`'s range: e^−87 ≈ 1.6e−38 is still a normal float
_LOG2E = _F(1.44269504088896341)
_LN2_HI, _LN2_LO = _F(0.693359375), _F(-2.12194440e-4)  # ln 2 in two parts (Cody–Waite): n·_LN2_HI is exact
_ROUND = _F(12582912.0)  # 1.5·2^23: (v + _ROUND) − _ROUND rounds v to the nearest integer (|v| < 2^22)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)  # Cephes expf
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_TANH_MAX, _TANH_NEG = _F(9.0), _F(-9.0)  # tanh(9) = 1 − 3e−8 rounds to 1 in float32


@intrinsic
def _pow2(typingctx, n):
    """2^n as float32 for an integer-valued float32 n in [−126, 127] (and n = 128 gives inf), built
    from its exponent bits (an int → float bit cast, which Numba has no scalar operation for)."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(k, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _div(typingctx, a, b):
    """a / b in float32, IEEE (no Python ZeroDivisionError test: that branch would stop the loop
    vectorising; the callers' error model is theirs, e.g. conv.py's, so `/` cannot be trusted)."""
    if a != types.float32 or b != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return types.float32(types.float32, types.float32), codegen


@njit(cache=True, fastmath=FMA, inline="always")
def _reduce(x, lo, hi):
    """(q, n) with e^t = (1 + q)·2^n, |q| < 0.42, for t = x clamped to [lo, hi]. NaN gives q = NaN."""
    t = x if x > lo else lo  # (a NaN becomes lo here, so the integer conversion sees a number…)
    t = t if t < hi else hi
    n = (t * _LOG2E + _ROUND) - _ROUND
    r = (t - n * _LN2_HI) - n * _LN2_LO  # |r| ≤ ln2 / 2
    q = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r
    return (q if x == x else x), n  # (…and comes back here)


@njit(cache=True, fastmath=FMA, inline="always")
def _exp_q(x):
    """(q, n1, n2) with e^x = (1 + q)·2^n1·2^n2, |q| < 0.42: n = n1 + n2 is split in two halves so
    that each power of two is a normal float and the products overflow to inf, and underflow
    gradually, exactly where e^x does. NaN gives q = NaN."""
    q, n = _reduce(x, _LO, _HI)
    n1 = (n * _HALF + _ROUND) - _ROUND
    return q, n1, n - n1


@njit(cache=True, fastmath=FMA, inline="always")
def _exp_sat(x):
    """e^x for 1 + e^x in a sigmoid or SiLU: (1 + q)·2^n with one power of two, not `_exp_q`'s two
    (SiLU 20% faster; the same bits wherever e^x is a normal float). Below −87 it stays at e^−87
    (1 + e^−87 is 1, as 1 + e^x is); from x ≈ 88.4 on it is inf (2^128), though e^x is finite up
    to 88.72: there a sigmoid of 3e−39 becomes 0, a SiLU of −3e−37 becomes −0."""
    q, n = _reduce(x, _SAT_LO, _SAT_HI)
    return (_ONE + q) * _pow2(n)


@njit(cache=True, fastmath=FMA, inline="always")
def _expm1(x):
    """e^x − 1 = 2^n2·(q·2^n1 + 2^n1 − 2^−n2), accurate near 0 too: there n1 = n2 = 0 and the
    result is q itself (no 1 − 1 cancelling); no select, so the loop stays vectorised."""
    q, n1, n2 = _exp_q(x)
    s1 = _pow2(n1)
    return _pow2(n2) * (q * s1 + (s1 - _pow2(-n2)))


@njit(cache=True, fastmath=FMA, inline="always")
def _tanh(x):
    """expm1(2x) / (expm1(2x) + 2): no cancellation for small |x|; |x| is capped at 9, where
    float32 tanh is already ±1 (inf / inf would be NaN)."""
    t = _TANH_MAX if x > _TANH_MAX else x  # (a NaN fails both tests and stays)
    t = _TANH_NEG if t < _TANH_NEG else t
    e = _expm1(t + t)
    return _div(e, e + _TWO)


# --- the same activations in LLVM IR --------------------------------------------------------------
# For micro-kernels that apply the activation in registers (packed.py): act_row's arithmetic,
# operation for operation, with a fused multiply-add exactly where Numba's `contract` makes one,
# so the bits are act_row's. Each maps an 8-lane float32 vector v (and alpha, an 8-lane vector)
# to act(v); IR_ACTIVATIONS lists them by activation code.


def _vec(value):
    return ir.Constant(ir.VectorType(ir.FloatType(), 8), [float(value)] * 8)


def _fma(builder, a, b, c):
    v8 = a.type
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f32")
    return builder.call(fma, [a, b, c])


def _ir_none(builder, v, alpha):
    return v


def _ir_relu(builder, v, alpha):  # v where v > 0 or NaN, else 0
    return builder.select(builder.fcmp_unordered(">", v, _vec(0)), v, _vec(0))


def _ir_relu6(builder, v, alpha):  # clamped to [0, 6], NaN kept
    low = builder.select(builder.fcmp_ordered("<", v, _vec(0)), _vec(0), v)
    return builder.select(builder.fcmp_ordered(">", low, _vec(6)), _vec(6), low)


def _ir_leaky_relu(builder, v, alpha):
    return builder.select(builder.fcmp_ordered(">", v, _vec(0)), v, builder.fmul(v, alpha))


def _ir_silu(builder, v, alpha):
    """v / (1 + e^−v), e^−v as `_exp_sat` has it, (1 + q)·2^n; 1 + (1 + q)·2^n one multiply-add."""
    x = builder.fsub(_vec(-0.0), v)
    t = builder.select(builder.fcmp_ordered(">", x, _vec(_SAT_LO)), x, _vec(_SAT_LO))
    t = builder.select(builder.fcmp_ordered("<", t, _vec(_SAT_HI)), t, _vec(_SAT_HI))
    n = builder.fsub(_fma(builder, t, _vec(_LOG2E), _vec(_ROUND)), _vec(_ROUND))
    minus_n = builder.fsub(_vec(-0.0), n)
    r = _fma(builder, minus_n, _vec(_LN2_HI), t)
    r = _fma(builder, minus_n, _vec(_LN2_LO), r)
    q = _vec(_P0)
    for coefficient in (_P1, _P2, _P3, _P4, _P5):
        q = _fma(builder, q, r, _vec(coefficient))
    q = _fma(builder, q, builder.fmul(r, r), r)
    q = builder.select(builder.fcmp_ordered("==", x, x), q, x)
    i32v = ir.VectorType(ir.IntType(32), 8)
    bits = builder.shl(builder.add(builder.fptosi(n, i32v), ir.Constant(i32v, [127] * 8)),
                       ir.Constant(i32v, [23] * 8))
    two_n = builder.bitcast(bits, v.type)
    return builder.fdiv(v, _fma(builder, builder.fadd(_vec(1), q), two_n, _vec(1)))


IR_ACTIVATIONS = {NONE: _ir_none, RELU: _ir_relu, RELU6: _ir_relu6, LEAKY_RELU: _ir_leaky_relu, SILU: _ir_silu}


# --- the activations ---------------------------------------------------------------------------


@njit(cache=True, fastmath=FMA, inline="always")
def act_row(src, dst, b, has_bias, act, alpha):
    if act == NONE:
        if has_bias:
            for i in range(dst.shape[0]):
                dst[i] = src[i] + b
        else:
            for i in range(dst.shape[0]):  # (callers working in place skip the call)
                dst[i] = src[i]
    else:
        _act(src, dst, b if has_bias else _ZERO, act, alpha)


@njit(cache=True, fastmath=FMA, inline="always")
def _act(src, dst, b, act, alpha):
    # One loop per activation, the test on `act` outside it; selects, not branches, inside. Every
    # loop reads v = src[i] + b, with b = +0 when there is no bias: then a result equal to the
    # input it read (relu of a positive value, in place) is still a new value to LLVM, which
    # would otherwise drop that store and leave a conditional one, unvectorised (7x slower). The
    # only value + 0 changes is −0 (to +0).
    n = dst.shape[0]
    if act == RELU:
        for i in range(n):
            v = src[i] + b
            dst[i] = v if (v > _ZERO or v != v) else _ZERO  # NaN stays NaN, as np.maximum
    elif act == RELU6:
        for i in range(n):
            v = src[i] + b
            v = _ZERO if v < _ZERO else v
            dst[i] = _SIX if v > _SIX else v
    elif act == LEAKY_RELU:
        s = _F(alpha)
        for i in range(n):
            v = src[i] + b
            dst[i] = v if v > _ZERO else v * s
    elif act == ELU:
        a = _F(alpha)
        for i in range(n):
            v = src[i] + b
            dst[i] = v if v > _ZERO else a * _expm1(v)
    elif act == SILU:
        for i in range(n):
            v = src[i] + b
            dst[i] = _div(v, _ONE + _exp_sat(-v))  # e^−v = inf for v ≤ −88.4: −0.0, not NaN
    elif act == HARDSWISH:
        for i in range(n):
            v = src[i] + b
            r = v + _F(3.0)
            r = _ZERO if r < _ZERO else r
            r = _SIX if r > _SIX else r
            dst[i] = v * r / _SIX  # (a constant divisor: no zero test)
    elif act == SIGMOID:
        for i in range(n):
            dst[i] = _div(_ONE, _ONE + _exp_sat(-(src[i] + b)))
    else:  # TANH
        for i in range(n):
            dst[i] = _tanh(src[i] + b)
