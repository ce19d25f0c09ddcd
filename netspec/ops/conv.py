"""Convolutions: conv2d (strided, padded, dilated, grouped, so depthwise and pointwise too) and
conv_transpose2d."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .fields import Bool, NonNegPair, Padding, PosInt, PosPair, resolve_padding
from .registry import Attrs, Backward, Factor, GradArgs, OpDef, ParamSpec, ShapeError, Window, register


class Conv2dAttrs(Attrs):
    out: PosInt
    kernel: PosPair
    stride: PosPair = (1, 1)
    padding: Padding = (0, 0)
    dilation: PosPair = (1, 1)
    groups: PosInt = 1
    bias: Bool = True

    @property
    def pads(self) -> tuple[int, int, int, int]:
        return resolve_padding(self.padding, self.kernel, self.stride, self.dilation)


def _need_image(op: str, x) -> None:
    if x.rank != 4:
        raise ShapeError(f"{op} needs an N×C×H×W input, got {x}")


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels % groups:
        raise ShapeError(f"input channels ({in_channels}) are not divisible by groups ({groups})", "groups")
    if out_channels % groups:
        raise ShapeError(f"output channels ({out_channels}) are not divisible by groups ({groups})", "groups")


def _effective(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    return (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)


def sliding_output(size: int, kernel_eff: int, stride: int, pad_before: int, pad_after: int,
                   ceil_mode: bool = False) -> int:
    """Output length of a sliding window (PyTorch's rule, including ceil mode)."""
    padded = size + pad_before + pad_after
    if kernel_eff > padded:
        raise ShapeError(f"kernel (effective size {kernel_eff}) is larger than the padded input ({padded})",
                         "kernel")
    span = padded - kernel_eff
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1  # the last window may not start in the right padding
    return out


def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int],
            pads: tuple[int, int, int, int], out_hw: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """The sliding windows of an N×C×H×W array as a read-only view N×C×H_out×W_out×k_h×k_w.

    `x` is padded with `fill` by `pads` (top, left, bottom, right), and further at the bottom/right where
    the last of `out_hw` windows reaches past that (ceil mode); window (i, j) starts at row i·stride and
    takes every dilation-th element.
    """
    t, l, b, r = pads
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    keh, kew = _effective(kernel, dilation)
    h, w = x.shape[2], x.shape[3]
    b = max(b, (oh - 1) * sh + keh - h - t)
    r = max(r, (ow - 1) * sw + kew - w - l)
    xp = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill)
    view = sliding_window_view(xp, (keh, kew), axis=(2, 3))  # N×C×(every start)×(every start)×keh×kew
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def scatter_windows(values: np.ndarray, shape: tuple[int, ...], stride: tuple[int, int], dilation: tuple[int, int],
                    pads: tuple[int, int, int, int]) -> np.ndarray:
    """The adjoint of `windows`: add each window's values (N×C×H_out×W_out×k_h×k_w) back onto the positions of an
    N×C×H×W array (`shape`) that the window read; what falls on the padding is dropped."""
    n, c, oh, ow, kh, kw = values.shape
    t, l, b, r = pads
    (sh, sw), (dh, dw) = stride, dilation
    keh, kew = _effective((kh, kw), dilation)
    h, w = shape[2], shape[3]
    b = max(b, (oh - 1) * sh + keh - h - t)
    r = max(r, (ow - 1) * sw + kew - w - l)
    padded = np.zeros((n, c, t + h + b, l + w + r), dtype=values.dtype)
    for i in range(kh):
        for j in range(kw):  # tap (i, j) of window (y, x) read padded row y·stride + i·dilation
            top, left = i * dh, j * dw
            padded[:, :, top:top + (oh - 1) * sh + 1:sh, left:left + (ow - 1) * sw + 1:sw] += values[:, :, :, :, i, j]
    return padded[:, :, t:t + h, l:l + w]


def conv2d_shape(a: Conv2dAttrs, inputs):
    (x,) = inputs
    _need_image("conv2d", x)
    _check_groups(x.c, a.out, a.groups)
    t, l, b, r = a.pads
    kh, kw = _effective(a.kernel, a.dilation)
    h = sliding_output(x.h, kh, a.stride[0], t, b)
    w = sliding_output(x.w, kw, a.stride[1], l, r)
    return x.with_dims(a.out, h, w)


