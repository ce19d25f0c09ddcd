"""Simplifying passes: identity and (inference-mode) dropout removal, dead-code elimination."""
from __future__ import annotations

from dataclasses import replace

from ..ir.graph import Graph, Weights

PASS_THROUGH = {"identity", "dropout"}  # in eval mode dropout is the identity


def remove_identities(graph: Graph, weights: Weights) -> tuple[Graph, Weights]:
    """Drop identity and dropout nodes (eval mode only); their users read their input instead.
    A node that is a graph output stays, so output names do not change."""
    through: dict[str, str] = {}
    nodes = []
    for node in graph.nodes:
        inputs = tuple(through.get(i, i) for i in node.inputs)
        if node.op in PASS_THROUGH and node.name not in graph.outputs:
            through[node.name] = inputs[0]
            continue
        nodes.append(replace(node, inputs=inputs))
    return graph.replace_nodes(nodes), weights


def eliminate_dead_code(graph: Graph, weights: Weights) -> tuple[Graph, Weights]:
    """Drop nodes no output depends on, and their parameters."""
    live = set(graph.outputs)
    for node in reversed(graph.nodes):
        if node.name in live:
            live.update(node.inputs)
    nodes = [n for n in graph.nodes if n.name in live]
    dead = {n.name for n in graph.nodes} - live
    kept = {k: v for k, v in weights.items() if k.rsplit(".", 1)[0] not in dead}
    return graph.replace_nodes(nodes), kept
