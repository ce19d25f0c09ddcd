"""Epilogue fusion (inference): a conv2d or linear takes over the nodes around it that only it
feeds, becoming a fused_conv2d or fused_linear (ops/fused.py), so the value is made in one kernel
call instead of one pass over memory per node:

- gate (squeeze-excitation): a `mul` of x by an N×C×1×1 tensor, read only by a pointwise conv2d
  (1×1, stride 1, no padding, groups 1). Where it pays: the conv scales its weights per image
  (C_out × C_in products) instead of a pass over x; other convs would have to scale x anyway.
- residual: an `add` of two tensors of the same shape, one of them the conv's (or linear's)
  output and read by nothing else, the other computed before the conv (a graph input or an
  earlier node); of two convs meeting in an add, the later takes it.
- activation: an elementwise activation that is the only reader of the value so far.

Nothing fuses across a value another node reads or a graph output, so no name anyone sees
disappears and no reader sees a different value. The fused node keeps the conv's name, place and
parameters; readers of the last fused node read it instead.

`fuse_squeeze_excitation` then makes a squeeze-excitation block's gate one node: a
global_avgpool, a 1×1 convolution and another 1×1 convolution after it (each with what
fuse_epilogues gave it: its activation) become one squeeze_excitation node (ops/fused.py). It
pays in time, not memory: the gate is small, but three kernel calls cost ~40 µs each inside a
network (Python runs on cold caches there), far more than their arithmetic.
"""
from __future__ import annotations

from dataclasses import replace

from .. import ops
from ..ir.graph import Graph, Node, Weights
from ..ops.fused import activation_alpha

FUSED = {"conv2d": "fused_conv2d", "linear": "fused_linear"}


def _pointwise(attrs) -> bool:
    return attrs.kernel == (1, 1) and attrs.stride == (1, 1) and attrs.pads == (0, 0, 0, 0) and attrs.groups == 1


def fuse_epilogues(graph: Graph, weights: Weights) -> tuple[Graph, Weights]:
    readers = graph.consumers()
    position = {name: -1 for name in graph.inputs} | {n.name: i for i, n in enumerate(graph.nodes)}

    def sole_reader(name: str) -> Node | None:
        """The one node reading `name`, if neither is a graph output (both names would disappear)."""
        users = readers[name]  # a node reading a value twice is listed twice
        if len(users) != 1 or name in graph.outputs or users[0] in graph.outputs:
            return None
        return graph.node(users[0])

    fused: dict[str, Node] = {}  # producer name -> its fused node
    absorbed: dict[str, str] = {}  # a node taken over -> the fused node now making its value
    for node in graph.nodes:
        if node.op not in FUSED:
            continue
        inputs, epilogue = [node.inputs[0]], {}
        mul = None if node.inputs[0] in graph.inputs else graph.node(node.inputs[0])
        if node.op == "conv2d" and _pointwise(node.attrs) and mul is not None and mul.op == "mul" \
                and sole_reader(mul.name) is node:
            x_type = graph.type_of(mul.name)
            x, gate = mul.inputs  # (mul broadcasts its second input)
            if graph.type_of(x) == x_type and graph.type_of(gate).shape == (x_type.batch, x_type.c, 1, 1):
                inputs, epilogue["gate"] = [x, gate], True
                absorbed[mul.name] = node.name
        tail = node.name  # the value the fused node makes so far
        user = sole_reader(tail)
        if user is not None and user.op == "add" and len(user.inputs) == 2:
            other = user.inputs[1] if user.inputs[0] == tail else user.inputs[0]
            if other != tail and graph.type_of(other) == node.type and position[other] < position[node.name]:
                inputs.append(other)
                epilogue["residual"] = True
                absorbed[user.name] = node.name
                tail, user = user.name, sole_reader(user.name)
        act = ops.get(user.op) if user is not None else None
        if act is not None and act.category == "activation" and act.elementwise and user.inputs == (tail,):
            epilogue["activation"] = user.op
            epilogue["alpha"] = activation_alpha(user.attrs)
            absorbed[user.name] = node.name
        if epilogue:
            op = ops.get(FUSED[node.op])
            attrs = op.attrs.model_construct(**dict(node.attrs), **epilogue)  # (validated already)
            fused[node.name] = replace(node, op=op.name, attrs=attrs, inputs=tuple(inputs))
    if not fused:
        return graph, weights
    nodes = [replace(fused.get(n.name, n), inputs=tuple(absorbed.get(i, i) for i in fused.get(n.name, n).inputs))
             for n in graph.nodes if n.name not in absorbed]
    return graph.replace_nodes(nodes), weights


FUSED_CONV = ("conv2d", "fused_conv2d")


def _channel_mixer(node: Node) -> bool:
    """Whether `node` is a pointwise convolution with no gate and no residual (after a global
    average: a linear layer on one value per channel)."""
    a = node.attrs
    return node.op in FUSED_CONV and _pointwise(a) and not getattr(a, "gate", False) and not getattr(a, "residual", False)


def _read_only_by(graph: Graph, readers: dict, name: str, node: Node) -> bool:
    """Whether `node` alone reads `name`, once, and `name` is no graph output (it will disappear;
    `node`'s own name may be an output: the fused node keeps the last one's)."""
    return readers[name] == [node.name] and name not in graph.outputs


def fuse_squeeze_excitation(graph: Graph, weights: Weights) -> tuple[Graph, Weights]:
    readers = graph.consumers()
    weights = dict(weights)
    fused: dict[str, Node] = {}  # the excitation conv's name -> the squeeze_excitation node
    absorbed: set[str] = set()  # the pool and squeeze conv each one replaces
    for excite in graph.nodes:
        if not _channel_mixer(excite) or excite.inputs[0] in graph.inputs:
            continue
        squeeze = graph.node(excite.inputs[0])
        if not _channel_mixer(squeeze) or not _read_only_by(graph, readers, squeeze.name, excite) \
                or squeeze.inputs[0] in graph.inputs:
            continue
        pool = graph.node(squeeze.inputs[0])
        if pool.op != "global_avgpool" or not _read_only_by(graph, readers, pool.name, squeeze) \
                or excite.attrs.out != graph.type_of(pool.name).c:
            continue
        attrs = ops.get("squeeze_excitation").attrs(
            hidden=squeeze.attrs.out, squeeze_bias=squeeze.attrs.bias, excite_bias=excite.attrs.bias,
            activation=getattr(squeeze.attrs, "activation", None), alpha=getattr(squeeze.attrs, "alpha", 0.0),
            gate_activation=getattr(excite.attrs, "activation", None), gate_alpha=getattr(excite.attrs, "alpha", 0.0))
        fused[excite.name] = replace(excite, op="squeeze_excitation", attrs=attrs, inputs=pool.inputs)
        absorbed |= {pool.name, squeeze.name}
        for conv, prefix in ((squeeze, "squeeze"), (excite, "excite")):  # the parameters, renamed
            for param in ("weight", "bias"):
                if f"{conv.name}.{param}" in weights:
                    weights[f"{excite.name}.{prefix}_{param}"] = weights.pop(f"{conv.name}.{param}")
    if not fused:
        return graph, weights
    return graph.replace_nodes([fused.get(n.name, n) for n in graph.nodes if n.name not in absorbed]), weights
