"""Pooling: max and average pooling (ceil mode, count_include_pad), global and adaptive average."""
from __future__ import annotations

import numpy as np
from pydantic import model_validator

from .conv import _effective, _need_image, scatter_windows, sliding_output, windows
from .fields import Bool, NonNegPair, PosPair
from .registry import (GLOBAL, Attrs, Backward, GradArgs, NoAttrs, OpDef, ShapeError, Window, register,
                       uses_nothing)


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


def _pool_out(a, x: np.ndarray, dilation=(1, 1)) -> tuple[int, int]:
    kh, kw = _effective(a.kernel, dilation)
    (ph, pw), (sh, sw) = a.padding, a.stride
    return (sliding_output(x.shape[2], kh, sh, ph, ph, a.ceil_mode),
            sliding_output(x.shape[3], kw, sw, pw, pw, a.ceil_mode))


def _maxpool_reference(a: MaxPool2dAttrs, inputs, params, ctx):
    """Maximum over each window; padding (and the ceil-mode overhang) is -inf, so it never wins."""
    (x,) = inputs
    (ph, pw), out_hw = a.padding, _pool_out(a, x, a.dilation)
    win = windows(x, a.kernel, a.stride, a.dilation, (ph, pw, ph, pw), out_hw, fill=-np.inf)
    return win.max(axis=(4, 5)).astype(x.dtype)


def _maxpool_backward(a: MaxPool2dAttrs, g: GradArgs) -> np.ndarray:
    """Each window's dy goes to the position of its maximum, recomputed from x: on ties the first in row-major
    window order (as PyTorch). Padding is -inf and never wins; a window wholly in the padding passes nothing."""
    x = g.inputs[0].astype(np.float64)
    dy = g.dy.astype(np.float64)
    n, c, oh, ow = dy.shape
    kh, kw = a.kernel
    pads = (a.padding[0], a.padding[1], a.padding[0], a.padding[1])
    win = windows(x, a.kernel, a.stride, a.dilation, pads, (oh, ow), fill=-np.inf).reshape(n, c, oh, ow, kh * kw)
    first_max = np.argmax(win, axis=-1)  # numpy's argmax picks the first of equal maxima
    winner = np.arange(kh * kw) == first_max[..., None]
    passes = np.isfinite(win.max(axis=-1)) * dy  # 0 for a window wholly in the padding
    d_windows = (winner * passes[..., None]).reshape(n, c, oh, ow, kh, kw)
    return scatter_windows(d_windows, g.shape, a.stride, a.dilation, pads)


def _avgpool_reference(a: AvgPool2dAttrs, inputs, params, ctx):
    """Window sums over PyTorch's divisor. With count_include_pad the divisor counts the padded positions a
    window covers but not those past the padded border (the ceil-mode overhang); without it, only the input
    positions it covers."""
    (x,) = inputs
    (ph, pw), out_hw = a.padding, _pool_out(a, x)
    sums = windows(x.astype(np.float64), a.kernel, a.stride, (1, 1), (ph, pw, ph, pw), out_hw).sum(axis=(4, 5))
    return (sums / _avgpool_divisor(a, x.shape, out_hw)).astype(x.dtype)


def _avgpool_divisor(a: AvgPool2dAttrs, shape: tuple[int, ...], out_hw: tuple[int, int]) -> np.ndarray:
    """Each window's divisor (1×1×H_out×W_out), by pooling a mask: 1 where a position counts, 0 elsewhere."""
    h, w = shape[2], shape[3]
    ph, pw = a.padding
    if a.count_include_pad:
        counted = np.pad(np.ones((1, 1, h, w)), ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=1.0)
        counted_pads = (0, 0, 0, 0)  # the padding is already in the mask; only the overhang adds zeros
    else:
        counted = np.ones((1, 1, h, w))
        counted_pads = (ph, pw, ph, pw)
    return windows(counted, a.kernel, a.stride, (1, 1), counted_pads, out_hw).sum(axis=(4, 5))


def _avgpool_backward(a: AvgPool2dAttrs, g: GradArgs) -> np.ndarray:
    """Each window's dy over its divisor goes to every position it covers (what falls on the padding is dropped)."""
    dy = g.dy.astype(np.float64)
    n, c, oh, ow = dy.shape
    kh, kw = a.kernel
    (ph, pw) = a.padding
    share = dy / _avgpool_divisor(a, g.shape, (oh, ow))
    d_windows = np.broadcast_to(share[..., None, None], (n, c, oh, ow, kh, kw))
    return scatter_windows(d_windows, g.shape, a.stride, (1, 1), (ph, pw, ph, pw))


