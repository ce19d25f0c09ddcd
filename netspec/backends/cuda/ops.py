"""Per-op launchers of the CUDA backend.

Each op has two host-side pieces:

* `upload(attrs, params, mode)` → the op's parameters as device arrays, once, at compile time (a
  transposed convolution's weight is re-laid out for the GEMM; batch norm in inference folds its
  statistics into a float64 scale and shift);
* `step(attrs, in_shapes, out_shape, dparams, mode)` → a function `run(ins, out, ctx)` that launches
  the op's kernels on flat device arrays (`ins` one per input, `out` the planned output buffer).
  Launch geometry and scratch buffers are worked out here, once per batch size.

`VIEWS` are ops whose output is their input reinterpreted (flatten, reshape, identity, dropout in
inference): the executor gives them the input's buffer and launches nothing; on their own
(`run_op`) they copy.
"""
from __future__ import annotations

from math import prod
from typing import Callable

import numpy as np
from numba import cuda

from ...ops.conv import Conv2dAttrs
from ...ops.fused import activation_attrs, attrs_of, split_inputs
from ...ops.registry import RunError
from . import kernels as K
from .kernels import blocks_for, tiles_for

Step = Callable[[list, object, object], None]


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def _upload_plain(attrs, params, mode):
    return {k: cuda.to_device(_f32(v)) for k, v in params.items()}


def _ew(kernel, n, *args):
    kernel[blocks_for(n), K.TPB](*args)


def is_view(op: str, attrs, mode: str) -> bool:
    if op in ("flatten", "reshape", "identity"):
        return True
    return op == "dropout" and (mode != "train" or attrs.p == 0.0)


# --- convolution and linear: the tiled GEMM ----------------------------------------------------

_NO_BIAS = None


def _no_bias():
    global _NO_BIAS
    if _NO_BIAS is None:
        _NO_BIAS = cuda.to_device(np.zeros(1, np.float32))
    return _NO_BIAS


def _gemm_launch(x, w, bias, y, n, c_in, h, wd, c_out, groups, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw,
                 transposed):
    og, cg = c_out // groups, c_in // groups
    t = tiles_for(n * ho * wo)
    grid = ((n * ho * wo + t.tn - 1) // t.tn, (og + t.tm - 1) // t.tm, groups)
    has_bias = bias is not None
    t.kernel[grid, (t.ntx, t.nty)](x, w, bias if has_bias else _no_bias(), has_bias, y, n, c_in, h, wd, c_out,
                                  og, cg, ho, wo, kh, kw, sh, sw, pt, pl, dh, dw, transposed)


def conv2d_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, wd = in_shapes[0]
    _, o, ho, wo = out_shape
    pt, pl, _, _ = a.pads
    w, b = dp["weight"], dp.get("bias")
    args = (n, c, h, wd, o, a.groups, ho, wo, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], pt, pl,
            a.dilation[0], a.dilation[1], False)

    def run(ins, out, ctx):
        _gemm_launch(ins[0], w, b, out, *args)
    return run


def conv_transpose2d_upload(a, params, mode):
    """C_in × C_out/G × kh × kw → G × C_out/G × C_in/G × kh × kw: the GEMM's A, one row per output channel."""
    w = np.asarray(params["weight"], np.float32)
    c_in, og, kh, kw = w.shape
    g = a.groups
    wt = w.reshape(g, c_in // g, og, kh, kw).transpose(0, 2, 1, 3, 4)
    out = {"weight": cuda.to_device(_f32(wt))}
    if "bias" in params:
        out["bias"] = cuda.to_device(_f32(params["bias"]))
    return out


def conv_transpose2d_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, wd = in_shapes[0]
    _, o, ho, wo = out_shape
    w, b = dp["weight"], dp.get("bias")
    args = (n, c, h, wd, o, a.groups, ho, wo, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1],
            a.padding[0], a.padding[1], a.dilation[0], a.dilation[1], True)

    def run(ins, out, ctx):
        _gemm_launch(ins[0], w, b, out, *args)
    return run


def linear_step(a, in_shapes, out_shape, dp, mode):
    n, features = in_shapes[0]
    w, b = dp["weight"], dp.get("bias")
    # y (N × out) is a 1×1 convolution of x (N × features × 1 × 1)
    args = (n, features, 1, 1, a.out, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, False)

    def run(ins, out, ctx):
        _gemm_launch(ins[0], w, b, out, *args)
    return run


