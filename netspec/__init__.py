"""netspec: a declarative network compiler. CNNs written as YAML, validated, shape-inferred,
analysed, run and drawn."""
from __future__ import annotations

from .ir.graph import Graph, Node
from .ir.types import TensorType
from .passes.analysis import Summary
from .spec.errors import SpecError

__version__ = "0.1.0"


def _graph_svg(graph: Graph) -> str | None:
    """Jupyter's inline display of a graph: its architecture diagram as SVG (None, so the text
    repr shows, when graphviz's `dot` program is not installed)."""
    from .diagrams.diagram import to_svg
    return to_svg(graph)


def _summary_table(summary: Summary) -> str:
    from .report import table  # (presentation lives in report.py)
    return table(summary)


# Display hooks, attached here, above the layers they use: ir and passes import nothing of
# diagrams or report, so netspec's imports point one way.
Graph._repr_svg_ = _graph_svg
Summary.__str__ = _summary_table


def load(path, variant: str | None = None, params: dict | None = None, include=()) -> Graph:
    """Load a spec file into a typed graph (batch symbolic). Raises SpecError listing every mistake.

    The files a spec names (`imports:`, `extends:`) are read only from its own folder and below, and
    from the folders in `include` and $NETSPEC_PATH."""
    from .spec.load import load_graph
    return load_graph(path, variant, params, include)


def compile(graph: Graph, backend: str = "cpu", mode: str = "eval", weights=None, seed: int = 0,
            progress: bool = True, optimize: bool = True, loss=None):
    """Bind a graph to weights and a backend's kernels; returns an Executable with `run(inputs)`.

    weights: None (deterministic initialization from `seed`), a dict {"node.param": array}, or the
    path of a .safetensors file. The arrays of a dict are used as they are, not copied: to change
    weights, compile again (the CPU backend keeps per-array transforms, e.g. Winograd's, that an
    in-place edit would not reach). backend: "cpu" (Numba kernels), "cuda" (numba.cuda kernels on an NVIDIA
    GPU; raises netspec.backends.cuda.BackendUnavailable without one) or "reference" (plain numpy).
    progress: report on stderr when compiling kernels takes more than a moment (first run only).
    optimize: run the graph passes first (batch-norm folding, dropout removal, dead code; see passes/).
    loss (train mode): "cross_entropy", "mse", a dict with "op" and the loss's attributes
    ({"op": "cross_entropy", "label_smoothing": 0.1}), or {output name: loss} for a network with
    several outputs; then `exe.grad(x, y)` gives the loss and every parameter's gradient.
    """
    from .backends.executor import Executable, reference_kernels
    from .weights import check_weights, init_weights, load_weights

    if backend not in ("cpu", "cuda", "reference"):
        raise ValueError(f"unknown backend '{backend}'; available: cpu, cuda, reference")

    if weights is None:
        weights = init_weights(graph, seed)
    elif isinstance(weights, dict):
        weights = check_weights(graph, weights)
    else:
        weights = load_weights(weights, graph)
    graph = graph.active(mode)
    if optimize:
        from .passes.manager import optimize as optimize_graph
        graph, weights = optimize_graph(graph, weights, mode)
    if backend == "cpu":
        from .backends.cpu import KERNELS, TRAINING_KERNELS, warm_up
        from .progress import StderrProgress
        kernels = KERNELS if mode == "eval" else {**KERNELS, **TRAINING_KERNELS}
        # Compile (or load from the cache) every kernel the graph needs now, not in the middle of a run.
        with StderrProgress("compiling CPU kernels", note="cached for later runs") as bar:
            warm_up({node.op for node in graph.nodes}, progress=bar if progress else None, graph=graph)
        if loss is not None:  # and the gradient kernels a training step will call
            from .backends.cpu.backward import FAST_OPS, warm_up as warm_gradients
            names = sorted({node.op for node in graph.nodes} & set(FAST_OPS))
            from .backends.cpu.kernels import reporting_compiles
            with StderrProgress("compiling CPU gradient kernels", note="cached for later runs") as bar, \
                    reporting_compiles(bar.working if progress else None):  # (shown only when Numba compiles)
                for done, name in enumerate(names):
                    if progress:
                        bar(done, len(names), name)
                    warm_gradients([name], graph=graph)
                if progress:
                    bar(len(names), len(names), "")
    elif backend == "reference":
        kernels = reference_kernels()
    elif backend == "cuda":
        if loss is not None:
            raise ValueError("gradients run on the cpu and reference backends; the cuda backend runs inference only")
        from .backends import cuda
        return cuda.compile(graph, weights, mode=mode, seed=seed)
    programs = None
    if backend == "cpu":
        from .backends.cpu import program as programs
    return Executable(graph, weights, kernels, mode=mode, seed=seed, backend=backend, arena=backend == "cpu",
                      loss=loss, programs=programs)


def train(graph: Graph, data, out=None, **options):
    """Train a graph on data and return the run's History (rows per epoch, the best epoch).

    data: "digits" (scikit-learn's handwritten digits), an ImageFolder or segmentation folder, a .npz
    file with x and y, or a tuple (x, y) of arrays. out: the run folder (checkpoints, metrics.csv,
    curves.png; None writes nothing). options: backend, weights, resume, force, threads, progress, and
    the settings epochs, batch, loss, optimizer, lr, momentum, nesterov, weight_decay, betas, eps,
    schedule, warmup, step_size, gamma, label_smoothing, val_split, seed, augment (over the spec's `train:`).
    See netspec/training/loop.py."""
    from .training.loop import train as _train
    return _train(graph, data, out, **options)


def predict(graph, source, out=None, **options):
    """Run a graph (or a spec's path) over many inputs: a folder, a glob, a .txt list of paths or a
    .npy/.npz batch. Returns an iterator of result rows (dicts: path, class, score, ... for a
    classifier), written to `out` (.csv, .jsonl, .parquet) as they come when given. options: weights,
    seed, batch, top, labels, threads, cluster ("local:N" or a scheduler's address), resume, force,
    progress. See netspec/predictions.py."""
    from .predictions import predict as _predict
    return _predict(graph, source, out, **options)


def summary(graph: Graph, batch: int = 1, mode: str = "eval"):
    """Per-node and total analysis (params, MACs, FLOPs, memory, receptive field)."""
    from .passes.analysis import analyze
    return analyze(graph, batch=batch, mode=mode)


def render(graph: Graph, depth: int | str | None = None, rankdir: str = "TB", shapes: bool = True,
           show=(), scope: str | None = None):
    """The architecture diagram as a graphviz.Digraph (`.source` is the DOT text; `.render()`/`.pipe()`
    need graphviz's `dot` program). depth: name levels before blocks fold into one node, an int, "full",
    or "auto"/None (fits one screen); show: ("params", "macs"); scope: draw only the nodes under a name."""
    from .diagrams.diagram import render as _render
    return _render(graph, depth=depth, rankdir=rankdir, shapes=shapes, show=show, scope=scope)


__all__ = ["Graph", "Node", "SpecError", "TensorType", "compile", "load", "predict", "render", "summary", "train"]
