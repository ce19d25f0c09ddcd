"""Reverse-mode differentiation as a graph pass: a network (in train mode) and its losses become one
training graph, forward and backward, whose nodes the rest of the pipeline treats like any other
(verification, `--dump-passes`, memory planning, kernels).

    forward nodes → loss nodes (one per output; their sum is `loss`) → gradient nodes, in reverse

Each forward node contributes, for its output's gradient dy, one `grad` node (ops/grad.py) per
trainable parameter and per input a gradient flows into, reading only the forward values its op's
backward rule `uses` (so the memory plan keeps an activation only while a gradient reads it). A
tensor read by several nodes gets one contribution from each, summed by an `add` node.

Names: the gradient of tensor or parameter `t` is `∇t` ("∇layer1.0.conv1.weight"); a contribution
to a tensor read several times is `∇t#k`. The training graph's outputs are `loss`, the network's
outputs, every parameter's gradient, and with `wrt_input` every input's.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Mapping

from .. import ops
from ..ir.graph import Graph, Node
from ..ir.types import TensorType
from ..ops.grad import GradAttrs
from ..ops.loss import LOSSES, target_type
from ..ops.registry import NoAttrs, ShapeError, infer_output

GRAD = "∇"
LOSS = "loss"


class TrainingError(ValueError):
    """A network that cannot be trained as asked: a loss that does not fit an output, an output
    without a loss, an op without a backward rule."""


@dataclass(frozen=True)
class Loss:
    output: str  # the network output it scores
    op: str  # "cross_entropy" or "mse"
    attrs: object
    target: str  # the training graph's input holding the labels or target values


def parse_losses(graph: Graph, loss) -> list[Loss]:
    """`loss` as compile() takes it: a name ("cross_entropy", "mse"), a dict with "op" and its
    attributes ({"op": "cross_entropy", "label_smoothing": 0.1}), or for a network with several
    outputs a dict {output name: either of those}, one for each output."""
    outputs = list(graph.outputs)
    several = len(outputs) > 1
    if isinstance(loss, Mapping) and "op" not in loss:
        named = dict(loss)
    elif several:
        raise TrainingError(f"this network has {len(outputs)} outputs ({', '.join(outputs)}): name a loss for each, "
                            f"e.g. loss={{{', '.join(repr(o) + ': ' + repr('cross_entropy') for o in outputs)}}}")
    else:
        named = {outputs[0]: loss}
    unknown = [o for o in named if o not in outputs]
    if unknown:
        raise TrainingError(f"loss named for {', '.join(map(repr, unknown))}, which is not an output of this network; "
                            f"its outputs: {', '.join(outputs)}")
    missing = [o for o in outputs if o not in named]
    if missing:
        raise TrainingError(f"no loss named for output{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}: "
                            "every output needs one (loss={output: 'cross_entropy' or 'mse', ...})")
    losses = []
    for output in outputs:
        spec = named[output]
        attrs = {}
        if isinstance(spec, Mapping):
            attrs = {k: v for k, v in spec.items() if k != "op"}
            spec = spec.get("op")
        if spec not in LOSSES:
            raise TrainingError(f"unknown loss {spec!r}; available: {', '.join(LOSSES)}")
        try:
            parsed = LOSSES[spec].model_validate(attrs)
        except ValueError as e:  # pydantic's ValidationError
            raise TrainingError(f"loss {spec}: {_first_error(e)}") from None
        try:
            target_type(spec, graph.type_of(output))
        except ShapeError as e:
            raise TrainingError(f"loss {spec} does not fit output '{output}': {e}") from None
        losses.append(Loss(output, spec, parsed, "target" if not several else f"target.{output}"))
    return losses


def default_loss(graph: Graph):
    """The loss `summary --mode train`, `compile --mode train` and `netspec train` assume when none is
    named: the spec's (`train: {loss: ...}`), else for each output cross_entropy where it fits
    (logits, per-pixel logits), else mse."""
    if graph.train.get("loss") is not None:
        return graph.train["loss"]
    chosen = {}
    for output in graph.outputs:
        try:
            target_type("cross_entropy", graph.type_of(output))
            chosen[output] = "cross_entropy"
        except ShapeError:
            chosen[output] = "mse"
    return chosen


def _first_error(e) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(e)


def differentiate(graph: Graph, losses: list[Loss], wrt_input: bool = False) -> Graph:
    """The training graph of `graph` (active in train mode) under `losses` (see the module doc)."""
    types: dict[str, TensorType] = dict(graph.inputs)
    types.update((n.name, n.type) for n in graph.nodes)
    inputs = dict(graph.inputs)
    nodes = list(graph.nodes)

    def add_node(name: str, op: str, attrs, args: list[str]) -> str:
        t = infer_output(ops.get(op), attrs, [types[a] for a in args])
        nodes.append(Node(name, op, attrs, tuple(args), t))
        types[name] = t
        return name

    loss_nodes = []
    for loss in losses:
        inputs[loss.target] = types[loss.target] = target_type(loss.op, types[loss.output])
        name = LOSS if len(losses) == 1 else f"{LOSS}.{loss.output}"
        add_node(name, loss.op, loss.attrs, [loss.output, loss.target])
        loss_nodes.append(nodes[-1])
    forward = list(graph.nodes) + loss_nodes

    # which tensors a gradient must reach: those computed from a trainable parameter (or an input, if asked)
    requires = {name: wrt_input for name in graph.inputs}
    for node in forward:
        op = _differentiable(node)
        has_params = any(spec.trainable for spec in _params(node, types).values())
        requires[node.name] = has_params or any(requires.get(i, False) and op.backward.differentiable(node.attrs, k)
                                                for k, i in enumerate(node.inputs))
    edges = Counter(i for node in forward for k, i in enumerate(node.inputs)
                    if requires.get(i, False) and ops.get(node.op).backward.differentiable(node.attrs, k))

    contributions: dict[str, list[str]] = {}
    gradients = []
    for node in reversed(forward):
        if node in loss_nodes:
            dy = None
        elif node.name in contributions:
            dy = _sum(node.name, contributions[node.name], add_node)
        else:
            continue  # nothing reaches it (it does not lead to a loss)
        op = ops.get(node.op)
        specs = _params(node, types)

        def grad(wrt, dims, batched, name):
            uses = op.backward.uses(node.attrs, wrt)
            args = ([] if dy is None else [dy]) + (list(node.inputs) if "inputs" in uses else []) \
                + ([node.name] if "output" in uses else [])
            attrs = GradAttrs(op=node.op, node=node.name, wrt=wrt, forward=node.attrs, uses=tuple(uses),
                              inputs=len(node.inputs), input_dims=tuple(types[i].dims for i in node.inputs),
                              dims=tuple(dims), batched=batched, seed=dy is None,
                              params=tuple(specs))
            return add_node(name, "grad", attrs, args)

        for p, spec in specs.items():
            if spec.trainable:
                gradients.append(grad(p, spec.shape, False, f"{GRAD}{node.name}.{p}"))
        for k, i in enumerate(node.inputs):
            if requires.get(i, False) and op.backward.differentiable(node.attrs, k):
                parts = contributions.setdefault(i, [])
                name = f"{GRAD}{i}" if edges[i] == 1 else f"{GRAD}{i}#{len(parts) + 1}"
                parts.append(grad(k, types[i].dims, True, name))
    if wrt_input:
        gradients += [_sum(name, contributions[name], add_node) for name in graph.inputs if name in contributions]
    if len(losses) > 1:
        add_node(LOSS, "add", NoAttrs(), [n.name for n in loss_nodes])
    return Graph(graph.name, inputs, nodes, [LOSS] + list(graph.outputs) + gradients, graph.scopes, graph.params,
                 graph.variant, graph.source, graph.preprocess)


def _sum(name: str, parts: list[str], add_node) -> str:
    return parts[0] if len(parts) == 1 else add_node(f"{GRAD}{name}", "add", NoAttrs(), parts)


def _params(node: Node, types: dict[str, TensorType]):
    return ops.get(node.op).params(node.attrs, [types[i] for i in node.inputs])


def _differentiable(node: Node):
    op = ops.get(node.op)
    if op.backward is None:
        hint = " (a pass made it for inference: compile in train mode)" if op.internal else ""
        raise TrainingError(f"node '{node.name}': op {node.op} has no backward rule{hint}")
    return op