# --- pooling -----------------------------------------------------------------------------------


def maxpool2d_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, w = in_shapes[0]
    ho, wo = out_shape[2:]
    total = n * c * ho * wo
    args = (n * c, h, w, ho, wo, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], a.padding[0], a.padding[1],
            a.dilation[0], a.dilation[1])

    def run(ins, out, ctx):
        _ew(K.maxpool, total, ins[0], out, *args)
    return run


def avgpool2d_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, w = in_shapes[0]
    ho, wo = out_shape[2:]
    total = n * c * ho * wo
    args = (n * c, h, w, ho, wo, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1], a.padding[0], a.padding[1],
            bool(a.count_include_pad))

    def run(ins, out, ctx):
        _ew(K.avgpool, total, ins[0], out, *args)
    return run


def adaptive_avgpool2d_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, w = in_shapes[0]
    ho, wo = out_shape[2:]
    total = n * c * ho * wo

    def run(ins, out, ctx):
        _ew(K.adaptive_avgpool, total, ins[0], out, n * c, h, w, ho, wo)
    return run


def global_avgpool_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, w = in_shapes[0]
    rows = n * c
    grid = min(rows, K.MAX_BLOCKS)

    def run(ins, out, ctx):
        K.row_mean[grid, K.RED](ins[0], out, rows, h * w)
    return run


# --- normalization -----------------------------------------------------------------------------


def batchnorm2d_upload(a, params, mode):
    c = np.asarray(params["running_mean"]).shape[0]
    weight = np.asarray(params["weight"], np.float64) if a.affine else np.ones(c)
    bias = np.asarray(params["bias"], np.float64) if a.affine else np.zeros(c)
    if mode != "train":  # inference: fold the running statistics into a scale and a shift, once
        inv = 1.0 / np.sqrt(np.asarray(params["running_var"], np.float64) + a.eps)
        scale = weight * inv
        shift = bias - np.asarray(params["running_mean"], np.float64) * scale
        return {"scale": cuda.to_device(scale), "shift": cuda.to_device(shift)}
    return {"weight": cuda.to_device(_f32(weight)), "bias": cuda.to_device(_f32(bias)),
            "running_mean": cuda.to_device(_f32(params["running_mean"])),
            "running_var": cuda.to_device(_f32(params["running_var"]))}


def batchnorm2d_step(a, in_shapes, out_shape, dp, mode):
    shape = in_shapes[0]
    n, c = shape[:2]
    inner = prod(shape[2:])
    total = n * c * inner
    if mode != "train":
        scale, shift = dp["scale"], dp["shift"]

        def run(ins, out, ctx):
            _ew(K.scale_shift, total, ins[0], out, total, c, inner, scale, shift)
        return run
    count = n * inner
    scale = cuda.device_array(c, np.float64)  # scratch: this batch's folded coefficients
    shift = cuda.device_array(c, np.float64)
    grid = min(c, K.MAX_BLOCKS)
    eps, momentum = float(a.eps), float(a.momentum)

    def run(ins, out, ctx):
        if count < 2:
            raise RunError(f"batch normalization in training needs more than one value per channel, got input "
                           f"shape {list(shape)}")
        K.bn_train_stats[grid, K.RED](ins[0], n, c, inner, dp["weight"], dp["bias"], eps, momentum,
                                      dp["running_mean"], dp["running_var"], scale, shift)
        _ew(K.scale_shift, total, ins[0], out, total, c, inner, scale, shift)
    return run


def lrn_step(a, in_shapes, out_shape, dp, mode):
    shape = in_shapes[0]
    n, c = shape[:2]
    inner = prod(shape[2:])
    total = n * c * inner
    args = (n, c, inner, int(a.size), float(a.alpha), float(a.beta), float(a.k))

    def run(ins, out, ctx):
        _ew(K.lrn, total, ins[0], out, *args)
    return run


# --- activations, dropout, softmax, maxout -----------------------------------------------------


def _pointwise(kernel, attr: str | None = None):
    def step(a, in_shapes, out_shape, dp, mode):
        total = prod(in_shapes[0])
        scalar = float(getattr(a, attr)) if attr else 0.0

        def run(ins, out, ctx):
            _ew(kernel, total, ins[0], out, total, scalar)
        return run
    return step


