"""Text forms of the IR: a compact description of a node's attributes, and a graph listing."""
from __future__ import annotations

from dataclasses import replace

from .graph import Graph, Node


def _pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"{v[0]}×{v[1]}"


def _kernel(v) -> str:
    return f"{v[0]}×{v[1]}"


def describe(node: Node) -> str:
    """A short label: `conv 3×3 /2, 64`, `maxpool 3×3 /2`, `linear 4096`, `dropout 0.5`."""
    a = node.attrs
    if node.op in ("fused_conv2d", "fused_linear"):  # the base op's label and what it took over
        parts = [describe(replace(node, op=node.op.removeprefix("fused_")))]
        parts += ["gate"] * a.gate + ["residual"] * a.residual + [a.activation] * (a.activation is not None)
        return " + ".join(parts)
    if node.op in ("conv2d", "conv_transpose2d"):
        name = "conv" if node.op == "conv2d" else "convT"
        text = f"{name} {_kernel(a.kernel)}"
        if a.stride != (1, 1):
            text += f" /{_pair(a.stride)}"
        if a.dilation != (1, 1):
            text += f" dil {_pair(a.dilation)}"
        text += f", {a.out}"
        if a.groups > 1:
            text += " dw" if a.groups == a.out and node.op == "conv2d" else f" g{a.groups}"
        return text
    if node.op in ("maxpool2d", "avgpool2d"):
        text = f"{node.op[:-2]} {_kernel(a.kernel)}"
        return text + (f" /{_pair(a.stride)}" if a.stride != (1, 1) else "")
    if node.op == "linear":
        return f"linear {a.out}"
    if node.op == "grad":
        return a.label()
    if node.op == "dropout":
        return f"dropout {a.p:g}"
    if node.op == "leaky_relu":
        return f"leaky_relu {a.slope:g}"
    if node.op == "maxout":
        return f"maxout {a.pieces}"
    if node.op == "lrn":
        return f"lrn {a.size}"
    if node.op == "adaptive_avgpool2d":
        return f"adaptive_avgpool {_kernel(a.size)}"
    if node.op == "center_crop":
        return f"crop {_kernel(a.size)}"
    if node.op == "reshape":
        return "reshape " + "×".join(str(d) for d in a.shape)
    return node.op


def format_graph(graph: Graph) -> str:
    """One line per node: `name = op(inputs) attrs : type`."""
    lines = [f"graph {graph.name}(" + ", ".join(f"{n}: {t}" for n, t in graph.inputs.items()) + ")"]
    for node in graph.nodes:
        if node.op == "grad":  # what it differentiates, not the forward node's attributes again
            attrs = f"{node.attrs.label()} of {node.attrs.node}"
        else:
            attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.model_dump().items())
        mode = f"  [{node.mode} only]" if node.mode else ""
        lines.append(f"  {node.name} = {node.op}({', '.join(node.inputs)}) {{{attrs}}} : {node.type}{mode}")
    lines.append(f"  return {', '.join(graph.outputs)}")
    return "\n".join(lines)
