"""Batch-norm folding (inference): conv2d or linear followed by batchnorm2d becomes one conv2d or
linear with rescaled weights and a bias:

    y = gamma · (W x + b - mean) / sqrt(var + eps) + beta
      = (s · W) x + (s · (b - mean) + beta),       s = gamma / sqrt(var + eps) per output channel

It fires only when the batch norm is the conv's sole user and is not a graph output (so no name
a user sees disappears); a conv whose output is also read elsewhere keeps its batch norm.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..ir.graph import Graph, Weights

FOLDABLE = {"conv2d", "linear"}


def fold_batchnorm(graph: Graph, weights: Weights) -> tuple[Graph, Weights]:
    users = graph.consumers()
    producer = {n.name: n for n in graph.nodes}
    folded: dict[str, str] = {}  # batch norm name -> the conv it was folded into
    weights = dict(weights)
    for bn in graph.nodes:
        if bn.op != "batchnorm2d" or bn.name in graph.outputs:
            continue
        conv = producer.get(bn.inputs[0])
        if conv is None or conv.op not in FOLDABLE or users[conv.name] != [bn.name] or conv.name in graph.outputs:
            continue
        a = bn.attrs
        gamma = weights[f"{bn.name}.weight"] if a.affine else np.ones_like(weights[f"{bn.name}.running_var"])
        beta = weights[f"{bn.name}.bias"] if a.affine else np.zeros_like(gamma)
        mean, var = weights[f"{bn.name}.running_mean"], weights[f"{bn.name}.running_var"]
        # the per-channel vectors in float64; the weight product in float32 (w · float32(s): one
        # rounding more than a float64 product, and no float64 copy of the weights, which cost
        # ResNet-50 0.18 s of start-up)
        scale = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + a.eps))
        w = weights[f"{conv.name}.weight"]
        b = weights.get(f"{conv.name}.bias", np.zeros(w.shape[0], np.float32)).astype(np.float64)
        weights[f"{conv.name}.weight"] = (w * scale.astype(np.float32).reshape((-1,) + (1,) * (w.ndim - 1))).astype(
            np.float32, copy=False)  # (float32 whatever the caller's weights were; no copy when they are)
        weights[f"{conv.name}.bias"] = (scale * (b - mean) + beta).astype(np.float32)
        for key in ("weight", "bias", "running_mean", "running_var"):
            weights.pop(f"{bn.name}.{key}", None)
        folded[bn.name] = conv.name
    if not folded:
        return graph, weights
    convs = set(folded.values())
    nodes = []
    for node in graph.nodes:
        if node.name in folded:
            continue
        inputs = tuple(folded.get(i, i) for i in node.inputs)
        if node.name in convs and not node.attrs.bias:
            node = replace(node, attrs=node.attrs.model_copy(update={"bias": True}))
        nodes.append(replace(node, inputs=inputs))
    return graph.replace_nodes(nodes), weights
