"""Losses: ops whose value is the mean loss of a batch (a 1-element tensor), added to a network's
output by the autodiff pass (passes/autodiff.py) from `compile(..., loss=...)`. Their second input
is the target: integer labels for cross_entropy, values of the output's shape for mse. Targets
are data, not learnt: no gradient flows into them.

cross_entropy takes N×K logits with N labels (classification), or N×K×H×W logits with N×H×W
labels (segmentation: one label per pixel); labels equal to `ignore_index` count for nothing.
"""
from __future__ import annotations

import numpy as np
from pydantic import field_validator

from ..ir.types import TensorType
from .fields import Float, Int
from .registry import Attrs, Backward, GradArgs, OpDef, ShapeError, register

LOSS_TYPE = TensorType((1,))  # the mean loss


class TargetError(ValueError):
    """Targets that do not fit the loss: wrong shape, dtype, or a label outside the classes."""


class LossAttrs(Attrs):
    # the loss's share of the training loss: GoogLeNet's auxiliary classifiers count 0.3 each
    weight: Float = 1.0

    @field_validator("weight")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if not value >= 0.0:
            raise ValueError(f"must be ≥ 0, got {value}")
        return value


class CrossEntropyAttrs(LossAttrs):
    label_smoothing: Float = 0.0
    ignore_index: Int = -100

    @field_validator("label_smoothing")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"must be in [0, 1), got {value}")
        return value


def target_type(name: str, output: TensorType) -> TensorType:
    """The target a loss expects for a network output of type `output`, or a ShapeError saying why
    the loss does not fit that output."""
    if name == "mse":
        return output
    if output.rank not in (2, 4):
        raise ShapeError(f"cross_entropy needs N×K logits (classification) or N×K×H×W logits (segmentation), "
                         f"got an output of shape {output}")
    if output.c < 2:
        raise ShapeError(f"cross_entropy needs at least 2 classes, got an output of shape {output} (for one value "
                         "per sample, use mse)")
    if output.rank == 4 and output.h * output.w == 1:
        raise ShapeError(f"cross_entropy on a {output} output: a 1×1 map is not a segmentation; add "
                         "{op: flatten} before the output to classify")
    return TensorType((output.batch,) + output.dims[1:], "int64")


def check_target(name: str, attrs, output_shape: tuple[int, ...], target) -> np.ndarray:
    """The target as the loss's kernels take it (int64 labels, float32 values), or a TargetError."""
    what = "labels" if name == "cross_entropy" else "target"
    if not isinstance(target, np.ndarray):
        raise TargetError(f"{what} must be a numpy array, got {type(target).__name__}")
    if name == "cross_entropy":
        want = (output_shape[0],) + tuple(output_shape[2:])
        if target.dtype.kind not in "iu":
            raise TargetError(f"labels must be integers (class indices), got dtype {target.dtype}; convert with "
                              ".astype(np.int64)")
    else:
        want = tuple(output_shape)
        if target.dtype.kind != "f":
            raise TargetError(f"target must be floating point, got dtype {target.dtype}")
    if tuple(target.shape) != want:
        raise TargetError(f"{what} have shape {'×'.join(map(str, target.shape)) or 'scalar'}; expected "
                          f"{'×'.join(map(str, want))} for an output of shape {'×'.join(map(str, output_shape))}")
    if name == "mse":
        target = np.ascontiguousarray(target, np.float32)
        if not np.isfinite(target).all():
            raise TargetError(f"target contains {int((~np.isfinite(target)).sum()):,} NaN or Inf value(s)")
        return target
    labels = np.ascontiguousarray(target, np.int64)
    classes = output_shape[1]
    bad = (labels != attrs.ignore_index) & ((labels < 0) | (labels >= classes))
    if bad.any():
        first = labels[bad].flat[0]
        raise TargetError(f"{int(bad.sum()):,} label(s) outside [0, {classes}) (the output has {classes} classes), "
                          f"e.g. {int(first)}" + (f"; {attrs.ignore_index} (ignore_index) is ignored" if
                                                 attrs.ignore_index not in range(classes) else ""))
    return labels


