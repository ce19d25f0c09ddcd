"""Tensor plumbing: merges (add, mul, concat), reshapes (flatten, reshape) and center_crop."""
from __future__ import annotations

from math import prod

import numpy as np
from pydantic import field_validator

from .fields import Int, PosPair
from .registry import Attrs, Backward, GradArgs, NoAttrs, OpDef, ShapeError, register, uses_inputs, uses_nothing


def _add_shape(a, inputs):
    first = inputs[0]
    for i, x in enumerate(inputs[1:], start=2):
        if x.dims != first.dims:
            raise ShapeError(f"add needs inputs of one shape: input 1 is {first.dims_str()}, input {i} is "
                             f"{x.dims_str()}")
    return first


def _add_reference(a, inputs, params, ctx):
    return sum(x.astype(np.float64) for x in inputs).astype(inputs[0].dtype)


def _add_backward(a, g: GradArgs):
    """Every input's gradient is dy."""
    return g.dy.astype(np.float64)


register(OpDef(name="add", category="merge", attrs=NoAttrs, shape=_add_shape, min_inputs=2, max_inputs=None,
               reference=_add_reference, backward=Backward(_add_backward, uses=uses_nothing), memory="in_place",
               doc="Elementwise sum of inputs of one shape (residual connections)."))


def _mul_shape(a, inputs):
    x, y = inputs  # y broadcasts onto x: squeeze-excitation gates N×C×H×W by N×C×1×1
    if x.rank != y.rank or any(dy not in (dx, 1) for dx, dy in zip(x.dims, y.dims)):
        raise ShapeError(f"mul needs the second input to match or broadcast to the first: {x.dims_str()} "
                         f"and {y.dims_str()}")
    return x


def _mul_reference(a, inputs, params, ctx):
    x, y = inputs  # numpy broadcasting does exactly what the shape rule allows
    return (x.astype(np.float64) * y.astype(np.float64)).astype(x.dtype)


def _mul_backward(a, g: GradArgs):
    """∂/∂x = dy · y (y broadcast); ∂/∂y = dy · x, summed over the axes y was broadcast along (its size-1
    ones where x's are larger: squeeze-excitation's N×C×1×1 gate sums over H and W)."""
    x, y = (v.astype(np.float64) for v in g.inputs)
    other = y if g.wrt == 0 else x
    grad = g.dy.astype(np.float64) * other
    broadcast = tuple(i for i, (d, full) in enumerate(zip(g.shape, grad.shape)) if d == 1 and full != 1)
    return grad.sum(axis=broadcast, keepdims=True)


register(OpDef(name="mul", category="merge", attrs=NoAttrs, shape=_mul_shape, min_inputs=2, max_inputs=2,
               reference=_mul_reference, backward=Backward(_mul_backward, uses=uses_inputs), memory="in_place",
               doc="Elementwise product; the second input may broadcast along size-1 dimensions "
                   "(squeeze-excitation gating)."))


class ConcatAttrs(Attrs):
    axis: Int = 1


def _concat_shape(a: ConcatAttrs, inputs):
    first = inputs[0]
    if not 1 <= a.axis < first.rank:
        raise ShapeError(f"concat axis must be between 1 and {first.rank - 1} (the batch axis cannot be "
                         f"concatenated), got {a.axis}", "axis")
    total = 0
    for i, x in enumerate(inputs, start=1):
        others = [d for j, d in enumerate(x.shape) if j != a.axis]
        if x.rank != first.rank or others != [d for j, d in enumerate(first.shape) if j != a.axis]:
            raise ShapeError(f"concat along axis {a.axis} needs the other dimensions to agree: input 1 is "
                             f"{first.dims_str()}, input {i} is {x.dims_str()}")
        total += x.shape[a.axis]
    shape = list(first.shape)
    shape[a.axis] = total
    return first.with_dims(*shape[1:])


def _concat_reference(a: ConcatAttrs, inputs, params, ctx):
    return np.concatenate(inputs, axis=a.axis).astype(inputs[0].dtype)


def _concat_backward(a: ConcatAttrs, g: GradArgs):
    """The input's own slice of dy along the axis, after the sizes of the inputs before it."""
    start = sum(shape[a.axis] for shape in g.input_shapes[:g.wrt])
    index = [slice(None)] * g.dy.ndim
    index[a.axis] = slice(start, start + g.shape[a.axis])
    return g.dy[tuple(index)].astype(np.float64)


