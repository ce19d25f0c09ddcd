"""Activations and dropout: shape-preserving, parameter-free, no MACs."""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from .fields import Float, Int, PosInt
from .registry import Attrs, NoAttrs, OpDef, ShapeError, register


def _same_shape(a, inputs):
    return inputs[0]


def _activation(name: str, doc: str, attrs=NoAttrs, aliases=(), category="activation", reference=None) -> None:
    """An elementwise op: at most one attribute, a float (what a fused epilogue carries as `alpha`)."""
    register(OpDef(name=name, category=category, attrs=attrs, shape=_same_shape, doc=doc, aliases=aliases,
                   reference=reference, elementwise=True))


def _elementwise(f):
    """A reference applying f(x, attrs) to the single input, in float64."""
    def reference(a, inputs, params, ctx):
        return np.asarray(f(inputs[0].astype(np.float64), a)).astype(np.float32)
    return reference


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x) without overflow: e^-|x| never exceeds 1."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _dropout_reference(a, inputs, params, ctx):
    """Identity in eval (and for p = 0); in training keeps x where rng.random(x.shape, float32) >= p,
    scaled by 1 / (1 - p)."""
    (x,) = inputs
    if ctx.mode != "train" or a.p == 0.0:
        return x.astype(np.float32, copy=True)
    if ctx.rng is None:
        raise ValueError("dropout in training needs a random generator (RunContext.rng)")
    keep = ctx.rng.random(x.shape, dtype=np.float32) >= a.p
    return (x.astype(np.float64) * keep / (1.0 - a.p)).astype(np.float32)


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


_activation("identity", "Passes its input through unchanged.", reference=_elementwise(lambda x, a: x))
_activation("relu", "max(x, 0).", reference=_elementwise(lambda x, a: np.maximum(x, 0.0)))
_activation("relu6", "min(max(x, 0), 6).", reference=_elementwise(lambda x, a: np.clip(x, 0.0, 6.0)))
_activation("sigmoid", "1 / (1 + e^-x).", reference=_elementwise(lambda x, a: _sigmoid(x)))
_activation("tanh", "Hyperbolic tangent.", reference=_elementwise(lambda x, a: np.tanh(x)))
_activation("leaky_relu", "x if x > 0 else slope · x (slope defaults to 0.01).", LeakyReluAttrs,
            reference=_elementwise(lambda x, a: np.where(x > 0, x, a.slope * x)))
_activation("elu", "x if x > 0 else alpha · (e^x - 1).", EluAttrs,
            reference=_elementwise(lambda x, a: np.where(x > 0, x, a.alpha * np.expm1(np.minimum(x, 0.0)))))
_activation("silu", "x · sigmoid(x), also called swish.", aliases=("swish",),
            reference=_elementwise(lambda x, a: x * _sigmoid(x)))
_activation("hardswish", "x · relu6(x + 3) / 6.",
            reference=_elementwise(lambda x, a: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0))
_activation("dropout", "Zeroes elements with probability p and scales the rest by 1/(1-p) in training; "
            "identity in inference.", DropoutAttrs, category="dropout", reference=_dropout_reference)


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
    return (e / e.sum(axis=a.axis, keepdims=True)).astype(np.float32)


register(OpDef(name="softmax", category="activation", attrs=SoftmaxAttrs, shape=_softmax_shape,
               reference=_softmax_reference,
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
    return x.reshape((n, c // a.pieces, a.pieces) + x.shape[2:]).max(axis=2).astype(np.float32)


register(OpDef(name="maxout", category="activation", attrs=MaxoutAttrs, shape=_maxout_shape,
               reference=_maxout_reference,
               doc="Maximum over `pieces` consecutive channels: C channels become C / pieces."))
