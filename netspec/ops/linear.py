"""Fully connected layers."""
from __future__ import annotations

from .fields import Bool, PosInt
from .registry import GLOBAL, Attrs, Factor, OpDef, ParamSpec, ShapeError, register


class LinearAttrs(Attrs):
    out: PosInt
    bias: Bool = True


def _linear_shape(a: LinearAttrs, inputs):
    (x,) = inputs
    if x.rank != 2:
        raise ShapeError(f"linear needs an N×features input, got {x}; add {{op: flatten}} before it")
    return x.with_dims(a.out)


def _linear_params(a: LinearAttrs, inputs):
    params = {"weight": ParamSpec((a.out, inputs[0].c), ("out", "in"))}
    if a.bias:
        params["bias"] = ParamSpec((a.out,), ("out",))
    return params


def _linear_macs(a: LinearAttrs, inputs, out):
    return [Factor("N", out.batch), Factor("out", a.out), Factor("in", inputs[0].c)]


register(OpDef(
    name="linear", category="linear", attrs=LinearAttrs, shape=_linear_shape, params=_linear_params,
    macs=_linear_macs, window=lambda a, ins: GLOBAL,
    doc="Fully connected layer: y = x Wᵀ + b on an N×features input.",
))
