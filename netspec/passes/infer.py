"""Shape inference: recompute every node's type, optionally for a concrete batch size."""
from __future__ import annotations

from dataclasses import replace

from .. import ops
from ..ir.graph import Graph
from ..ops.registry import infer_output


def infer(graph: Graph, batch: int | str | None = None) -> Graph:
    """The graph with types inferred from its inputs; `batch` replaces the batch dimension when given."""
    if batch is not None and not (isinstance(batch, str) or (isinstance(batch, int) and batch > 0)):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    inputs = {name: (t.with_batch(batch) if batch is not None else t) for name, t in graph.inputs.items()}
    types = dict(inputs)
    nodes = []
    for node in graph.nodes:
        out = infer_output(ops.get(node.op), node.attrs, [types[i] for i in node.inputs])
        types[node.name] = out
        nodes.append(replace(node, type=out))
    return replace(graph, inputs=inputs, nodes=nodes)
