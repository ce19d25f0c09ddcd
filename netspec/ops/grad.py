"""The gradient op: one node of a training graph's backward half (made by passes/autodiff.py).

A `grad` node computes one gradient of the loss: with respect to input `wrt` (an index) or
parameter `wrt` (a name) of forward node `node`, an `op` node with attributes `forward`. Its inputs
are dy (the gradient with respect to that node's output; absent for the loss itself, whose dy is
1) followed by the forward values its rule reads (`uses`: the node's inputs, its output). The value
is the forward op's backward rule (OpDef.backward); a backend may give the heavy ones their own
kernels. Parameters are read from the forward node's (`params`), never its own.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ConfigDict

from ..ir.types import TensorType
from .registry import Attrs, GradArgs, OpDef, RunContext, get, register


class GradAttrs(Attrs):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    op: str  # the forward op
    node: str  # the forward node: its parameters and its random stream (dropout's mask)
    wrt: int | str  # an input's index or a parameter's name
    forward: Any  # the forward node's attributes
    uses: tuple[str, ...] = ()  # the forward values after dy: "inputs" (all of them), "output"
    inputs: int = 1  # how many inputs the forward node has
    input_dims: tuple[tuple[int, ...], ...] = ()  # their shapes without the batch
    dims: tuple[int, ...]  # the gradient's shape: without the batch for an input, whole for a parameter
    batched: bool = True  # an input's gradient (batch first), not a parameter's
    seed: bool = False  # the loss itself: dy is 1, and there is no dy input
    params: tuple[str, ...] = ()  # the forward node's parameter names

    def label(self) -> str:
        return f"∂{self.op}/∂{'x' + str(self.wrt) if isinstance(self.wrt, int) else self.wrt}"


def unpack(a: GradAttrs, values: list[np.ndarray]) -> tuple[np.ndarray, list | None, np.ndarray | None]:
    """(dy, forward inputs or None, forward output or None) from a grad node's input values."""
    dy = np.ones(1, values[0].dtype) if a.seed else values[0]
    rest = values[0 if a.seed else 1:]
    inputs = rest[:a.inputs] if "inputs" in a.uses else None
    output = rest[-1] if "output" in a.uses else None
    return dy, inputs, output


def grad_args(a: GradAttrs, values: list[np.ndarray], params: dict[str, np.ndarray], ctx: RunContext) -> GradArgs:
    dy, inputs, output = unpack(a, values)
    batch = dy.shape[0] if not a.seed else inputs[0].shape[0]
    shape = (batch,) + a.dims if a.batched else a.dims
    return GradArgs(a.wrt, dy, inputs, output, params, shape, ctx, tuple((batch,) + d for d in a.input_dims))


def _shape(a: GradAttrs, inputs) -> TensorType:
    return TensorType((inputs[0].batch,) + a.dims if a.batched else a.dims)


def _reference(a: GradAttrs, values, params, ctx):
    """The forward op's backward rule, in the dtype of dy (float32 in a run)."""
    args = grad_args(a, values, params, ctx)
    dtype = values[0].dtype if values else np.float32
    return np.ascontiguousarray(get(a.op).backward.rule(a.forward, args), dtype=dtype)


register(OpDef(name="grad", category="gradient", attrs=GradAttrs, shape=_shape, reference=_reference,
               min_inputs=1, max_inputs=None, internal=True,
               doc="One gradient of the loss: a forward node's backward rule for one input or parameter "
                   "(made by the autodiff pass)."))