def copy_step(a, in_shapes, out_shape, dp, mode):
    return _pointwise(K.copy)(a, in_shapes, out_shape, dp, mode)


def dropout_step(a, in_shapes, out_shape, dp, mode):
    shape = tuple(in_shapes[0])
    total = prod(shape)
    p = float(a.p)
    if mode != "train" or p == 0.0:
        return copy_step(a, in_shapes, out_shape, dp, mode)

    def run(ins, out, ctx):
        if ctx.rng is None:
            raise ValueError("dropout in training needs a random generator (RunContext.rng)")
        # drawn on the host exactly as the reference draws it, then uploaded
        mask = ctx.rng.random(shape, dtype=np.float32) >= p
        _ew(K.dropout_apply, total, ins[0], cuda.to_device(mask.reshape(-1).view(np.uint8)), out, total, 1.0 - p)
    return run


def softmax_step(a, in_shapes, out_shape, dp, mode):
    shape = in_shapes[0]
    axis = a.axis % len(shape)
    outer, length, inner = prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])

    def run(ins, out, ctx):
        _ew(K.softmax, outer * inner, ins[0], out, outer, length, inner)
    return run


def maxout_step(a, in_shapes, out_shape, dp, mode):
    shape = in_shapes[0]
    n, c = shape[:2]
    inner = prod(shape[2:])
    c_out = c // a.pieces
    total = n * c_out * inner

    def run(ins, out, ctx):
        _ew(K.maxout, total, ins[0], out, n, c_out, int(a.pieces), inner)
    return run


# --- merges and plumbing -----------------------------------------------------------------------


def add_step(a, in_shapes, out_shape, dp, mode):
    total = prod(in_shapes[0])

    def run(ins, out, ctx):
        _ew(K.add2, total, ins[0], ins[1], out, total)
        for x in ins[2:]:
            _ew(K.add2, total, out, x, out, total)
    return run


def mul_step(a, in_shapes, out_shape, dp, mode):
    xs, zs = tuple(in_shapes[0]), tuple(in_shapes[1])
    total = prod(xs)
    strides, s = [], 1
    for dx, dz in reversed(list(zip(xs, zs))):
        strides.append(s if dz == dx else 0)
        s *= dz
    dims = cuda.to_device(np.array(xs, np.int64))
    zstrides = cuda.to_device(np.array(strides[::-1], np.int64))
    rank = len(xs)

    def run(ins, out, ctx):
        _ew(K.mul_bcast, total, ins[0], ins[1], out, total, dims, zstrides, rank)
    return run


def concat_step(a, in_shapes, out_shape, dp, mode):
    axis = a.axis % len(out_shape)
    rows = prod(out_shape[:axis])
    cy = prod(out_shape[axis:])
    parts, offset = [], 0
    for shape in in_shapes:
        cx = prod(shape[axis:])
        parts.append((cx, offset))
        offset += cx

    def run(ins, out, ctx):
        for x, (cx, off) in zip(ins, parts):
            _ew(K.copy_columns, rows * cx, x, out, rows, cx, cy, off)
    return run


def center_crop_step(a, in_shapes, out_shape, dp, mode):
    n, c, h, w = in_shapes[0]
    ch, cw = a.size
    top, left = (h - ch) // 2, (w - cw) // 2  # an odd margin leaves the extra row/column bottom/right

    def run(ins, out, ctx):
        _ew(K.crop, n * c * ch * cw, ins[0], out, n * c, h, w, ch, cw, top, left)
    return run


STEPS: dict[str, Callable] = {
    "conv2d": conv2d_step,
    "conv_transpose2d": conv_transpose2d_step,
    "linear": linear_step,
    "maxpool2d": maxpool2d_step,
    "avgpool2d": avgpool2d_step,
    "global_avgpool": global_avgpool_step,
    "adaptive_avgpool2d": adaptive_avgpool2d_step,
    "batchnorm2d": batchnorm2d_step,
    "lrn": lrn_step,
    "identity": copy_step,
    "relu": _pointwise(K.relu),
    "relu6": _pointwise(K.relu6),
    "sigmoid": _pointwise(K.sigmoid),
    "tanh": _pointwise(K.tanh),
    "leaky_relu": _pointwise(K.leaky_relu, "slope"),
    "elu": _pointwise(K.elu, "alpha"),
    "silu": _pointwise(K.silu),
    "hardswish": _pointwise(K.hardswish),
    "softmax": softmax_step,
    "maxout": maxout_step,
    "dropout": dropout_step,
    "add": add_step,
    "mul": mul_step,
    "concat": concat_step,
    "flatten": copy_step,
    "reshape": copy_step,
    "center_crop": center_crop_step,
}


