"""Analysis: parameters, MACs, activation memory and receptive field, per node and in total.

MACs follow DESIGN.md exactly: conv = output elements × C_in/groups × k_h × k_w; transposed conv =
input elements × C_out/groups × k_h × k_w; linear = output elements × in_features; nothing else
counts. FLOPs = 2 × MACs. Activation memory is the fp32 size of every node output plus the input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import prod

from .. import ops
from ..ir.graph import Graph
from ..ir.printer import describe
from ..ir.types import TensorType
from ..ops.registry import GLOBAL, Factor, ParamSpec, Window
from .infer import infer

BYTES = 4  # float32


@dataclass(frozen=True)
class Field:
    """Receptive field of a tensor along H and W: size and jump (input pixels between neighbours)."""

    size: tuple[Fraction, Fraction]
    jump: tuple[Fraction, Fraction]
    is_global: bool = False

    def __str__(self) -> str:
        if self.is_global:
            return "global"
        return _hw(self.size)

    def jump_str(self) -> str:
        return "-" if self.is_global else _hw(self.jump)


def _hw(v: tuple[Fraction, Fraction]) -> str:
    def one(x: Fraction) -> str:
        return str(x.numerator) if x.denominator == 1 else f"{float(x):.3g}"
    return one(v[0]) if v[0] == v[1] else f"{one(v[0])}×{one(v[1])}"


@dataclass
class NodeStats:
    name: str
    op: str
    label: str  # compact description: conv 3×3 /2, 64
    category: str
    type: TensorType
    input_types: list[TensorType]
    param_specs: dict[str, ParamSpec]
    mac_factors: list[Factor]
    field: Field
    field_in: Field | None
    window: Window | str | None
    mode: str | None = None

    @property
    def params(self) -> int:
        return sum(p.size for p in self.param_specs.values() if p.trainable)

    @property
    def buffers(self) -> int:
        return sum(p.size for p in self.param_specs.values() if not p.trainable)

    @property
    def macs(self) -> int:
        return prod(f.value for f in self.mac_factors) if self.mac_factors else 0

    @property
    def activation_bytes(self) -> int:
        return self.type.numel() * BYTES


@dataclass
class Summary:
    graph: Graph
    batch: int
    mode: str
    rows: list[NodeStats] = field(default_factory=list)

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def buffers(self) -> int:
        return sum(r.buffers for r in self.rows)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def input_bytes(self) -> int:
        return sum(t.numel() * BYTES for t in self.graph.inputs.values())

    @property
    def activation_bytes(self) -> int:
        """Every node output plus the inputs (what an executor without buffer reuse would hold)."""
        return self.input_bytes + sum(r.activation_bytes for r in self.rows)

    @property
    def planned_peak_bytes(self) -> int:
        """The arena a liveness-based memory plan needs (see passes/memory.py)."""
        from .memory import plan_memory
        return plan_memory(self.graph, self.batch).arena

    @property
    def training_step_bytes(self) -> int | None:
        """In train mode, the arena a training step's memory plan needs: forward activations kept
        for the backward, activation and parameter gradients (optimizer state excluded), under each
        output's default loss (passes/autodiff.py). None in eval mode."""
        if self.mode != "train":
            return None
        from .autodiff import default_loss, differentiate, parse_losses
        from .memory import plan_memory
        training = differentiate(self.graph, parse_losses(self.graph, default_loss(self.graph)))
        return plan_memory(training, self.batch).arena

    def row(self, name: str) -> NodeStats:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no node named '{name}' (block names fold several nodes: see report.fold)")

    def __repr__(self) -> str:
        return f"<Summary {self.graph.name}: {self.params:,} params, {self.macs:,} MACs at batch {self.batch}>"


def analyze(graph: Graph, batch: int = 1, mode: str = "eval") -> Summary:
    """Analyse the graph as it runs in `mode` with a concrete batch size."""
    if mode not in ("eval", "train"):
        raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
    typed = infer(graph.active(mode), batch)
    fields: dict[str, Field] = {}
    image = next((t for t in typed.inputs.values() if t.rank == 4), None)
    whole = (Fraction(image.h), Fraction(image.w)) if image else (Fraction(1), Fraction(1))
    for name in typed.inputs:
        fields[name] = Field((Fraction(1), Fraction(1)), (Fraction(1), Fraction(1)))
    summary = Summary(typed, batch, mode)
    for node in typed.nodes:
        op = ops.get(node.op)
        ins = [typed.type_of(i) for i in node.inputs]
        window = op.window(node.attrs, ins)
        field_in = _merge([fields[i] for i in node.inputs])
        fields[node.name] = _propagate(field_in, window, whole)
        summary.rows.append(NodeStats(
            name=node.name, op=node.op, label=describe(node), category=op.category, type=node.type,
            input_types=ins, param_specs=op.params(node.attrs, ins), mac_factors=op.macs(node.attrs, ins, node.type),
            field=fields[node.name], field_in=field_in, window=window, mode=node.mode))
    return summary


def _merge(inputs: list[Field]) -> Field:
    if any(f.is_global for f in inputs):
        return next(f for f in inputs if f.is_global)
    size = tuple(max(f.size[i] for f in inputs) for i in (0, 1))
    jump = tuple(max(f.jump[i] for f in inputs) for i in (0, 1))
    return Field(size, jump)  # type: ignore[arg-type]


def _propagate(f: Field, window: Window | str | None, whole: tuple[Fraction, Fraction]) -> Field:
    if f.is_global or window is None:
        return f
    if window == GLOBAL:
        return Field(whole, f.jump, is_global=True)
    size, jump = [], []
    for i in (0, 1):
        size.append(f.size[i] + (taps(window, i) - 1) * f.jump[i])
        jump.append(f.jump[i] / window.stride[i] if window.transposed else f.jump[i] * window.stride[i])
    return Field(tuple(size), tuple(jump))  # type: ignore[arg-type]


def taps(window: Window, axis: int) -> int:
    """How many neighbouring inputs one output reads along an axis. A transposed convolution with
    stride s reaches only ceil(k/s) of them (k=2, s=2 reads exactly one)."""
    k, s = window.kernel[axis], window.stride[axis]
    if not window.transposed:
        return k
    d = window.dilation[axis]
    taps = (k - 1) // d + 1  # the kernel's taps sit d apart; an output reads those of one residue mod s
    spans = [(i * d - j * d) // s + 1 for j in range(taps) for i in range(j, taps, 1)
             if (i * d - j * d) % s == 0]
    return max(spans)
