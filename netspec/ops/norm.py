"""Normalization: batch normalization and local response normalization (AlexNet, GoogLeNet)."""
from __future__ import annotations

from .fields import Bool, Float, PosInt
from .registry import Attrs, OpDef, ParamSpec, ShapeError, register


class BatchNorm2dAttrs(Attrs):
    eps: Float = 1e-5
    momentum: Float = 0.1  # running = (1 - momentum) * running + momentum * batch, as in PyTorch
    affine: Bool = True


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
    params["running_var"] = ParamSpec((c,), ("C",), trainable=False)
    return params


register(OpDef(
    name="batchnorm2d", category="normalization", attrs=BatchNorm2dAttrs, shape=_batchnorm_shape,
    params=_batchnorm_params,
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


register(OpDef(
    name="lrn", category="normalization", attrs=LRNAttrs, shape=_lrn_shape,
    doc="Local response normalization across channels, as in AlexNet/Caffe and torch.nn.LocalResponseNorm: "
        "x / (k + alpha/size · Σ x²)^beta over `size` neighbouring channels.",
))
