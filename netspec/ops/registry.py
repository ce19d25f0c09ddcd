"""The op registry: every op is defined once, here or in a family module beside this one.

An `OpDef` carries everything the front end needs to know about an op: its attribute model
(pydantic; unknown attributes are refused), how many inputs it takes, its shape rule, the shapes
of its parameters, its cost in MACs, and its sliding window (for the receptive field).
Backends attach their kernels elsewhere, keyed by the op's name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..ir.types import TensorType

MAX_SIZE = 1 << 24  # no single channel count, feature count or spatial size beyond this
MAX_ELEMENTS = 1 << 34  # nor a tensor of more elements per sample (64 GiB of float32)

Category = Literal["convolution", "pooling", "normalization", "activation", "dropout", "merge",
                   "linear", "reshape", "loss", "gradient"]


class Attrs(BaseModel):
    """Base of every op's attribute model: frozen, and unknown attributes are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoAttrs(Attrs):
    pass


class ShapeError(ValueError):
    """A shape rule's complaint; `attr` names the attribute to blame, when there is one."""

    def __init__(self, message: str, attr: str | None = None):
        super().__init__(message)
        self.attr = attr


class RunError(ValueError):
    """A problem with the data met while running (not a bug): e.g. batch statistics of one value."""


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    symbols: tuple[str, ...]  # a name per dimension, used in formulas: ("C_out", "C_in", "k_h", "k_w")
    trainable: bool = True
    non_negative: bool = False  # a variance: a negative value in a weights file is refused

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Factor:
    symbol: str
    value: int


@dataclass(frozen=True)
class Window:
    """A sliding window along H and W, for the receptive field: effective kernel and stride.

    `transposed` windows upsample: the stride divides the jump instead of multiplying it.
    """

    kernel: tuple[int, int]  # effective (dilated) size
    stride: tuple[int, int]
    transposed: bool = False
    dilation: tuple[int, int] = (1, 1)  # kept for transposed windows, whose taps interleave


GLOBAL = "global"  # the op sees its whole input (global pooling, flatten, linear)

@dataclass
class RunContext:
    """What a running op may need besides its inputs and parameters.

    In training, dropout draws its mask as `ctx.rng.random(x.shape, dtype=np.float32) >= p` (kernels
    draw it the same way, so every backend drops the same elements), and batch normalization
    replaces `params["running_mean"]` and `params["running_var"]` with the updated statistics.
    """

    mode: str = "eval"  # "eval" or "train"
    rng: np.random.Generator | None = None


@dataclass
class GradArgs:
    """What a backward rule gets to compute one gradient: the gradient of the loss with respect to
    `wrt` (an input's index, or a parameter's name) from `dy`, the gradient with respect to the op's
    output. `inputs` and `output` are the forward values, present only where the rule's `uses` names
    them ("inputs", "output"); `shape` is the gradient's shape (the input's or the parameter's), which
    the forward values alone may not tell (a strided convolution's input, when only dy is read), and
    `input_shapes` every forward input's shape (where a concat input's slice of dy starts)."""

    wrt: int | str
    dy: np.ndarray
    inputs: list[np.ndarray] | None
    output: np.ndarray | None
    params: dict[str, np.ndarray]
    shape: tuple[int, ...]
    ctx: RunContext
    input_shapes: tuple[tuple[int, ...], ...] = ()


def uses_inputs(attrs, wrt) -> tuple[str, ...]:
    return ("inputs",)


def uses_output(attrs, wrt) -> tuple[str, ...]:
    return ("output",)


def uses_nothing(attrs, wrt) -> tuple[str, ...]:
    return ()  # the gradient follows from dy, the parameters and the shapes alone


def _every_input(attrs, index: int) -> bool:
    return True


@dataclass(frozen=True)
class Backward:
    """An op's derivative, kept beside its reference: `rule(attrs, GradArgs) -> gradient` computes one
    gradient in plain numpy (float64 inside; the result in dy's dtype), written for clarity: it is the
    judge of the backends' gradient kernels. `uses(attrs, wrt)` names the forward values that
    gradient reads besides dy, a subset of ("inputs", "output"): the memory plan keeps a forward
    activation alive only while a gradient still reads it. `differentiable(attrs, index)` is False
    for an input no gradient flows into (a loss's labels)."""

    rule: Callable[[Attrs, GradArgs], np.ndarray]
    uses: Callable[[Attrs, int | str], tuple[str, ...]] = uses_inputs
    differentiable: Callable[[Attrs, int], bool] = _every_input


