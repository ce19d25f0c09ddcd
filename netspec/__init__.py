"""netspec: a declarative network compiler. CNNs written as YAML, validated, shape-inferred,
analysed, run and drawn."""
from __future__ import annotations

from .ir.graph import Graph, Node
from .ir.types import TensorType
from .spec.errors import SpecError

__version__ = "0.1.0"


def load(path, variant: str | None = None, params: dict | None = None) -> Graph:
    """Load a spec file into a typed graph (batch symbolic). Raises SpecError listing every mistake."""
    from .spec.load import load_graph
    return load_graph(path, variant, params)


def summary(graph: Graph, batch: int = 1, mode: str = "eval"):
    """Per-node and total analysis (params, MACs, FLOPs, memory, receptive field)."""
    from .passes.analysis import analyze
    return analyze(graph, batch=batch, mode=mode)


__all__ = ["Graph", "Node", "SpecError", "TensorType", "load", "summary"]
