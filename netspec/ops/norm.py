"""Normalization: batch normalization and local response normalization (AlexNet, GoogLeNet)."""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from .fields import Bool, Float, PosInt
from .registry import Attrs, OpDef, ParamSpec, RunError, ShapeError, register


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
    return y.astype(np.float32)


register(OpDef(
    name="batchnorm2d", category="normalization", attrs=BatchNorm2dAttrs, shape=_batchnorm_shape,
    params=_batchnorm_params, reference=_batchnorm_reference,
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
    c = x.shape[1]
    xd = x.astype(np.float64)
    squares = np.pad(xd * xd, ((0, 0), (a.size // 2, (a.size - 1) // 2), (0, 0), (0, 0)))
    window_sum = sum(squares[:, i:i + c] for i in range(a.size))  # padded channel c + i is channel c + i - size//2
    return (xd / (a.k + a.alpha / a.size * window_sum) ** a.beta).astype(np.float32)


register(OpDef(
    name="lrn", category="normalization", attrs=LRNAttrs, shape=_lrn_shape, reference=_lrn_reference,
    doc="Local response normalization across channels, as in AlexNet/Caffe and torch.nn.LocalResponseNorm: "
        "x / (k + alpha/size · Σ x²)^beta over `size` neighbouring channels.",
))