register(OpDef(name="concat", category="merge", attrs=ConcatAttrs, shape=_concat_shape, min_inputs=1,
               reference=_concat_reference, backward=Backward(_concat_backward, uses=uses_nothing),
               max_inputs=None, doc="Concatenation along `axis` (default 1, the channels)."))


def _flatten_shape(a, inputs):
    (x,) = inputs
    return x.with_dims(prod(x.dims))


def _flatten_reference(a, inputs, params, ctx):
    (x,) = inputs  # C-order: channel-major, as torch.flatten(x, 1)
    return x.reshape(x.shape[0], -1).astype(x.dtype)


def _reshape_backward(a, g: GradArgs):
    """dy back in the input's shape (flatten and reshape keep C order)."""
    return g.dy.astype(np.float64).reshape(g.shape)


register(OpDef(name="flatten", category="reshape", attrs=NoAttrs, shape=_flatten_shape,
               reference=_flatten_reference, backward=Backward(_reshape_backward, uses=uses_nothing), memory="view",
               doc="N×C×H×W → N×(C·H·W)."))


class ReshapeAttrs(Attrs):
    shape: list[Int]  # without the batch dimension; one entry may be -1

    @field_validator("shape")
    @classmethod
    def _valid(cls, shape: list[int]) -> list[int]:
        if not shape:
            raise ValueError("shape must list at least one dimension (the batch dimension is implied)")
        if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
            raise ValueError("shape entries must be positive, with at most one -1")
        return shape


def _reshape_shape(a: ReshapeAttrs, inputs):
    (x,) = inputs
    total, known = prod(x.dims), prod(d for d in a.shape if d != -1)
    dims = list(a.shape)
    if -1 in dims:
        if total % known:
            raise ShapeError(f"cannot reshape {x.dims_str()} ({total:,} elements) to {a.shape}", "shape")
        dims[dims.index(-1)] = total // known
    elif known != total:
        raise ShapeError(f"cannot reshape {x.dims_str()} ({total:,} elements) to {a.shape} ({known:,} elements)",
                         "shape")
    return x.with_dims(*dims)


def _reshape_reference(a: ReshapeAttrs, inputs, params, ctx):
    (x,) = inputs  # C-order, each sample on its own (the batch dimension is kept)
    return x.reshape([x.shape[0]] + list(a.shape)).astype(x.dtype)


register(OpDef(name="reshape", category="reshape", attrs=ReshapeAttrs, shape=_reshape_shape,
               reference=_reshape_reference, backward=Backward(_reshape_backward, uses=uses_nothing), memory="view",
               doc="Reshape every sample to `shape` (batch dimension implied; one -1 is inferred)."))


class CenterCropAttrs(Attrs):
    size: PosPair


def _center_crop_shape(a: CenterCropAttrs, inputs):
    (x,) = inputs
    if x.rank != 4:
        raise ShapeError(f"center_crop needs an N×C×H×W input, got {x}")
    if a.size[0] > x.h or a.size[1] > x.w:
        raise ShapeError(f"crop {a.size[0]}×{a.size[1]} is larger than the input {x.h}×{x.w}", "size")
    return x.with_dims(x.c, *a.size)


def _crop_window(a: CenterCropAttrs, full: tuple[int, ...]) -> tuple[slice, slice]:
    """The rows and columns center_crop keeps of an H×W map."""
    (h, w), (H, W) = a.size, full[2:]
    top, left = (H - h) // 2, (W - w) // 2  # an odd margin leaves the extra row/column at the bottom/right
    return slice(top, top + h), slice(left, left + w)


def _center_crop_reference(a: CenterCropAttrs, inputs, params, ctx):
    (x,) = inputs
    rows, cols = _crop_window(a, x.shape)
    return x[:, :, rows, cols].astype(x.dtype)


def _center_crop_backward(a: CenterCropAttrs, g: GradArgs):
    """dy in the kept window, 0 in the cropped margin."""
    rows, cols = _crop_window(a, g.shape)
    dx = np.zeros(g.shape)
    dx[:, :, rows, cols] = g.dy
    return dx


register(OpDef(name="center_crop", category="reshape", attrs=CenterCropAttrs, shape=_center_crop_shape,
               reference=_center_crop_reference, backward=Backward(_center_crop_backward, uses=uses_nothing),
               doc="Crop H×W to `size` around the centre (the original U-Net's skip connections); "
                   "an odd margin leaves the extra row/column at the bottom/right."))
