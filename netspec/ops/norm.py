"""Normalization: batch normalization and local response normalization (AlexNet, GoogLeNet)."""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from .fields import Bool, Float, PosInt
from .registry import Attrs, Backward, GradArgs, OpDef, ParamSpec, RunError, ShapeError, register


class BatchNorm2dAttrs(Attrs):
    eps: Float = 1e-5
    momentum: Float = 0.1  # running = (1 - momentum) * running + momentum * batch, as in PyTorch
    affine: Bool = True

    @field_validator("eps")
    @classmethod
    def _positive_eps(cls, eps: float) -> float:
        if eps <= 0:
            raise ValueError(f"must be positive, got {eps}")
        return eps

    @field_validator("momentum")
    @classmethod
    def _fraction(cls, momentum: float) -> float:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"must be between 0 and 1, got {momentum}")
        return momentum


def _batchnorm_shape(a, inputs):
    (x,) = inputs
    if x.rank not in (2, 4):
        raise ShapeError(f"batchnorm2d needs an N×C×H×W (or N×C) input, got {x}")
    return x


def _batchnorm_params(a: BatchNorm2dAttrs, inputs):
    c = inputs[0].c
    params = {}
    if a.affine:
        params["weight"] = ParamSpec((c,), ("C",))
        params["bias"] = ParamSpec((c,), ("C",))
    params["running_mean"] = ParamSpec((c,), ("C",), trainable=False)
    params["running_var"] = ParamSpec((c,), ("C",), trainable=False, non_negative=True)
    return params


def _batchnorm_reference(a: BatchNorm2dAttrs, inputs, params, ctx):
    """torch.nn.functional.batch_norm. In eval, normalise with the running statistics. In training, normalise
    with the batch's mean and biased variance, and replace the running statistics with
    (1 - momentum) · running + momentum · batch, where the batch variance is the unbiased one."""
    (x,) = inputs
    axes = (0,) if x.ndim == 2 else (0, 2, 3)  # every axis but the channels
    shape = (1, -1) + (1,) * (x.ndim - 2)  # a per-channel vector broadcast onto x
    xd = x.astype(np.float64)
    if ctx.mode == "train":
        count = x.size // x.shape[1]
        if count < 2:
            raise RunError(f"batch normalization in training needs more than one value per channel, got input "
                             f"shape {list(x.shape)}")
        mean = xd.mean(axis=axes)
        var = xd.var(axis=axes)  # biased: divides by count
        m = a.momentum
        params["running_mean"] = ((1 - m) * params["running_mean"].astype(np.float64) + m * mean).astype(np.float32)
        params["running_var"] = ((1 - m) * params["running_var"].astype(np.float64)
                                 + m * var * count / (count - 1)).astype(np.float32)
    else:
        mean = params["running_mean"].astype(np.float64)
        var = params["running_var"].astype(np.float64)
    y = (xd - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + a.eps)
    if a.affine:
        y = y * params["weight"].astype(np.float64).reshape(shape) + params["bias"].astype(np.float64).reshape(shape)
    return y.astype(x.dtype)


def _batchnorm_backward(a: BatchNorm2dAttrs, g: GradArgs) -> np.ndarray:
    """batchnorm2d's gradients, y = weight · x̂ + bias with x̂ = (x - mean) / √(var + eps), sums over every axis but
    the channels. ∂/∂bias = Σ dy, ∂/∂weight = Σ dy · x̂. In eval the statistics are constants (an affine map):
    ∂/∂x = dx̂ / √(var + eps), dx̂ = dy · weight. In training they are the batch's mean and biased variance, through
    which x also acts: ∂/∂x = (dx̂ - mean(dx̂) - x̂ · mean(dx̂ · x̂)) / √(var + eps)."""
    dy = g.dy.astype(np.float64)
    axes = (0,) if dy.ndim == 2 else (0, 2, 3)  # every axis but the channels
    shape = (1, -1) + (1,) * (dy.ndim - 2)  # a per-channel vector broadcast onto x
    if g.wrt == "bias":
        return dy.sum(axis=axes)
    x = g.inputs[0].astype(np.float64)
    train = g.ctx.mode == "train"
    if train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = g.params["running_mean"].astype(np.float64), g.params["running_var"].astype(np.float64)
    std = np.sqrt(var.reshape(shape) + a.eps)
    x_hat = (x - mean.reshape(shape)) / std
    if g.wrt == "weight":
        return (dy * x_hat).sum(axis=axes)
    d_hat = dy * g.params["weight"].astype(np.float64).reshape(shape) if a.affine else dy
    if not train:
        return d_hat / std
    mean_d_hat = d_hat.mean(axis=axes, keepdims=True)
    mean_d_hat_x_hat = (d_hat * x_hat).mean(axis=axes, keepdims=True)
    return (d_hat - mean_d_hat - x_hat * mean_d_hat_x_hat) / std