def _loss_shape(name: str):
    def shape(a, inputs):
        output, target = inputs
        want = target_type(name, output)
        if target.shape != want.shape or target.dtype != want.dtype:
            raise ShapeError(f"{name} on an output of shape {output} needs a target of shape {want} "
                             f"({want.dtype}), got {target} ({target.dtype})")
        return LOSS_TYPE
    return shape


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax along axis 1 without overflow: the largest logit is subtracted first."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _cross_entropy_terms(a: CrossEntropyAttrs, logits: np.ndarray, labels: np.ndarray):
    """(log-probabilities, smoothed one-hot targets with ignored positions zeroed, count of counted positions),
    all with the classes on axis 1."""
    k = logits.shape[1]
    valid = labels != a.ignore_index
    safe = np.where(valid, labels, 0)
    onehot = np.moveaxis(np.eye(k)[safe], -1, 1)  # N×K(×H×W)
    smoothed = (1.0 - a.label_smoothing) * onehot + a.label_smoothing / k
    targets = smoothed * np.expand_dims(valid, 1)
    return _log_softmax(logits.astype(np.float64)), targets, int(valid.sum())


def _cross_entropy_reference(a: CrossEntropyAttrs, inputs, params, ctx):
    """torch.nn.functional.cross_entropy(reduction="mean"): the mean over counted positions of
    -Σ_k target_k · log softmax_k, target the one-hot label smoothed to (1 - ε)·onehot + ε/K. A batch
    whose every label is ignored has loss 0 (PyTorch's is NaN)."""
    logits, labels = inputs
    logp, targets, count = _cross_entropy_terms(a, logits, labels)
    total = -(targets * logp).sum()
    return np.array([a.weight * total / max(count, 1)], dtype=logits.dtype)


def _cross_entropy_backward(a: CrossEntropyAttrs, g: GradArgs):
    """∂loss/∂logits = (softmax - target) / count at counted positions, 0 at ignored ones (each target
    row sums to 1)."""
    logits, labels = g.inputs
    logp, targets, count = _cross_entropy_terms(a, logits, labels)
    valid = np.expand_dims(labels != a.ignore_index, 1)
    return a.weight * g.dy.astype(np.float64)[0] * (np.exp(logp) * valid - targets) / max(count, 1)


def _mse_reference(a, inputs, params, ctx):
    """torch.nn.functional.mse_loss(reduction="mean"): the mean of the squared differences."""
    prediction, target = inputs
    diff = prediction.astype(np.float64) - target.astype(np.float64)
    return np.array([a.weight * (diff * diff).mean()], dtype=prediction.dtype)


def _mse_backward(a, g: GradArgs):
    prediction, target = g.inputs
    diff = prediction.astype(np.float64) - target.astype(np.float64)
    return a.weight * g.dy.astype(np.float64)[0] * 2.0 * diff / diff.size


def _first_only(a, index: int) -> bool:
    return index == 0  # the target is data


register(OpDef(name="cross_entropy", category="loss", attrs=CrossEntropyAttrs, shape=_loss_shape("cross_entropy"),
               reference=_cross_entropy_reference, min_inputs=2, max_inputs=2, internal=True,
               backward=Backward(_cross_entropy_backward, differentiable=_first_only),
               doc="Mean cross-entropy of logits (N×K, or N×K×H×W per pixel) and integer labels; optional "
                   "label_smoothing, ignore_index for labels that count for nothing, and weight (its share of the training loss)."))
register(OpDef(name="mse", category="loss", attrs=LossAttrs, shape=_loss_shape("mse"), reference=_mse_reference,
               min_inputs=2, max_inputs=2, internal=True, backward=Backward(_mse_backward, differentiable=_first_only),
               doc="Mean squared error between the output and a target of its shape; optional weight."))

LOSSES = {"cross_entropy": CrossEntropyAttrs, "mse": LossAttrs}
