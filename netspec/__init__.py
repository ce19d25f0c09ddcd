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


def compile(graph: Graph, backend: str = "cpu", mode: str = "eval", weights=None, seed: int = 0,
            progress: bool = True):
    """Bind a graph to weights and a backend's kernels; returns an Executable with `run(inputs)`.

    weights: None (deterministic initialization from `seed`), a dict {"node.param": array}, or the
    path of a .safetensors file. backend: "cpu" (Numba kernels) or "reference" (plain numpy).
    progress: report on stderr when compiling kernels takes more than a moment (first run only).
    """
    from .backends.executor import Executable, reference_kernels
    from .weights import check_weights, init_weights, load_weights

    if weights is None:
        weights = init_weights(graph, seed)
    elif isinstance(weights, dict):
        weights = check_weights(graph, weights)
    else:
        weights = load_weights(weights, graph)
    if backend == "cpu":
        from .backends.cpu import KERNELS, warm_up
        from .progress import StderrProgress
        kernels = KERNELS
        # Compile (or load from the cache) every kernel the graph needs now, not in the middle of a run.
        warm_up({node.op for node in graph.nodes}, progress=StderrProgress("preparing CPU kernels (compiled once, then cached)") if progress else None)
    elif backend == "reference":
        kernels = reference_kernels()
    else:
        raise ValueError(f"unknown backend '{backend}'; available: cpu, reference")
    return Executable(graph, weights, kernels, mode=mode, seed=seed, backend=backend)


def summary(graph: Graph, batch: int = 1, mode: str = "eval"):
    """Per-node and total analysis (params, MACs, FLOPs, memory, receptive field)."""
    from .passes.analysis import analyze
    return analyze(graph, batch=batch, mode=mode)


__all__ = ["Graph", "Node", "SpecError", "TensorType", "compile", "load", "summary"]