def _batchnorm_uses(a, wrt) -> tuple[str, ...]:
    return () if wrt == "bias" else ("inputs",)  # x recomputes x̂ (and, in training, the batch statistics)


register(OpDef(
    name="batchnorm2d", category="normalization", attrs=BatchNorm2dAttrs, shape=_batchnorm_shape,
    params=_batchnorm_params, reference=_batchnorm_reference, memory="in_place",
    backward=Backward(_batchnorm_backward, uses=_batchnorm_uses),
    doc="Batch normalization over channels: batch statistics in training, running statistics in inference.",
))


class LRNAttrs(Attrs):
    size: PosInt
    alpha: Float = 1e-4
    beta: Float = 0.75
    k: Float = 1.0


def _lrn_shape(a, inputs):
    (x,) = inputs
    if x.rank != 4:
        raise ShapeError(f"lrn needs an N×C×H×W input, got {x}")
    return x


def _lrn_reference(a: LRNAttrs, inputs, params, ctx):
    """torch.nn.functional.local_response_norm: the window of channel c runs from c - size//2 to
    c + (size-1)//2, zero beyond the channels."""
    (x,) = inputs
    xd = x.astype(np.float64)
    return (xd / _lrn_scale(a, xd) ** a.beta).astype(x.dtype)


def _channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """For each channel c, the sum of v over channels c - before to c + after (zero beyond the channels)."""
    c = v.shape[1]
    padded = np.pad(v, ((0, 0), (before, after), (0, 0), (0, 0)))
    return sum(padded[:, i:i + c] for i in range(before + after + 1))  # padded channel c + i is channel c + i - before


def _lrn_scale(a: LRNAttrs, x: np.ndarray) -> np.ndarray:
    """s = k + alpha/size · Σ x² over the window of each channel: c - size//2 to c + (size-1)//2."""
    return a.k + a.alpha / a.size * _channel_window_sum(x * x, a.size // 2, (a.size - 1) // 2)


def _lrn_backward(a: LRNAttrs, g: GradArgs) -> np.ndarray:
    """y_c = x_c · s_c^-beta, where s_c sums x² over the window of c; x_c is in the window of each channel d from
    c - (size-1)//2 to c + size//2 (the mirrored window), so
    ∂/∂x_c = dy_c · s_c^-beta - 2·alpha·beta/size · x_c · Σ_d dy_d · x_d · s_d^(-beta-1)."""
    x = g.inputs[0].astype(np.float64)
    dy = g.dy.astype(np.float64)
    s = _lrn_scale(a, x)
    through_scale = _channel_window_sum(dy * x * s ** (-a.beta - 1), (a.size - 1) // 2, a.size // 2)
    return dy * s ** -a.beta - 2 * a.alpha * a.beta / a.size * x * through_scale


register(OpDef(
    name="lrn", category="normalization", attrs=LRNAttrs, shape=_lrn_shape, reference=_lrn_reference,
    backward=Backward(_lrn_backward),
    doc="Local response normalization across channels, as in AlexNet/Caffe and torch.nn.LocalResponseNorm: "
        "x / (k + alpha/size · Σ x²)^beta over `size` neighbouring channels.",
))
