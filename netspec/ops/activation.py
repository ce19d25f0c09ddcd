"""Activations and dropout: shape-preserving, parameter-free, no MACs."""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from .fields import Float, Int, PosInt
from .registry import (Attrs, Backward, GradArgs, NoAttrs, OpDef, ShapeError, register, uses_inputs, uses_nothing,
                       uses_output)


def _same_shape(a, inputs):
    return inputs[0]


def _activation(name: str, doc: str, attrs=NoAttrs, aliases=(), category="activation", reference=None,
                backward=None) -> None:
    """An elementwise op: at most one attribute, a float (what a fused epilogue carries as `alpha`)."""
    register(OpDef(name=name, category=category, attrs=attrs, shape=_same_shape, doc=doc, aliases=aliases,
                   reference=reference, backward=backward, elementwise=True, memory="in_place"))


def _elementwise(f):
    """A reference applying f(x, attrs) to the single input, in float64; the result in the input's dtype."""
    def reference(a, inputs, params, ctx):
        return np.asarray(f(inputs[0].astype(np.float64), a)).astype(inputs[0].dtype)
    return reference


def _of_input(derivative):
    """A backward rule dy · f'(x), f'(x, attrs) computed from the forward input x (in float64)."""
    def rule(a, g: GradArgs):
        return g.dy.astype(np.float64) * derivative(g.inputs[0].astype(np.float64), a)
    return Backward(rule, uses=uses_inputs)


def _of_output(derivative):
    """A backward rule dy · f'(x), f'(y, attrs) computed from the forward output y = f(x) (in float64)."""
    def rule(a, g: GradArgs):
        return g.dy.astype(np.float64) * derivative(g.output.astype(np.float64), a)
    return Backward(rule, uses=uses_output)


def _passes_dy(a, g: GradArgs):
    """The gradient of an identity: dy itself."""
    return g.dy.astype(np.float64)



def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: e^-|x| never exceeds 1."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _hardswish_slope(x: np.ndarray) -> np.ndarray:
    """hardswish'(x) as torch takes it: 0 for x <= -3, 1 for x >= 3, (2x + 3) / 6 between."""
    return np.where(x <= -3.0, 0.0, np.where(x >= 3.0, 1.0, (2.0 * x + 3.0) / 6.0))


def _dropout_reference(a, inputs, params, ctx):
    """Identity in eval (and for p = 0); in training keeps x where rng.random(x.shape, float32) >= p,
    scaled by 1 / (1 - p)."""
    (x,) = inputs
    if ctx.mode != "train" or a.p == 0.0:
        return x.astype(x.dtype, copy=True)
    if ctx.rng is None:
        raise ValueError("dropout in training needs a random generator (RunContext.rng)")
    keep = ctx.rng.random(x.shape, dtype=np.float32) >= a.p
    return (x.astype(np.float64) * keep / (1.0 - a.p)).astype(x.dtype)


def _dropout_backward(a, g: GradArgs):
    """dy where the forward kept x, scaled by 1 / (1 - p); dy itself in eval (and for p = 0). The mask is
    re-drawn exactly as the forward drew it: the backward is handed the forward's random stream."""
    dy = g.dy.astype(np.float64)
    if g.ctx.mode != "train" or a.p == 0.0:
        return dy
    if g.ctx.rng is None:
        raise ValueError("dropout in training needs a random generator (RunContext.rng)")
    keep = g.ctx.rng.random(dy.shape, dtype=np.float32) >= a.p
    return dy * keep / (1.0 - a.p)


class LeakyReluAttrs(Attrs):
    slope: Float = 0.01


class EluAttrs(Attrs):
    alpha: Float = 1.0


class SoftmaxAttrs(Attrs):
    axis: Int = 1


class DropoutAttrs(Attrs):
    p: Float = 0.5

    @field_validator("p")
    @classmethod
    def _probability(cls, p: float) -> float:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"must be in [0, 1), got {p}")
        return p


_activation("identity", "Passes its input through unchanged.", reference=_elementwise(lambda x, a: x),
            backward=Backward(_passes_dy, uses=uses_nothing))
_activation("relu", "max(x, 0).", reference=_elementwise(lambda x, a: np.maximum(x, 0.0)),
            backward=_of_output(lambda y, a: y > 0))  # relu'(0) = 0, as torch
_activation("relu6", "min(max(x, 0), 6).", reference=_elementwise(lambda x, a: np.clip(x, 0.0, 6.0)),
            backward=_of_output(lambda y, a: (y > 0) & (y < 6)))  # 0 at 0 and at 6, as torch
_activation("sigmoid", "1 / (1 + e^-x).", reference=_elementwise(lambda x, a: _sigmoid(x)),
            backward=_of_output(lambda y, a: y * (1.0 - y)))