def _fused(base_step):
    """A fused op (ops/fused.py) as the launches of its parts: the gate's mul into a scratch buffer,
    the base op into `out`, then the residual add and the activation in place on `out`."""
    def step(a, in_shapes, out_shape, dp, mode):
        x_shape = in_shapes[0]
        base = base_step(a, [x_shape], out_shape, dp, mode)
        gate = mul_step(a, [x_shape, in_shapes[1]], x_shape, dp, mode) if a.gate else None
        gated = cuda.device_array(prod(x_shape), np.float32) if a.gate else None
        residual = add_step(a, [out_shape, out_shape], out_shape, dp, mode) if a.residual else None
        act = STEPS[a.activation](activation_attrs(a), [out_shape], out_shape, dp, mode) if a.activation else None

        def run(ins, out, ctx):
            x, g, r = split_inputs(a, ins)
            if gate is not None:
                gate([x, g], gated, ctx)
                x = gated
            base([x], out, ctx)
            if residual is not None:
                residual([out, r], out, ctx)
            if act is not None:
                act([out], out, ctx)
        return run
    return step


STEPS["fused_conv2d"] = _fused(conv2d_step)
STEPS["fused_linear"] = _fused(linear_step)


def _conv1x1(prefix: str, bias: bool, in_shape, out_shape, dp, mode):
    """One of squeeze_excitation's 1×1 convolutions: conv2d's step, given this convolution's own
    parameters ("squeeze_weight" → "weight", ...) under the names conv2d reads."""
    own = {k.removeprefix(prefix + "_"): v for k, v in dp.items() if k.startswith(prefix + "_")}
    return conv2d_step(Conv2dAttrs(out=out_shape[1], kernel=1, bias=bias), [in_shape], out_shape, own, mode)


def _activation_step(act: str | None, alpha: float, shape, mode):
    return STEPS[act](attrs_of(act, alpha), [shape], shape, {}, mode) if act else None


def squeeze_excitation_step(a, in_shapes, out_shape, dp, mode):
    """squeeze_excitation (ops/fused.py) as the launches of the nodes it replaced: the average and the
    squeeze into scratch buffers, the excitation into `out`, each activation in place."""
    n, c = in_shapes[0][:2]
    pooled, hidden = (n, c, 1, 1), (n, a.hidden, 1, 1)
    pool = global_avgpool_step(a, in_shapes, pooled, dp, mode)
    squeeze = _conv1x1("squeeze", a.squeeze_bias, pooled, hidden, dp, mode)
    act = _activation_step(a.activation, a.alpha, hidden, mode)
    excite = _conv1x1("excite", a.excite_bias, hidden, out_shape, dp, mode)
    gate = _activation_step(a.gate_activation, a.gate_alpha, out_shape, mode)
    means = cuda.device_array(prod(pooled), np.float32)  # scratch, once per batch size
    squeezed = cuda.device_array(prod(hidden), np.float32)

    def run(ins, out, ctx):
        pool(ins, means, ctx)
        squeeze([means], squeezed, ctx)
        if act is not None:
            act([squeezed], squeezed, ctx)
        excite([squeezed], out, ctx)
        if gate is not None:
            gate([out], out, ctx)
    return run


STEPS["squeeze_excitation"] = squeeze_excitation_step

UPLOADS: dict[str, Callable] = {
    "conv_transpose2d": conv_transpose2d_upload,
    "batchnorm2d": batchnorm2d_upload,
}


def upload(op: str, attrs, params: dict, mode: str) -> dict:
    return UPLOADS.get(op, _upload_plain)(attrs, params, mode)


def download_state(op: str, dparams: dict, mode: str) -> dict[str, np.ndarray]:
    """The parameters an op updated on the device (batch norm's running statistics in training)."""
    if op == "batchnorm2d" and mode == "train":
        return {k: dparams[k].copy_to_host() for k in ("running_mean", "running_var")}
    return {}
