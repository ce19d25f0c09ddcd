"""The pass manager: runs graph-to-graph passes in order and verifies the graph after each one.

A pass is a function `(graph, weights) -> (graph, weights)`: passes such as batch-norm folding
rewrite parameters as well as nodes. Each pass is a separate, tested function in this package;
the manager only sequences them and records what each changed (for `--dump-passes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir.graph import Graph, Weights
from ..ir.verify import verify
from .fold_bn import fold_batchnorm
from .fuse import fuse_epilogues, fuse_squeeze_excitation
from .simplify import eliminate_dead_code, remove_identities

Pass = Callable[[Graph, Weights], tuple[Graph, Weights]]


@dataclass
class PassRecord:
    name: str
    graph: Graph
    removed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{len(self.removed)} removed", f"{len(self.added)} added", f"{len(self.changed)} changed"]
        return f"{self.name}: {', '.join(parts)} → {len(self.graph.nodes)} nodes"


def diff(before: Graph, after: Graph, name: str) -> PassRecord:
    old = {n.name: n for n in before.nodes}
    new = {n.name: n for n in after.nodes}
    return PassRecord(
        name, after,
        removed=[n for n in old if n not in new],
        added=[n for n in new if n not in old],
        changed=[n for n in new if n in old and new[n] != old[n]],
    )


def run_passes(graph: Graph, weights: Weights, passes: list[tuple[str, Pass]],
               records: list[PassRecord] | None = None) -> tuple[Graph, Weights]:
    """Apply `passes` in order, verifying after each; append a PassRecord per pass to `records`."""
    for name, apply in passes:
        after, weights = apply(graph, weights)
        verify(after)
        if records is not None:
            records.append(diff(graph, after, name))
        graph = after
    return graph, weights


def optimize(graph: Graph, weights: Weights, mode: str = "eval", records: list[PassRecord] | None = None,
             losses=None) -> tuple[Graph, Weights]:
    """The standard pipeline for running `graph` in `mode` (the graph must already be `active(mode)`);
    with `losses` (train mode, autodiff.parse_losses), it ends in the training graph."""
    passes: list[tuple[str, Pass]] = [("dce", eliminate_dead_code)]
    if mode == "eval":
        passes = [("remove_identities", remove_identities), ("fold_bn", fold_batchnorm),
                  ("fuse_epilogues", fuse_epilogues), ("fuse_squeeze_excitation", fuse_squeeze_excitation)] + passes
    if losses is not None:
        from .autodiff import differentiate
        passes.append(("autodiff", lambda g, w: (differentiate(g, losses), w)))
    return run_passes(graph, weights, passes, records)
