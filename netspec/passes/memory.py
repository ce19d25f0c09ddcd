"""Static memory planning: every activation gets an offset in one arena, reusing the space of
tensors whose last user has run (liveness), and elementwise ops write in place over an input that
dies with them. A concatenation's inputs are written straight into their parts of its output where
each part is one contiguous run (channels at batch 1), so the concat copies nothing. The arena's
size is the planned peak; without planning every output is kept. The CPU executor runs in this
arena (backends/executor.py, eval mode).

Placement is "greedy by size" (largest tensors first, each at the lowest offset that does not
overlap a tensor alive at the same time), the strategy TensorFlow Lite's arena planner uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import ops
from ..ir.graph import Graph
from .infer import infer

BYTES = 4  # float32
ALIGN = 64  # bytes; every buffer starts on a cache line


def in_place(op: str) -> bool:
    """The op's output may overwrite its first input (OpDef.memory, set where the op is defined)."""
    return ops.get(op).memory == "in_place"


def is_view(op: str) -> bool:
    """The op's output is a view of its input (the same memory, another shape): it shares the
    input's buffer, which stays alive while either is."""
    return ops.get(op).memory == "view"


@dataclass
class Buffer:
    tensors: list[str]  # the tensors sharing it (an in-place chain, views)
    size: int  # bytes
    start: int  # index of the step that writes it first (-1: a graph input)
    end: int  # index of the last step that reads it (len(nodes): a graph output)
    offset: int = -1
    parent: Buffer | None = None  # the concat output buffer this one is a part of (placed with it)
    within: int = 0  # bytes from the parent's start

    def root(self) -> Buffer:
        """The top-level buffer this one lies in (itself, unless it is a concat's part)."""
        return self if self.parent is None else self.parent.root()


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena: int  # bytes: the planned peak
    unplanned: int  # bytes: every tensor kept (inputs included)
    offsets: dict[str, int] = field(default_factory=dict)  # tensor -> arena offset
    # concats whose every input is written in its place in the output: nothing left to copy
    concats_in_place: set[str] = field(default_factory=set)

    def in_place(self) -> dict[str, str]:
        """Tensor -> the earlier tensor whose buffer it overwrites."""
        return {t: b.tensors[0] for b in self.buffers for t in b.tensors[1:]}


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def plan_memory(graph: Graph, batch: int = 1) -> MemoryPlan:
    g = infer(graph, batch) if any(isinstance(t.batch, str) for t in graph.inputs.values()) else graph
    steps = {n.name: i for i, n in enumerate(g.nodes)}
    last_use: dict[str, int] = {name: -1 for name in list(g.inputs) + list(steps)}
    for i, node in enumerate(g.nodes):
        for name in node.inputs:
            last_use[name] = i
    for name in g.outputs:
        last_use[name] = len(g.nodes)
    size = {name: _aligned(g.type_of(name).numel() * BYTES) for name in last_use}
    buffer_of: dict[str, Buffer] = {}
    buffers: list[Buffer] = []
    concats_in_place: set[str] = set()
    for name, t in g.inputs.items():
        buffer_of[name] = Buffer([name], size[name], -1, max(last_use[name], 0))
        buffers.append(buffer_of[name])
    for i, node in enumerate(g.nodes):
        first = node.inputs[0] if node.inputs else None
        reuse = (in_place(node.op) and first is not None and buffer_of[first].start >= 0  # (not an input's)
                 and last_use[first] == i and sum(buffer_of[j] is buffer_of[first] for j in node.inputs) == 1
                 and g.type_of(first) == node.type and buffer_of[first].end == i)
        if reuse:  # write over the input, which dies here
            buffer = buffer_of[first]
            buffer.tensors.append(node.name)
            buffer.end = max(last_use[node.name], i)  # an unused output still occupies it at step i
        elif is_view(node.op) and first is not None:
            buffer = buffer_of[first]
            buffer.tensors.append(node.name)
            buffer.end = max(buffer.end, last_use[node.name], i)
        else:
            buffer = Buffer([node.name], size[node.name], i, max(last_use[node.name], i))
            buffers.append(buffer)
            if node.op == "concat" and node.name not in g.outputs and _concat_in_place(g, node, i, buffer, buffer_of):
                concats_in_place.add(node.name)
        buffer_of[node.name] = buffer
    placed: list[Buffer] = []
    for buffer in sorted((b for b in buffers if b.parent is None), key=lambda b: (-b.size, b.start)):
        clashes = sorted((b.offset, b.offset + b.size) for b in placed
                         if b.start <= buffer.end and buffer.start <= b.end)
        offset = 0
        for lo, hi in clashes:
            if offset + buffer.size <= lo:
                break
            offset = max(offset, hi)
        buffer.offset = offset
        placed.append(buffer)
    for buffer in buffers:  # (a part's parent may itself be a part: resolve from the root down)
        if buffer.parent is not None:
            buffer.offset = _offset(buffer)
    arena = max((b.offset + b.size for b in buffers), default=0)
    unplanned = sum(g.type_of(name).numel() * BYTES for name in last_use)
    offsets = {t: b.offset for b in buffers for t in b.tensors}
    return MemoryPlan(buffers, arena, unplanned, offsets, concats_in_place)


def _offset(buffer: Buffer) -> int:
    return buffer.offset if buffer.parent is None else _offset(buffer.parent) + buffer.within


def _concat_in_place(g: Graph, node, i: int, buffer: Buffer, buffer_of: dict[str, Buffer]) -> bool:
    """Make the inputs of concat `node` (step i, output `buffer`) parts of its output buffer, each at
    its place in the output, so that their producers write there and the concat copies nothing.

    Only where a part is one contiguous run of the output (every dimension before the axis is 1:
    channels at batch 1), and only an input whose buffer is free to move: written by a step (not
    the caller's input), read last by this concat (the output may be overwritten in place later),
    holding no graph output, not yet part of another concat, and passed once. The output buffer
    then lives from its first part's first write. True: every input is in its place."""
    shape = g.type_of(node.name).shape
    if math.prod(shape[:node.attrs.axis]) != 1:
        return False
    within, placed = 0, 0
    for name in node.inputs:
        part = buffer_of[name]
        nbytes = g.type_of(name).numel() * BYTES
        if (part.start >= 0 and part.end == i and part.parent is None
                and not set(g.outputs).intersection(part.tensors)
                and sum(buffer_of[j] is part for j in node.inputs) == 1):
            part.parent, part.within, part.size = buffer, within, nbytes
            buffer.start = min(buffer.start, part.start)
            placed += 1
        within += nbytes
    return placed == len(node.inputs)
