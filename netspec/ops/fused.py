"""Fused ops, made by the fuse_epilogues pass (passes/fuse.py) and never written in a spec: a
conv2d or linear that also does what the nodes after it did, so the value is made in one kernel
call and one pass over memory.

Inputs, in order: x; the gate, when `gate` (conv2d only); the residual, when `residual`. Value:

    y = act(base(x · gate) + residual)

- `gate` (squeeze-excitation): an N×C_in×1×1 tensor scaling x's channels before the convolution
  (the `mul` that gated the conv's input);
- `residual`: a tensor of the output's shape added after the bias (the residual `add`);
- `activation`: an elementwise activation op applied last, `alpha` its one attribute, if it has one
  (leaky_relu's slope, elu's alpha).

Shapes, parameters, MACs and window are the base op's; the reference runs the base op's reference
and then the fused ops' own references, so the reference value is exactly the unfused one's.

`squeeze_excitation` (made by the fuse_squeeze_excitation pass) is a squeeze-excitation block's
gate from its input, the work of three nodes in one: global_avgpool, then two 1×1 convolutions,
each with its bias and activation.
"""
from __future__ import annotations

from .conv import Conv2dAttrs, conv2d_macs, conv2d_params, conv2d_reference, conv2d_shape, conv2d_window
from .fields import Bool, Float, PosInt
from .linear import LinearAttrs, _linear_macs, _linear_params, _linear_reference, _linear_shape
from .pool import _global_reference, _global_shape
from .registry import GLOBAL, Attrs, Factor, OpDef, ParamSpec, ShapeError, get, register


class EpilogueAttrs(Attrs):
    """The fused part of a fused op's attributes (mixed into the base op's attribute model)."""

    gate: Bool = False
    residual: Bool = False
    activation: str | None = None
    alpha: Float = 0.0


class FusedConv2dAttrs(EpilogueAttrs, Conv2dAttrs):
    pass


class FusedLinearAttrs(EpilogueAttrs, LinearAttrs):
    pass


def activation_alpha(attrs: Attrs) -> float:
    """An elementwise activation's one attribute (leaky_relu's slope, elu's alpha), 0.0 if it has none:
    what a fused op carries as `alpha`."""
    fields = list(type(attrs).model_fields)
    return float(getattr(attrs, fields[0])) if fields else 0.0


def activation_attrs(a: EpilogueAttrs):
    """The fused activation's own attribute model (its one attribute set to `alpha`)."""
    return attrs_of(a.activation, a.alpha)


def attrs_of(activation: str, alpha: float):
    """An elementwise activation's attribute model, its one attribute (if it has one) set to `alpha`."""
    model = get(activation).attrs
    fields = list(model.model_fields)
    return model.model_validate({fields[0]: alpha} if fields else {})


def split_inputs(a: EpilogueAttrs, inputs: list) -> tuple[object, object, object]:
    """(x, gate or None, residual or None) from a fused op's inputs."""
    gate = inputs[1] if a.gate else None
    residual = inputs[1 + a.gate] if a.residual else None
    return inputs[0], gate, residual


def _fused(shape, params, macs, window, reference):
    def check(a, inputs):
        if len(inputs) != 1 + a.gate + a.residual:
            raise ShapeError(f"takes {1 + a.gate + a.residual} inputs with gate={a.gate}, residual={a.residual}, "
                             f"got {len(inputs)}")
        if a.activation is not None and (get(a.activation) is None or not get(a.activation).elementwise):
            raise ShapeError(f"'{a.activation}' is not an elementwise activation", "activation")
        x, gate, residual = split_inputs(a, list(inputs))
        out = shape(a, [x])
        if gate is not None and gate.shape != (x.batch, x.dims[0], 1, 1):
            raise ShapeError(f"the gate must be {x.batch}×{x.dims[0]}×1×1, got {gate}")
        if residual is not None and residual.shape != out.shape:
            raise ShapeError(f"the residual must have the output's shape {out}, got {residual}")
        return out

    def run_reference(a, inputs, p, ctx):
        x, gate, residual = split_inputs(a, inputs)
        if gate is not None:
            x = get("mul").reference(a, [x, gate], {}, ctx)
        y = reference(a, [x], p, ctx)
        if residual is not None:
            y = get("add").reference(a, [y, residual], {}, ctx)
        if a.activation is not None:
            y = get(a.activation).reference(activation_attrs(a), [y], {}, ctx)
        return y

    return dict(shape=check, params=lambda a, ins: params(a, ins[:1]), macs=lambda a, ins, out: macs(a, ins[:1], out),
                window=lambda a, ins: window(a, ins[:1]), reference=run_reference, min_inputs=1, max_inputs=3,
                internal=True)


