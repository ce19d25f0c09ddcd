"""Pooling: max and average pooling (ceil mode, count_include_pad), global and adaptive average."""
from __future__ import annotations

from math import ceil

from pydantic import model_validator

from .conv import _effective, _need_image, sliding_output
from .fields import Bool, NonNegPair, PosPair
from .registry import GLOBAL, Attrs, NoAttrs, OpDef, ShapeError, Window, register


class _PoolAttrs(Attrs):
    kernel: PosPair
    stride: PosPair | None = None  # defaults to the kernel, as in PyTorch
    padding: NonNegPair = (0, 0)
    ceil_mode: Bool = False

    @model_validator(mode="after")
    def _default_stride(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel)
        return self


class MaxPool2dAttrs(_PoolAttrs):
    dilation: PosPair = (1, 1)


class AvgPool2dAttrs(_PoolAttrs):
    count_include_pad: Bool = True


def _pool_shape(name: str, a, x, dilation=(1, 1)):
    _need_image(name, x)
    for i in (0, 1):
        if a.padding[i] * 2 > a.kernel[i]:
            raise ShapeError(f"padding ({a.padding[i]}) must be at most half the kernel ({a.kernel[i]})", "padding")
    kh, kw = _effective(a.kernel, dilation)
    h = sliding_output(x.h, kh, a.stride[0], a.padding[0], a.padding[0], a.ceil_mode)
    w = sliding_output(x.w, kw, a.stride[1], a.padding[1], a.padding[1], a.ceil_mode)
    return x.with_dims(x.c, h, w)


register(OpDef(
    name="maxpool2d", category="pooling", attrs=MaxPool2dAttrs,
    shape=lambda a, ins: _pool_shape("maxpool2d", a, ins[0], a.dilation),
    window=lambda a, ins: Window(_effective(a.kernel, a.dilation), a.stride),
    doc="Max pooling; stride defaults to the kernel; ceil_mode as in PyTorch.",
))

register(OpDef(
    name="avgpool2d", category="pooling", attrs=AvgPool2dAttrs,
    shape=lambda a, ins: _pool_shape("avgpool2d", a, ins[0]),
    window=lambda a, ins: Window(a.kernel, a.stride),
    doc="Average pooling; count_include_pad (default true) counts padding in the divisor, as in PyTorch.",
))


def _global_shape(a, inputs):
    (x,) = inputs
    _need_image("global_avgpool", x)
    return x.with_dims(x.c, 1, 1)


register(OpDef(
    name="global_avgpool", category="pooling", attrs=NoAttrs, shape=_global_shape,
    window=lambda a, ins: GLOBAL,
    doc="Average over H and W: N×C×H×W → N×C×1×1.",
))


class AdaptiveAvgPool2dAttrs(Attrs):
    size: PosPair


def _adaptive_shape(a: AdaptiveAvgPool2dAttrs, inputs):
    (x,) = inputs
    _need_image("adaptive_avgpool2d", x)
    return x.with_dims(x.c, *a.size)


def _adaptive_window(a: AdaptiveAvgPool2dAttrs, inputs):
    (x,) = inputs  # bins are at most ceil(H/out) wide and start floor(H/out) apart
    kernel = (ceil(x.h / a.size[0]), ceil(x.w / a.size[1]))
    stride = (max(1, x.h // a.size[0]), max(1, x.w // a.size[1]))
    return Window(kernel, stride)


register(OpDef(
    name="adaptive_avgpool2d", category="pooling", attrs=AdaptiveAvgPool2dAttrs, shape=_adaptive_shape,
    window=_adaptive_window,
    doc="Average pooling into a fixed output size (PyTorch's AdaptiveAvgPool2d bins).",
))