def conv2d_params(a: Conv2dAttrs, inputs):
    (x,) = inputs
    cin = "C_in/g" if a.groups > 1 else "C_in"
    params = {"weight": ParamSpec((a.out, x.c // a.groups) + a.kernel, ("C_out", cin, "k_h", "k_w"))}
    if a.bias:
        params["bias"] = ParamSpec((a.out,), ("C_out",))
    return params


def conv2d_macs(a: Conv2dAttrs, inputs, out):
    (x,) = inputs
    cin = "C_in/g" if a.groups > 1 else "C_in"
    return [Factor("N", out.batch), Factor("C_out", out.c), Factor("H_out", out.h), Factor("W_out", out.w),
            Factor(cin, x.c // a.groups), Factor("k_h", a.kernel[0]), Factor("k_w", a.kernel[1])]


def conv2d_window(a: Conv2dAttrs, inputs):
    return Window(_effective(a.kernel, a.dilation), a.stride)


def conv2d_reference(a: Conv2dAttrs, inputs, params, ctx):
    """Cross-correlation as in torch.nn.functional.conv2d: each group's windows times its filters."""
    (x,) = inputs
    n, c, h, w = x.shape
    t, l, b, r = a.pads
    keh, kew = _effective(a.kernel, a.dilation)
    oh = (h + t + b - keh) // a.stride[0] + 1
    ow = (w + l + r - kew) // a.stride[1] + 1
    g, kh, kw = a.groups, a.kernel[0], a.kernel[1]
    cg, og = c // g, a.out // g
    win = windows(x.astype(np.float64), a.kernel, a.stride, a.dilation, a.pads, (oh, ow))
    # N×C×oh×ow×kh×kw → N×g×(oh·ow)×(C/g·kh·kw), one patch per row
    patches = win.reshape(n, g, cg, oh, ow, kh, kw).transpose(0, 1, 3, 4, 2, 5, 6).reshape(n, g, oh * ow, -1)
    # C_out×C/g×kh×kw → g×(C/g·kh·kw)×C_out/g
    weight = params["weight"].astype(np.float64).reshape(g, og, cg * kh * kw).transpose(0, 2, 1)
    y = patches @ weight  # N×g×(oh·ow)×C_out/g
    y = y.transpose(0, 1, 3, 2).reshape(n, a.out, oh, ow)
    if a.bias:
        y = y + params["bias"].astype(np.float64).reshape(1, -1, 1, 1)
    return y.astype(x.dtype)


def _bias_backward(a, g: GradArgs) -> np.ndarray:
    """∂loss/∂bias: each output channel's dy summed over the batch and the positions."""
    return g.dy.astype(np.float64).sum(axis=(0, 2, 3))


def _conv_uses(a, wrt) -> tuple[str, ...]:
    return ("inputs",) if wrt == "weight" else ()  # the input's gradient reads only dy and the weight


def conv2d_backward(a: Conv2dAttrs, g: GradArgs) -> np.ndarray:
    """conv2d's gradients. Output (o, y, x) of group gr is Σ window(y, x)[c, i, j] · weight[o, c, i, j] over the
    group's channels c, so ∂/∂window = Σ_o dy · weight, scattered back onto the input (`scatter_windows`), and
    ∂/∂weight = Σ over batch and positions of dy · window."""
    if g.wrt == "bias":
        return _bias_backward(a, g)
    dy = g.dy.astype(np.float64)
    n, _, oh, ow = dy.shape
    grp, (kh, kw) = a.groups, a.kernel
    og = a.out // grp
    dy_g = dy.reshape(n, grp, og, oh, ow)
    if g.wrt == "weight":
        x = g.inputs[0].astype(np.float64)
        cg = x.shape[1] // grp
        win = windows(x, a.kernel, a.stride, a.dilation, a.pads, (oh, ow)).reshape(n, grp, cg, oh, ow, kh, kw)
        return np.einsum("ngoyx,ngcyxij->gocij", dy_g, win).reshape(a.out, cg, kh, kw)
    c = g.shape[1]
    cg = c // grp
    weight = g.params["weight"].astype(np.float64).reshape(grp, og, cg, kh, kw)
    d_windows = np.einsum("ngoyx,gocij->ngcyxij", dy_g, weight).reshape(n, c, oh, ow, kh, kw)
    return scatter_windows(d_windows, g.shape, a.stride, a.dilation, a.pads)


register(OpDef(
    name="conv2d", category="convolution", attrs=Conv2dAttrs, shape=conv2d_shape, params=conv2d_params,
    macs=conv2d_macs, window=conv2d_window, reference=conv2d_reference,
    backward=Backward(conv2d_backward, uses=_conv_uses),
    doc="2-D convolution. `groups: C` with `out: C` is depthwise; `kernel: 1` is pointwise. "
        "padding: an int, [h, w], 'same' (stride 1) or 'valid'.",
))


class ConvTranspose2dAttrs(Attrs):
    out: PosInt
    kernel: PosPair
    stride: PosPair = (1, 1)
    padding: NonNegPair = (0, 0)
    output_padding: NonNegPair = (0, 0)
    dilation: PosPair = (1, 1)
    groups: PosInt = 1
    bias: Bool = True


def conv_transpose2d_shape(a: ConvTranspose2dAttrs, inputs):
    (x,) = inputs
    _need_image("conv_transpose2d", x)
    _check_groups(x.c, a.out, a.groups)
    for i in (0, 1):
        if a.output_padding[i] >= max(a.stride[i], a.dilation[i]):
            raise ShapeError(f"output_padding ({a.output_padding[i]}) must be smaller than the stride or the "
                             "dilation", "output_padding")
    kh, kw = _effective(a.kernel, a.dilation)
    h = (x.h - 1) * a.stride[0] - 2 * a.padding[0] + kh + a.output_padding[0]
    w = (x.w - 1) * a.stride[1] - 2 * a.padding[1] + kw + a.output_padding[1]
    if h <= 0 or w <= 0:
        raise ShapeError(f"padding {list(a.padding)} leaves no output ({h}×{w})", "padding")
    return x.with_dims(a.out, h, w)


def conv_transpose2d_params(a: ConvTranspose2dAttrs, inputs):
    (x,) = inputs
    cout = "C_out/g" if a.groups > 1 else "C_out"
    params = {"weight": ParamSpec((x.c, a.out // a.groups) + a.kernel, ("C_in", cout, "k_h", "k_w"))}
    if a.bias:
        params["bias"] = ParamSpec((a.out,), ("C_out",))
    return params


def conv_transpose2d_macs(a: ConvTranspose2dAttrs, inputs, out):
    (x,) = inputs  # every input element is scattered into C_out/g × k_h × k_w outputs
    cout = "C_out/g" if a.groups > 1 else "C_out"
    return [Factor("N", x.batch), Factor("C_in", x.c), Factor("H_in", x.h), Factor("W_in", x.w),
            Factor(cout, a.out // a.groups), Factor("k_h", a.kernel[0]), Factor("k_w", a.kernel[1])]


def conv_transpose2d_window(a: ConvTranspose2dAttrs, inputs):
    return Window(_effective(a.kernel, a.dilation), a.stride, transposed=True, dilation=a.dilation)


def conv_transpose2d_reference(a: ConvTranspose2dAttrs, inputs, params, ctx):
    """torch.nn.functional.conv_transpose2d in scatter form: input pixel (h, w) times kernel tap (i, j)
    lands on output pixel (h·stride + i·dilation - padding, ...); output_padding adds rows/columns at the
    bottom/right that only the bias reaches."""
    (x,) = inputs
    n, c, h, w = x.shape
    g, (kh, kw), (sh, sw), (dh, dw) = a.groups, a.kernel, a.stride, a.dilation
    cg, og = c // g, a.out // g
    keh, kew = _effective(a.kernel, a.dilation)
    # the full (uncropped) output, tall enough for every tap and the output padding
    full_h = (h - 1) * sh + keh + a.output_padding[0]
    full_w = (w - 1) * sw + kew + a.output_padding[1]
    full = np.zeros((n, g, og, full_h, full_w))
    xg = x.astype(np.float64).reshape(n, g, cg, h, w)
    wg = params["weight"].astype(np.float64).reshape(g, cg, og, kh, kw)
    for i in range(kh):
        for j in range(kw):
            tap = np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])  # every input pixel through tap (i, j)
            top, left = i * dh, j * dw
            full[:, :, :, top:top + (h - 1) * sh + 1:sh, left:left + (w - 1) * sw + 1:sw] += tap
    ph, pw = a.padding
    out_h = full_h - 2 * ph
    out_w = full_w - 2 * pw
    y = full.reshape(n, a.out, full_h, full_w)[:, :, ph:ph + out_h, pw:pw + out_w]
    if a.bias:
        y = y + params["bias"].astype(np.float64).reshape(1, -1, 1, 1)
    return y.astype(x.dtype)


def conv_transpose2d_backward(a: ConvTranspose2dAttrs, g: GradArgs) -> np.ndarray:
    """conv_transpose2d's gradients. Input pixel (h, w) through tap (i, j) lands on output pixel
    (h·stride + i·dilation - padding, ...), so the pixels it reaches are exactly the taps of window (h, w) of dy
    padded by `padding` (the window of a conv2d with this stride, dilation and padding): ∂/∂x = Σ_o window · weight
    (conv2d of dy with the weights), ∂/∂weight = Σ over batch and pixels of x · window. The output padding rows
    past the last window read are reached by no input pixel, only by the bias."""
    if g.wrt == "bias":
        return _bias_backward(a, g)
    dy = g.dy.astype(np.float64)
    n = dy.shape[0]
    grp, (kh, kw), (ph, pw) = a.groups, a.kernel, a.padding
    og = a.out // grp
    c, h, w = (g.inputs[0].shape if g.wrt == "weight" else g.shape)[1:]
    cg = c // grp
    win = windows(dy, a.kernel, a.stride, a.dilation, (ph, pw, ph, pw), (h, w)).reshape(n, grp, og, h, w, kh, kw)
    if g.wrt == "weight":
        x = g.inputs[0].astype(np.float64).reshape(n, grp, cg, h, w)
        return np.einsum("ngchw,ngohwij->gcoij", x, win).reshape(c, og, kh, kw)
    weight = g.params["weight"].astype(np.float64).reshape(grp, cg, og, kh, kw)
    return np.einsum("ngohwij,gcoij->ngchw", win, weight).reshape(n, c, h, w)


register(OpDef(
    name="conv_transpose2d", category="convolution", attrs=ConvTranspose2dAttrs, shape=conv_transpose2d_shape,
    params=conv_transpose2d_params, macs=conv_transpose2d_macs, window=conv_transpose2d_window,
    reference=conv_transpose2d_reference, backward=Backward(conv_transpose2d_backward, uses=_conv_uses),
    doc="2-D transposed convolution (learned upsampling), as torch.nn.ConvTranspose2d.",
))