register(OpDef(name="fused_conv2d", category="convolution", attrs=FusedConv2dAttrs,
               doc="conv2d with its input gate, residual add and activation (made by the fuse_epilogues pass).",
               **_fused(conv2d_shape, conv2d_params, conv2d_macs, conv2d_window, conv2d_reference)))
register(OpDef(name="fused_linear", category="linear", attrs=FusedLinearAttrs,
               doc="linear with its residual add and activation (made by the fuse_epilogues pass).",
               **_fused(_linear_shape, _linear_params, _linear_macs, lambda a, ins: GLOBAL, _linear_reference)))


class SqueezeExcitationAttrs(Attrs):
    """gate = gate_activation(W2 · activation(W1 · mean_HW(x) + b1) + b2): the squeeze (W1: hidden ×
    C, the first 1×1 convolution) and the excitation (W2: C × hidden, the second); each bias is
    there if that convolution had one, each activation (an elementwise op, `alpha` its attribute)
    if one followed it."""

    hidden: PosInt
    squeeze_bias: Bool = True
    excite_bias: Bool = True
    activation: str | None = None
    alpha: Float = 0.0
    gate_activation: str | None = None
    gate_alpha: Float = 0.0

    def convs(self, c: int) -> tuple[tuple[str, int, bool, str | None, float], ...]:
        """The two 1×1 convolutions in order, for an input of c channels: (parameter prefix, output
        channels, bias, activation, alpha) each."""
        return (("squeeze", self.hidden, self.squeeze_bias, self.activation, self.alpha),
                ("excite", c, self.excite_bias, self.gate_activation, self.gate_alpha))


def _se_check(a: SqueezeExcitationAttrs, inputs):
    for act in (a.activation, a.gate_activation):
        if act is not None and (get(act) is None or not get(act).elementwise):
            raise ShapeError(f"'{act}' is not an elementwise activation")
    return _global_shape(a, inputs)


def _se_params(a: SqueezeExcitationAttrs, inputs):
    (x,) = inputs
    params = {"squeeze_weight": ParamSpec((a.hidden, x.c, 1, 1), ("C_se", "C", "k_h", "k_w"))}
    if a.squeeze_bias:
        params["squeeze_bias"] = ParamSpec((a.hidden,), ("C_se",))
    params["excite_weight"] = ParamSpec((x.c, a.hidden, 1, 1), ("C", "C_se", "k_h", "k_w"))
    if a.excite_bias:
        params["excite_bias"] = ParamSpec((x.c,), ("C",))
    return params


def _se_macs(a: SqueezeExcitationAttrs, inputs, out):
    """The two convolutions' MACs, N·C_se·C each (the average's additions are not MACs)."""
    (x,) = inputs
    return [Factor("N", out.batch), Factor("C", x.c), Factor("C_se", a.hidden), Factor("convs", 2)]


def _se_conv(out: int, bias: bool) -> Conv2dAttrs:
    return Conv2dAttrs(out=out, kernel=1, bias=bias)


def _se_reference(a: SqueezeExcitationAttrs, inputs, p, ctx):
    """The unfused nodes' references in turn, so the value is exactly theirs."""
    y = _global_reference(a, inputs, {}, ctx)
    for prefix, out, bias, act, alpha in a.convs(inputs[0].shape[1]):
        params = {"weight": p[f"{prefix}_weight"]} | ({"bias": p[f"{prefix}_bias"]} if bias else {})
        y = conv2d_reference(_se_conv(out, bias), [y], params, ctx)
        if act is not None:
            y = get(act).reference(attrs_of(act, alpha), [y], {}, ctx)
    return y


register(OpDef(name="squeeze_excitation", category="pooling", attrs=SqueezeExcitationAttrs,
               doc="A squeeze-excitation gate: global average, 1×1 conv, activation, 1×1 conv, activation "
                   "(made by the fuse_squeeze_excitation pass).",
               shape=_se_check, params=_se_params, macs=_se_macs, window=lambda a, ins: GLOBAL,
               reference=_se_reference, internal=True))
