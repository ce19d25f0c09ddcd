"""Activations and dropout: shape-preserving, parameter-free, no MACs."""
from __future__ import annotations

from pydantic import field_validator

from .fields import Float, Int, PosInt
from .registry import Attrs, NoAttrs, OpDef, ShapeError, register


def _same_shape(a, inputs):
    return inputs[0]


def _activation(name: str, doc: str, attrs=NoAttrs, aliases=(), category="activation") -> None:
    register(OpDef(name=name, category=category, attrs=attrs, shape=_same_shape, doc=doc, aliases=aliases))


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


_activation("identity", "Passes its input through unchanged.")
_activation("relu", "max(x, 0).")
_activation("relu6", "min(max(x, 0), 6).")
_activation("sigmoid", "1 / (1 + e^-x).")
_activation("tanh", "Hyperbolic tangent.")
_activation("leaky_relu", "x if x > 0 else slope · x (slope defaults to 0.01).", LeakyReluAttrs)
_activation("elu", "x if x > 0 else alpha · (e^x - 1).", EluAttrs)
_activation("silu", "x · sigmoid(x), also called swish.", aliases=("swish",))
_activation("hardswish", "x · relu6(x + 3) / 6.")
_activation("dropout", "Zeroes elements with probability p and scales the rest by 1/(1-p) in training; "
            "identity in inference.", DropoutAttrs, category="dropout")


def _softmax_shape(a: SoftmaxAttrs, inputs):
    (x,) = inputs
    if not -x.rank <= a.axis < x.rank:
        raise ShapeError(f"axis {a.axis} is out of range for a rank-{x.rank} input", "axis")
    return x


register(OpDef(name="softmax", category="activation", attrs=SoftmaxAttrs, shape=_softmax_shape,
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


register(OpDef(name="maxout", category="activation", attrs=MaxoutAttrs, shape=_maxout_shape,
               doc="Maximum over `pieces` consecutive channels: C channels become C / pieces."))