ShapeRule = Callable[[Attrs, Sequence[TensorType]], TensorType]
# reference(attrs, inputs, params, ctx) -> output: plain numpy, NCHW float32, written for clarity
Reference = Callable[[Attrs, list[np.ndarray], dict[str, np.ndarray], RunContext], np.ndarray]
ParamRule = Callable[[Attrs, Sequence[TensorType]], dict[str, ParamSpec]]
MacRule = Callable[[Attrs, Sequence[TensorType], TensorType], list[Factor]]
WindowRule = Callable[[Attrs, Sequence[TensorType]], "Window | str | None"]


def _no_params(attrs, inputs):
    return {}


def _no_macs(attrs, inputs, output):
    return []


def _pointwise(attrs, inputs):
    return None


@dataclass(frozen=True)
class OpDef:
    name: str
    category: Category
    attrs: type[Attrs]
    shape: ShapeRule
    doc: str
    min_inputs: int = 1
    max_inputs: int | None = 1  # None: any number
    params: ParamRule = _no_params
    macs: MacRule = _no_macs
    window: WindowRule = _pointwise
    reference: Reference | None = None
    backward: Backward | None = None  # None: not differentiable (yet); training such a graph is refused
    aliases: tuple[str, ...] = field(default=())
    elementwise: bool = False  # an activation applied to each element alone (a fusable epilogue)
    # How its output may use memory (passes/memory.py): "in_place" may overwrite its first input (same
    # shape, each element read once before it is written); "view" is its input under another shape.
    memory: Literal["new", "in_place", "view"] = "new"
    internal: bool = False  # made by a pass (ops/fused.py), never written in a spec


_REGISTRY: dict[str, OpDef] = {}
_ALIASES: dict[str, str] = {}


def register(op: OpDef) -> OpDef:
    for name in (op.name,) + op.aliases:
        if name in _REGISTRY or name in _ALIASES:
            raise RuntimeError(f"op '{name}' registered twice")
    _REGISTRY[op.name] = op
    for alias in op.aliases:
        _ALIASES[alias] = op.name
    return op


def get(name: str) -> OpDef | None:
    """The op of a name or alias, internal ones included (a spec may not name those: `spec_op`)."""
    return _REGISTRY.get(_ALIASES.get(name, name))


def spec_op(name: str) -> OpDef | None:
    """The op a spec may name: None for unknown and for internal ops."""
    op = get(name)
    return None if op is None or op.internal else op


def canonical_name(name: str) -> str:
    return _ALIASES.get(name, name)


TRAINING_ONLY = ("loss", "gradient")  # categories of the ops only training graphs hold (passes/autodiff.py)


def all_ops(internal: bool = False, training: bool = False) -> list[OpDef]:
    """The ops a spec may use, by name; with `internal`, also those only passes make; with `training`,
    also the losses and the gradient op of training graphs."""
    return sorted((op for op in _REGISTRY.values() if (internal or not op.internal)
                   and (training or op.category not in TRAINING_ONLY)), key=lambda op: op.name)


def all_names() -> list[str]:
    """Every name and alias a spec may use."""
    return sorted([name for name, op in _REGISTRY.items() if not op.internal] + list(_ALIASES))


def infer_output(op: OpDef, attrs: Attrs, inputs: Sequence[TensorType]) -> TensorType:
    """Check the input count, then apply the op's shape rule. Raises ShapeError."""
    n = len(inputs)
    if n < op.min_inputs or (op.max_inputs is not None and n > op.max_inputs):
        if op.max_inputs is None:
            want = f"at least {op.min_inputs} inputs"
        elif op.min_inputs == op.max_inputs:
            want = f"{op.min_inputs} input{'s' if op.min_inputs != 1 else ''}"
        else:
            want = f"{op.min_inputs} to {op.max_inputs} inputs"
        raise ShapeError(f"{op.name} takes {want}, got {n}")
    out = op.shape(attrs, inputs)
    if any(d <= 0 for d in out.dims):
        raise ShapeError(f"{op.name} would produce the empty shape {out.dims_str()}")
    if any(d > MAX_SIZE for d in out.dims) or math.prod(out.dims) > MAX_ELEMENTS:  # (per sample: any batch)
        raise ShapeError(f"{op.name} would produce the absurd shape {out.dims_str()} (limits: {MAX_SIZE:,} per "
                         f"dimension, {MAX_ELEMENTS:,} elements per sample)")
    return out
