"""The graph IR: named nodes in topological order, each with its op, attributes, inputs and type."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator

import numpy as np

from ..ops.registry import Attrs
from ..spec.errors import Trace
from .types import TensorType

Weights = dict[str, np.ndarray]  # a graph's parameters by key (`layer1.0.conv1.weight`)


@dataclass(frozen=True)
class Node:
    name: str  # hierarchical: layer3.1.conv2
    op: str  # a registered op's canonical name
    attrs: Attrs
    inputs: tuple[str, ...]  # names of graph inputs or earlier nodes
    type: TensorType  # the output type
    mode: str | None = None  # "train" or "eval" for nodes that exist in one mode only
    init: tuple[tuple[str, tuple[str, float | None]], ...] = ()  # (param, (initializer, value)) from the spec
    trace: Trace | None = field(default=None, compare=False)  # where it was written


@dataclass(frozen=True)
class ScopeInfo:
    """A named level of the hierarchy made by a block, a group or a repeat (for folding and drawing)."""

    kind: str  # "block", "group" or "repeat"
    label: str  # the block's name, or "group"
    count: int | None = None  # iterations, for a repeat


@dataclass
class Graph:
    name: str
    inputs: dict[str, TensorType]
    nodes: list[Node]
    outputs: list[str]
    scopes: dict[str, ScopeInfo] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)  # the spec parameters it was built with
    variant: str | None = None
    source: str | None = None  # the spec file
    preprocess: dict[str, Any] = field(default_factory=dict)  # image → input: {"mean": [...], "std": [...]}
    train: dict[str, Any] = field(default_factory=dict)  # the spec's `train:` settings (netspec train's defaults)

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def type_of(self, name: str) -> TensorType:
        return self.inputs[name] if name in self.inputs else self._by_name[name].type

    def consumers(self) -> dict[str, list[str]]:
        users: dict[str, list[str]] = {name: [] for name in list(self.inputs) + [n.name for n in self.nodes]}
        for n in self.nodes:
            for i in n.inputs:
                users[i].append(n.name)
        return users

    def replace_nodes(self, nodes: list[Node], outputs: list[str] | None = None) -> "Graph":
        return replace(self, nodes=nodes, outputs=list(self.outputs if outputs is None else outputs))

    def active(self, mode: str) -> "Graph":
        """The graph as it runs in `mode`: nodes of the other mode are bypassed (consumers take their input)."""
        through: dict[str, str] = {}
        dropped: set[str] = set()  # bypassed nodes that change the shape (an auxiliary head)
        nodes = []
        for n in self.nodes:
            inputs = tuple(through.get(i, i) for i in n.inputs)
            if n.mode is not None and n.mode != mode:
                through[n.name] = inputs[0]
                if n.type != self.type_of(n.inputs[0]):
                    dropped.add(n.name)
                continue
            nodes.append(replace(n, inputs=inputs))
        outputs = []
        for o in self.outputs:  # an output bypassed here is its input, unless it was a different tensor
            if o not in dropped and through.get(o, o) not in outputs:
                outputs.append(through.get(o, o))
        return self.replace_nodes(nodes, outputs)

    def __repr__(self) -> str:
        return f"<Graph {self.name}: {len(self.nodes)} nodes, inputs {list(self.inputs)}, outputs {self.outputs}>"