_activation("tanh", "Hyperbolic tangent.", reference=_elementwise(lambda x, a: np.tanh(x)),
            backward=_of_output(lambda y, a: 1.0 - y * y))
_activation("leaky_relu", "x if x > 0 else slope · x (slope defaults to 0.01).", LeakyReluAttrs,
            reference=_elementwise(lambda x, a: np.where(x > 0, x, a.slope * x)),
            backward=_of_input(lambda x, a: np.where(x > 0, 1.0, a.slope)))  # slope at 0, as torch
_activation("elu", "x if x > 0 else alpha · (e^x - 1).", EluAttrs,
            reference=_elementwise(lambda x, a: np.where(x > 0, x, a.alpha * np.expm1(np.minimum(x, 0.0)))),
            backward=_of_input(lambda x, a: np.where(x > 0, 1.0, a.alpha * np.exp(np.minimum(x, 0.0)))))
_activation("silu", "x · sigmoid(x), also called swish.", aliases=("swish",),
            reference=_elementwise(lambda x, a: x * _sigmoid(x)),
            backward=_of_input(lambda x, a: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x)))))
_activation("hardswish", "x · relu6(x + 3) / 6.",
            reference=_elementwise(lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0),
            backward=_of_input(lambda x, a: _hardswish_slope(x)))
_activation("dropout", "Zeroes elements with probability p and scales the rest by 1/(1-p) in training; "
            "identity in inference.", DropoutAttrs, category="dropout", reference=_dropout_reference,
            backward=Backward(_dropout_backward, uses=uses_nothing))


def _softmax_shape(a: SoftmaxAttrs, inputs):
    (x,) = inputs
    if not -x.rank <= a.axis < x.rank:
        raise ShapeError(f"axis {a.axis} is out of range for a rank-{x.rank} input", "axis")
    if a.axis % x.rank == 0:
        raise ShapeError("softmax over the batch axis would make samples depend on each other", "axis")
    return x


def _softmax_reference(a: SoftmaxAttrs, inputs, params, ctx):
    """e^(x - max) / Σ e^(x - max) along the axis: the largest exponent is 0, so nothing overflows."""
    (x,) = inputs
    shifted = x.astype(np.float64) - x.max(axis=a.axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=a.axis, keepdims=True)).astype(x.dtype)


def _softmax_backward(a: SoftmaxAttrs, g: GradArgs):
    """y · (dy - Σ dy · y) along the axis, y the forward output (the Jacobian diag(y) - y yᵀ applied to dy)."""
    y, dy = g.output.astype(np.float64), g.dy.astype(np.float64)
    return y * (dy - (dy * y).sum(axis=a.axis, keepdims=True))


register(OpDef(name="softmax", category="activation", attrs=SoftmaxAttrs, shape=_softmax_shape,
               reference=_softmax_reference, backward=Backward(_softmax_backward, uses=uses_output),
               doc="Numerically stable softmax along `axis` (default 1, the channels)."))


class MaxoutAttrs(Attrs):
    pieces: PosInt


def _maxout_shape(a: MaxoutAttrs, inputs):
    (x,) = inputs
    if x.rank < 2:
        raise ShapeError(f"maxout needs a channel dimension, got {x}")
    if x.c % a.pieces:
        raise ShapeError(f"channels ({x.c}) are not divisible by pieces ({a.pieces})", "pieces")
    return x.with_dims(x.c // a.pieces, *x.dims[1:])


def _maxout_reference(a: MaxoutAttrs, inputs, params, ctx):
    """Output channel j is the maximum of input channels j·pieces ... j·pieces + pieces - 1."""
    (x,) = inputs
    n, c = x.shape[:2]
    return x.reshape((n, c // a.pieces, a.pieces) + x.shape[2:]).max(axis=2).astype(x.dtype)


def _maxout_backward(a: MaxoutAttrs, g: GradArgs):
    """dy goes to the input channel that gave each maximum (on ties the first, as torch's max), 0 elsewhere."""
    (x,) = g.inputs
    n, c = x.shape[:2]
    grouped = (n, c // a.pieces, a.pieces) + x.shape[2:]
    winner = np.expand_dims(x.reshape(grouped).argmax(axis=2), 2)  # argmax: the first maximum
    dx = np.zeros(grouped)
    np.put_along_axis(dx, winner, np.expand_dims(g.dy.astype(np.float64), 2), axis=2)
    return dx.reshape(x.shape)


register(OpDef(name="maxout", category="activation", attrs=MaxoutAttrs, shape=_maxout_shape,
               reference=_maxout_reference, backward=Backward(_maxout_backward, uses=uses_inputs),
               doc="Maximum over `pieces` consecutive channels: C channels become C / pieces."))
