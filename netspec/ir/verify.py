"""The graph verifier: the invariants every stage and every pass must keep.

A failure here is a bug in netspec (a pass or the builder), not a mistake in a spec; spec
mistakes are caught earlier with a file:line:col message.
"""
from __future__ import annotations

from .. import ops
from ..ops.registry import ShapeError, infer_output
from .graph import Graph


class GraphError(AssertionError):
    pass


def verify(graph: Graph) -> None:
    defined: set[str] = set(graph.inputs)
    for node in graph.nodes:
        if node.name in defined:
            raise GraphError(f"node name '{node.name}' is defined twice")
        op = ops.get(node.op)
        if op is None:
            raise GraphError(f"node '{node.name}' has unregistered op '{node.op}'")
        if not isinstance(node.attrs, op.attrs):
            raise GraphError(f"node '{node.name}' has attributes of type {type(node.attrs).__name__}, "
                             f"expected {op.attrs.__name__}")
        for name in node.inputs:
            if name not in defined:
                raise GraphError(f"node '{node.name}' uses '{name}', which is not defined before it")
        try:
            expected = infer_output(op, node.attrs, [graph.type_of(i) for i in node.inputs])
        except ShapeError as e:
            raise GraphError(f"node '{node.name}': {e}") from None
        if expected != node.type:
            raise GraphError(f"node '{node.name}' has type {node.type}, its shape rule gives {expected}")
        if node.mode not in (None, "train", "eval"):
            raise GraphError(f"node '{node.name}' has unknown mode {node.mode!r}")
        defined.add(node.name)
    if not graph.outputs:
        raise GraphError("the graph has no outputs")
    for name in graph.outputs:
        if name not in defined:
            raise GraphError(f"output '{name}' is not defined")
