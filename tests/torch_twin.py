"""A PyTorch twin of a netspec graph: the same network evaluated node by node with torch.nn.functional,
so that PyTorch's autograd can judge netspec's forward values, gradients and batch-norm statistics.

Not a test file itself (no `test_` prefix); the tests import it after `pytest.importorskip("torch")`.
Parameters are read from weights["<node name>.<param>"], netspec's own keys; the twin computes in the
dtype of x and of the weights (float64 as the judge).

Kinks. A float32 forward pass and a float64 one disagree on the branch a ReLU takes where its input
lies within rounding of 0, and on a max pool's winner where two inputs lie within rounding of each
other. Each such element moves a whole term of some gradient (a batch-norm network at initialization
has thousands of ReLU elements at |x| < 1e-6 of the scale), far beyond float32 rounding, though both
gradients are right for their own forward pass. `pinned` takes those decisions from netspec's own
forward values instead (`kink_inputs` names the ones needed), so that only rounding remains.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from netspec import ops
from netspec.ir.graph import Graph, Node
from netspec.weights import param_specs


def torch_weights(graph: Graph, weights: Mapping[str, np.ndarray], dtype: torch.dtype = torch.float64,
                  requires_grad: bool = True) -> dict[str, torch.Tensor]:
    """netspec's weights as torch tensors (copies), trainable ones with requires_grad: the leaves
    whose .grad the tests compare. Batch-norm running statistics are plain buffers."""
    specs = param_specs(graph)
    out = {}
    for key, array in weights.items():
        t = torch.tensor(np.asarray(array), dtype=dtype)
        if requires_grad and specs[key].trainable:
            t.requires_grad_(True)
        out[key] = t
    return out


def _conv2d(node: Node, xs, p, train):
    a = node.attrs
    (x,) = xs
    t, l, b, r = a.pads
    if a.groups > 1 and a.groups == x.shape[1]:
        return _depthwise(x, p["weight"], p.get("bias"), a.stride, a.pads, a.dilation)
    if (t, l) != (b, r):  # asymmetric 'same' (even kernel): pad explicitly, the extra row/column bottom/right
        x = F.pad(x, (l, r, t, b))
        t = l = 0
    return F.conv2d(x, p["weight"], p.get("bias"), a.stride, (t, l), a.dilation, a.groups)


def _depthwise(x, weight, bias, stride, pads, dilation):
    """A depthwise convolution as a sum over the kernel's taps of strided slices times per-channel weights.
    torch's float64 grouped convolution loops over the groups (thousands of tiny calls in a MobileNet step,
    each a parallel region: seconds, and tens of seconds on a busy machine); this is a few dozen whole ops."""
    t, l, b, r = pads
    (sh, sw), (dh, dw) = stride, dilation
    c_out, _, kh, kw = weight.shape
    if c_out != x.shape[1]:  # a channel multiplier: output channel o reads input channel o // (C_out / C)
        x = x.repeat_interleave(c_out // x.shape[1], dim=1)
    x = F.pad(x, (l, r, t, b))
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = 0
    for i in range(kh):
        for j in range(kw):
            window = x[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            y = y + window * weight[:, 0, i, j].reshape(1, -1, 1, 1)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def _conv_transpose2d(node: Node, xs, p, train):
    a = node.attrs
    (x,) = xs
    return F.conv_transpose2d(x, p["weight"], p.get("bias"), a.stride, a.padding, a.output_padding, a.groups,
                              a.dilation)


def _maxpool2d(node: Node, xs, p, train, pinned=None):
    a = node.attrs
    (x,) = xs
    if pinned is None:
        return F.max_pool2d(x, a.kernel, a.stride, a.padding, a.dilation, ceil_mode=a.ceil_mode)
    # each window's winner where netspec's input has it; x's value there (differentiable) is the output
    _, index = F.max_pool2d(pinned.to(x.dtype), a.kernel, a.stride, a.padding, a.dilation, ceil_mode=a.ceil_mode,
                            return_indices=True)
    n, c = x.shape[:2]
    return x.reshape(n, c, -1).gather(2, index.reshape(n, c, -1)).reshape(index.shape)


def _relu(node: Node, xs, p, train, pinned=None):
    (x,) = xs
    return F.relu(x) if pinned is None else x * (pinned > 0).to(x.dtype)


def _relu6(node: Node, xs, p, train, pinned=None):
    (x,) = xs
    if pinned is None:
        return F.relu6(x)
    return x * ((pinned > 0) & (pinned < 6)).to(x.dtype) + 6.0 * (pinned >= 6).to(x.dtype)


def _leaky_relu(node: Node, xs, p, train, pinned=None):
    (x,) = xs
    slope = node.attrs.slope
    return F.leaky_relu(x, slope) if pinned is None else torch.where(pinned > 0, x, slope * x)


def _avgpool2d(node: Node, xs, p, train):
    a = node.attrs
    return F.avg_pool2d(xs[0], a.kernel, a.stride, a.padding, ceil_mode=a.ceil_mode,
                        count_include_pad=a.count_include_pad)


def _batchnorm2d(node: Node, xs, p, train):
    a = node.attrs
    # training=True updates running_mean/running_var in place (momentum, unbiased variance), as nn.BatchNorm2d
    return F.batch_norm(xs[0], p["running_mean"], p["running_var"], p.get("weight"), p.get("bias"),
                        training=train, momentum=a.momentum, eps=a.eps)


def _maxout(node: Node, xs, p, train):
    (x,) = xs
    k = node.attrs.pieces
    return x.reshape((x.shape[0], x.shape[1] // k, k) + tuple(x.shape[2:])).amax(dim=2)


def _center_crop(node: Node, xs, p, train):
    (x,) = xs
    (h, w), (H, W) = node.attrs.size, x.shape[2:]
    top, left = (H - h) // 2, (W - w) // 2  # an odd margin leaves the extra row/column at the bottom/right
    return x[:, :, top:top + h, left:left + w]


def _add(node: Node, xs, p, train):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


Rule = Callable[[Node, list, dict, bool], torch.Tensor]

RULES: dict[str, Rule] = {
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "global_avgpool": lambda n, xs, p, train: xs[0].mean(dim=(2, 3), keepdim=True),
    "adaptive_avgpool2d": lambda n, xs, p, train: F.adaptive_avg_pool2d(xs[0], n.attrs.size),
    "batchnorm2d": _batchnorm2d,
    "lrn": lambda n, xs, p, train: F.local_response_norm(xs[0], n.attrs.size, n.attrs.alpha, n.attrs.beta,
                                                         n.attrs.k),
    "identity": lambda n, xs, p, train: xs[0],
    "relu": _relu,
    "relu6": _relu6,
    "sigmoid": lambda n, xs, p, train: torch.sigmoid(xs[0]),
    "tanh": lambda n, xs, p, train: torch.tanh(xs[0]),
    "leaky_relu": _leaky_relu,
    "elu": lambda n, xs, p, train: F.elu(xs[0], n.attrs.alpha),
    "silu": lambda n, xs, p, train: F.silu(xs[0]),
    "hardswish": lambda n, xs, p, train: F.hardswish(xs[0]),
    "softmax": lambda n, xs, p, train: F.softmax(xs[0], dim=n.attrs.axis),
    "maxout": _maxout,
    # torch draws its own mask: only p = 0 (or eval) can agree with netspec element for element
    "dropout": lambda n, xs, p, train: F.dropout(xs[0], n.attrs.p, training=train),
    "linear": lambda n, xs, p, train: F.linear(xs[0], p["weight"], p.get("bias")),
    "add": _add,
    "mul": lambda n, xs, p, train: xs[0] * xs[1],  # the second broadcasts (squeeze-excitation)
    "concat": lambda n, xs, p, train: torch.cat(xs, dim=n.attrs.axis),
    "flatten": lambda n, xs, p, train: torch.flatten(xs[0], 1),
    "reshape": lambda n, xs, p, train: xs[0].reshape([xs[0].shape[0]] + list(n.attrs.shape)),
    "center_crop": _center_crop,
}


# ops with a kink: the pinned value a node's rule takes is its own output (ReLUs: the sign tells the
# branch) or its input (max pool: the winner is recomputed from it)
KINKS = {"relu": "output", "relu6": "output", "leaky_relu": "output", "maxpool2d": "input"}


def kink_inputs(graph: Graph, train: bool) -> dict[str, str]:
    """{node: the value whose netspec forward value `torch_forward(..., pinned=)` needs for it}."""
    graph = graph.active("train" if train else "eval")
    return {n.name: n.name if KINKS[n.op] == "output" else n.inputs[0] for n in graph.nodes if n.op in KINKS}


def torch_forward(graph: Graph, weights: Mapping[str, torch.Tensor], x, train: bool,
                  pinned: Mapping[str, np.ndarray] | None = None) -> dict[str, torch.Tensor]:
    """Evaluate `graph` (its nodes of the other mode bypassed, as netspec does) on x with torch.

    weights: {"node.param": tensor}; in training, batch norm updates the running statistics in these
    tensors in place. x: a tensor for a single-input graph, or {input name: tensor}. pinned: netspec's
    forward values by name, at least those `kink_inputs` names: ReLUs and max pools then take netspec's
    branches and winners (see the module's doc). Returns {output name: tensor}, differentiable with
    respect to x and the weights."""
    kinks = kink_inputs(graph, train) if pinned is not None else {}
    graph = graph.active("train" if train else "eval")
    values = dict(x) if isinstance(x, Mapping) else {next(iter(graph.inputs)): x}
    if set(values) != set(graph.inputs):
        raise ValueError(f"inputs {sorted(values)} do not match the graph's {sorted(graph.inputs)}")
    for node in graph.nodes:
        rule = RULES.get(node.op)
        if rule is None:
            raise NotImplementedError(f"torch_twin has no rule for op '{node.op}' (node {node.name})")
        names = ops.get(node.op).params(node.attrs, [graph.type_of(i) for i in node.inputs])
        params = {p: weights[f"{node.name}.{p}"] for p in names}
        args = [values[i] for i in node.inputs]
        if node.name in kinks:
            values[node.name] = rule(node, args, params, train, pinned=torch.from_numpy(pinned[kinks[node.name]]))
        else:
            values[node.name] = rule(node, args, params, train)
    return {name: values[name] for name in graph.outputs}


def torch_loss(name: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean loss netspec's `loss=` adds: cross_entropy on N×K (or per pixel on N×K×H×W) logits with
    integer labels, or mse against a target of the output's shape."""
    if name == "cross_entropy":
        return F.cross_entropy(output, target.long())
    if name == "mse":
        return F.mse_loss(output, target.to(output.dtype))
    raise ValueError(f"unknown loss '{name}'")


class TorchTwin(torch.nn.Module):
    """torch_forward as a module: the trainable weights as nn.Parameters, the running statistics as buffers,
    keyed by netspec's names (dots become '/': a module's attribute names may not hold dots)."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray], dtype: torch.dtype = torch.float64):
        super().__init__()
        self.graph = graph
        specs = param_specs(graph)
        for key, array in weights.items():
            t = torch.tensor(np.asarray(array), dtype=dtype)
            if specs[key].trainable:
                self.register_parameter(key.replace(".", "/"), torch.nn.Parameter(t))
            else:
                self.register_buffer(key.replace(".", "/"), t)

    def netspec_weights(self) -> dict[str, torch.Tensor]:
        return {k.replace("/", "."): v for k, v in list(self.named_parameters()) + list(self.named_buffers())}

    def forward(self, x) -> dict[str, torch.Tensor]:
        return torch_forward(self.graph, self.netspec_weights(), x, self.training)
