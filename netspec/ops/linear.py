"""Fully connected layers."""
from __future__ import annotations

import numpy as np

from .fields import Bool, PosInt
from .registry import GLOBAL, Attrs, Backward, Factor, GradArgs, OpDef, ParamSpec, ShapeError, register


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


def _linear_reference(a: LinearAttrs, inputs, params, ctx):
    """y = x Wᵀ + b, as torch.nn.functional.linear."""
    (x,) = inputs
    y = x.astype(np.float64) @ params["weight"].astype(np.float64).T
    if a.bias:
        y = y + params["bias"].astype(np.float64)
    return y.astype(x.dtype)


def _linear_backward(a: LinearAttrs, g: GradArgs):
    """∂/∂x = dy W, ∂/∂W = dyᵀ x, ∂/∂b = Σ over the batch of dy."""
    dy = g.dy.astype(np.float64)
    if g.wrt == 0:
        return dy @ g.params["weight"].astype(np.float64)
    if g.wrt == "weight":
        return dy.T @ g.inputs[0].astype(np.float64)
    return dy.sum(axis=0)  # "bias"


register(OpDef(
    name="linear", category="linear", attrs=LinearAttrs, shape=_linear_shape, params=_linear_params,
    macs=_linear_macs, window=lambda a, ins: GLOBAL, reference=_linear_reference,
    backward=Backward(_linear_backward, uses=lambda a, wrt: ("inputs",) if wrt == "weight" else ()),
    doc="Fully connected layer: y = x Wᵀ + b on an N×features input.",
))