register(OpDef(
    name="maxpool2d", category="pooling", attrs=MaxPool2dAttrs,
    shape=lambda a, ins: _pool_shape("maxpool2d", a, ins[0], a.dilation),
    window=lambda a, ins: Window(_effective(a.kernel, a.dilation), a.stride), reference=_maxpool_reference,
    backward=Backward(_maxpool_backward),
    doc="Max pooling; stride defaults to the kernel; ceil_mode as in PyTorch.",
))

register(OpDef(
    name="avgpool2d", category="pooling", attrs=AvgPool2dAttrs,
    shape=lambda a, ins: _pool_shape("avgpool2d", a, ins[0]),
    window=lambda a, ins: Window(a.kernel, a.stride), reference=_avgpool_reference,
    backward=Backward(_avgpool_backward, uses=uses_nothing),
    doc="Average pooling; count_include_pad (default true) counts padding in the divisor, as in PyTorch.",
))


def _global_shape(a, inputs):
    (x,) = inputs
    _need_image("global_avgpool", x)
    return x.with_dims(x.c, 1, 1)


def _global_reference(a, inputs, params, ctx):
    (x,) = inputs
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True).astype(x.dtype)


def _global_backward(a, g: GradArgs) -> np.ndarray:
    """Each channel's dy, shared equally by its H·W positions."""
    n, c, h, w = g.shape
    return np.broadcast_to(g.dy.astype(np.float64) / (h * w), (n, c, h, w)).copy()


register(OpDef(
    name="global_avgpool", category="pooling", attrs=NoAttrs, shape=_global_shape,
    window=lambda a, ins: GLOBAL,
    reference=_global_reference, backward=Backward(_global_backward, uses=uses_nothing),
    doc="Average over H and W: N×C×H×W → N×C×1×1.",
))


class AdaptiveAvgPool2dAttrs(Attrs):
    size: PosPair


def _adaptive_shape(a: AdaptiveAvgPool2dAttrs, inputs):
    (x,) = inputs
    _need_image("adaptive_avgpool2d", x)
    return x.with_dims(x.c, *a.size)


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's bins: [floor(i·size/out), ceil((i+1)·size/out)) for each output i."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_window(a: AdaptiveAvgPool2dAttrs, inputs):
    (x,) = inputs  # the widest bin, and bins start about size/out apart
    kernel = tuple(max(end - start for start, end in adaptive_bins(n, out)) for n, out in zip((x.h, x.w), a.size))
    stride = (max(1, x.h // a.size[0]), max(1, x.w // a.size[1]))
    return Window(kernel, stride)


def _adaptive_reference(a: AdaptiveAvgPool2dAttrs, inputs, params, ctx):
    """Bin (i, j) averages rows floor(i·H/out) to ceil((i+1)·H/out) - 1, likewise columns (PyTorch's bins,
    which may overlap)."""
    (x,) = inputs
    n, c, h, w = x.shape
    oh, ow = a.size
    y = np.empty((n, c, oh, ow))
    for i, (top, bottom) in enumerate(adaptive_bins(h, oh)):
        for j, (left, right) in enumerate(adaptive_bins(w, ow)):
            y[:, :, i, j] = x[:, :, top:bottom, left:right].astype(np.float64).mean(axis=(2, 3))
    return y.astype(x.dtype)


def _adaptive_backward(a: AdaptiveAvgPool2dAttrs, g: GradArgs) -> np.ndarray:
    """Each bin's dy, shared equally by the positions of its bin (overlapping bins add up)."""
    dy = g.dy.astype(np.float64)
    n, c, h, w = g.shape
    dx = np.zeros((n, c, h, w))
    for i, (top, bottom) in enumerate(adaptive_bins(h, a.size[0])):
        for j, (left, right) in enumerate(adaptive_bins(w, a.size[1])):
            dx[:, :, top:bottom, left:right] += dy[:, :, i:i + 1, j:j + 1] / ((bottom - top) * (right - left))
    return dx


register(OpDef(
    name="adaptive_avgpool2d", category="pooling", attrs=AdaptiveAvgPool2dAttrs, shape=_adaptive_shape,
    window=_adaptive_window, reference=_adaptive_reference,
    backward=Backward(_adaptive_backward, uses=uses_nothing),
    doc="Average pooling into a fixed output size (PyTorch's AdaptiveAvgPool2d bins).",
))
