"""ONNX export: a netspec graph and its weights as an ONNX model (opset 17).

Every netspec node becomes one ONNX node of the same name (`layer1.0.conv1`) whose output tensor has
that name too, and every parameter an initializer named `node.param` (`layer1.0.conv1.weight`). A few
ops need helper nodes (silu is x·Sigmoid(x), maxout a Reshape and a ReduceMax, non-uniform adaptive
pooling slices and means): helpers are named `node/part` and the node's own name stays on the ONNX node
that produces its output. Each such node carries a short `netspec: {...}` doc string with the netspec
op and attributes, shown by viewers such as Netron and used by `netspec import` to tell an adaptive
average pool from a plain one.

Modes: `eval` exports inference (batch normalization with running statistics, dropout as identity);
`train` exports BatchNormalization with training_mode=1, whose updated running statistics become extra
graph outputs `node.running_mean_next` and `node.running_var_next` (ONNX updates the variance with the
biased batch variance, PyTorch and netspec with the unbiased one), and Dropout with training_mode true.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..files import printable
from ..ir.graph import Graph, Node
from ..ops.fused import activation_attrs, attrs_of, split_inputs
from ..ops.pool import adaptive_bins

OPSET = 17
PRODUCER = "netspec"


class ExportError(ValueError):
    """A graph or option that cannot be exported; the message says why."""


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'netspec[onnx]' (or pip install onnx)") \
            from None
    return onnx


def _pair(v) -> list[int]:
    return [int(v[0]), int(v[1])]


def _hint(node: Node) -> str:
    attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in node.attrs.model_dump().items()}
    return "netspec: " + json.dumps({"op": node.op, **attrs}, separators=(", ", ": "))


class _Builder:
    def __init__(self, graph: Graph, weights: dict[str, np.ndarray], mode: str):
        from onnx import helper
        self.helper = helper
        self.graph, self.weights, self.mode = graph, weights, mode
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.extra_outputs: list[tuple[str, tuple[int, ...]]] = []

    # --- helpers -------------------------------------------------------------------------------------
    def const(self, name: str, value) -> str:
        self.initializers[name] = np.asarray(value)
        return name

    def param(self, node: Node, pname: str) -> str:
        key = f"{node.name}.{pname}"
        return self.const(key, np.ascontiguousarray(self.weights[key], dtype=np.float32))

    def add(self, op_type: str, inputs: list[str], output: str | list[str], name: str, doc: str | None = None,
            **attrs) -> str:
        outputs = [output] if isinstance(output, str) else output
        node = self.helper.make_node(op_type, inputs, outputs, name=name, **attrs)
        if doc:
            node.doc_string = doc
        self.nodes.append(node)
        return outputs[0]

    # --- one netspec node ----------------------------------------------------------------------------
    def emit(self, node: Node) -> None:
        method = getattr(self, f"op_{node.op}", None)
        if method is None:
            raise ExportError(f"node '{node.name}': op '{node.op}' has no ONNX mapping")
        method(node, list(node.inputs), node.attrs, node.name)

    def op_conv2d(self, node, ins, a, name):
        inputs = ins + [self.param(node, "weight")] + ([self.param(node, "bias")] if a.bias else [])
        t, l, b, r = a.pads
        self.add("Conv", inputs, name, name, kernel_shape=_pair(a.kernel), strides=_pair(a.stride),
                 pads=[t, l, b, r], dilations=_pair(a.dilation), group=a.groups)

    def op_conv_transpose2d(self, node, ins, a, name):
        inputs = ins + [self.param(node, "weight")] + ([self.param(node, "bias")] if a.bias else [])
        ph, pw = a.padding
        self.add("ConvTranspose", inputs, name, name, kernel_shape=_pair(a.kernel), strides=_pair(a.stride),
                 pads=[ph, pw, ph, pw], dilations=_pair(a.dilation), group=a.groups,
                 output_padding=_pair(a.output_padding))

    def pool_window(self, node, ins, a, dilation=(1, 1)) -> dict:
        """Pads and ceil_mode reproducing PyTorch's output size. ONNX's ceil mode keeps a last window
        that starts in the right padding, which PyTorch drops: then pad the end explicitly instead."""
        x, out = self.graph.type_of(ins[0]), node.type
        pads, ceil = [a.padding[0], a.padding[1], a.padding[0], a.padding[1]], a.ceil_mode
        for axis, (size, n) in enumerate(((x.h, out.h), (x.w, out.w))):
            p, k, st = a.padding[axis], dilation[axis] * (a.kernel[axis] - 1) + 1, a.stride[axis]
            if ceil and -(-(size + 2 * p - k) // st) + 1 != n:
                ceil = False
        if ceil != a.ceil_mode:
            for axis, (size, n) in enumerate(((x.h, out.h), (x.w, out.w))):
                p, k, st = a.padding[axis], dilation[axis] * (a.kernel[axis] - 1) + 1, a.stride[axis]
                pads[2 + axis] = max(p, (n - 1) * st + k - size - p)  # floor mode then gives exactly n windows
            if node.op == "avgpool2d" and a.count_include_pad and pads[2:] != pads[:2]:
                raise ExportError(f"{node.name}: average pooling with ceil_mode and count_include_pad whose last "
                                  "window PyTorch drops has no exact ONNX form")
        return {"pads": pads, "ceil_mode": int(ceil)}

    def op_maxpool2d(self, node, ins, a, name):
        self.add("MaxPool", ins, name, name, kernel_shape=_pair(a.kernel), strides=_pair(a.stride),
                 dilations=_pair(a.dilation), **self.pool_window(node, ins, a, a.dilation))

    def op_avgpool2d(self, node, ins, a, name):
        self.add("AveragePool", ins, name, name, kernel_shape=_pair(a.kernel), strides=_pair(a.stride),
                 count_include_pad=int(a.count_include_pad), **self.pool_window(node, ins, a))

    def op_global_avgpool(self, node, ins, a, name):
        self.add("GlobalAveragePool", ins, name, name)

    def op_adaptive_avgpool2d(self, node, ins, a, name):
        x = self.graph.type_of(ins[0])
        (h, w), (oh, ow) = (x.h, x.w), a.size
        if h % oh == 0 and w % ow == 0:  # uniform bins: a plain average pool
            k = [h // oh, w // ow]
            self.add("AveragePool", ins, name, name, _hint(node), kernel_shape=k, strides=k)
            return
        # PyTorch's bins (possibly overlapping): the mean over a rectangle is the mean over its rows of the
        # row means, so average the row bins first (axis 2), then the column bins (axis 3). Exact.
        current = ins[0]
        for axis, size, out, tag in ((2, h, oh, "rows"), (3, w, ow, "cols")):
            if size == out:
                continue
            parts = []
            for i, (start, end) in enumerate(adaptive_bins(size, out)):
                base = f"{name}/{tag}{i}"
                sl = self.add("Slice", [current, self.const(f"{base}.starts", np.array([start], np.int64)),
                                        self.const(f"{base}.ends", np.array([end], np.int64)),
                                        self.const(f"{base}.axes", np.array([axis], np.int64))],
                              f"{base}/slice", f"{base}/slice")
                parts.append(self.add("ReduceMean", [sl], f"{base}/mean", f"{base}/mean", axes=[axis], keepdims=1))
            last = axis == 3 or w == ow
            target = name if last else f"{name}/{tag}"
            current = self.add("Concat", parts, target, target, _hint(node) if last else None, axis=axis)

    def op_batchnorm2d(self, node, ins, a, name):
        c = self.graph.type_of(ins[0]).c
        if a.affine:
            scale, bias = self.param(node, "weight"), self.param(node, "bias")
        else:  # ONNX needs a scale and a shift: ones and zeros, named so that import knows they are not weights
            scale = self.const(f"{name}.ones", np.ones(c, np.float32))
            bias = self.const(f"{name}.zeros", np.zeros(c, np.float32))
        inputs = ins + [scale, bias, self.param(node, "running_mean"), self.param(node, "running_var")]
        momentum = float(np.float32(1.0 - a.momentum))  # ONNX: running = running·momentum + batch·(1 - momentum)
        if self.mode == "train":
            outs = [name, f"{name}.running_mean_next", f"{name}.running_var_next"]
            self.extra_outputs += [(outs[1], (c,)), (outs[2], (c,))]
            self.add("BatchNormalization", inputs, outs, name, epsilon=a.eps, momentum=momentum, training_mode=1)
        else:
            self.add("BatchNormalization", inputs, name, name, epsilon=a.eps, momentum=momentum)

    def op_lrn(self, node, ins, a, name):
        if a.size % 2:
            self.add("LRN", ins, name, name, size=a.size, alpha=a.alpha, beta=a.beta, bias=a.k)
            return
        # ONNX centres an even window one channel later than PyTorch: sum the squares explicitly.
        # x / (k + alpha/size · Σ x²)^beta, the window running from c - size//2 to c + (size-1)//2.
        sq = self.add("Mul", [ins[0], ins[0]], f"{name}/square", f"{name}/square")
        up = self.add("Unsqueeze", [sq, self.const(f"{name}.axes", np.array([1], np.int64))],
                      f"{name}/unsqueeze", f"{name}/unsqueeze")
        before, after = a.size // 2, (a.size - 1) // 2
        mean = self.add("AveragePool", [up], f"{name}/window_mean", f"{name}/window_mean",
                        kernel_shape=[a.size, 1, 1], pads=[before, 0, 0, after, 0, 0], count_include_pad=1)
        down = self.add("Squeeze", [mean, f"{name}.axes"], f"{name}/squeeze", f"{name}/squeeze")
        scaled = self.add("Mul", [down, self.const(f"{name}.alpha", np.array(a.alpha, np.float32))],
                          f"{name}/scaled", f"{name}/scaled")
        base = self.add("Add", [scaled, self.const(f"{name}.k", np.array(a.k, np.float32))],
                        f"{name}/base", f"{name}/base")
        denom = self.add("Pow", [base, self.const(f"{name}.beta", np.array(a.beta, np.float32))],
                         f"{name}/denominator", f"{name}/denominator")
        self.add("Div", [ins[0], denom], name, name, _hint(node))

    def op_linear(self, node, ins, a, name):
        inputs = ins + [self.param(node, "weight")] + ([self.param(node, "bias")] if a.bias else [])
        self.add("Gemm", inputs, name, name, transB=1)

    def _fused(base: str):
        """A fused op (ops/fused.py) as its parts: Mul by the gate, the base op, Add of the residual, the
        activation; the last one writes the node's value."""
        def method(self, node, ins, a, name):
            x, gate, residual = split_inputs(a, ins)
            if gate is not None:
                x = self.add("Mul", [x, gate], f"{name}/gated", f"{name}/gated")
            parts = [base] + ["residual"] * a.residual + [a.activation] * (a.activation is not None)
            value = name if len(parts) == 1 else f"{name}/{base}"
            getattr(self, f"op_{base}")(node, [x], a, value)
            if residual is not None:
                out = name if parts[-1] == "residual" else f"{name}/residual"
                value = self.add("Add", [value, residual], out, out)
            if a.activation is not None:
                getattr(self, f"op_{a.activation}")(node, [value], activation_attrs(a), name)
        return method

    op_fused_conv2d = _fused("conv2d")
    op_fused_linear = _fused("linear")

    def op_squeeze_excitation(self, node, ins, a, name):
        """A squeeze-excitation gate (ops/fused.py) as the nodes it replaced: GlobalAveragePool, then per
        1×1 convolution a Conv on its own parameters (`squeeze_weight`, ...) and its activation, if
        any; the last one writes the node's value."""
        value = self.add("GlobalAveragePool", ins, f"{name}/pool", f"{name}/pool")
        for prefix, _, bias, act, alpha in a.convs(node.type.c):
            inputs = [value, self.param(node, f"{prefix}_weight")]
            inputs += [self.param(node, f"{prefix}_bias")] if bias else []
            out = name if prefix == "excite" and act is None else f"{name}/{prefix}"
            value = self.add("Conv", inputs, out, out, kernel_shape=[1, 1])
            if act is not None:
                out = name if prefix == "excite" else f"{name}/{prefix}_{act}"
                getattr(self, f"op_{act}")(node, [value], attrs_of(act, alpha), out)
                value = out

    def op_flatten(self, node, ins, a, name):
        self.add("Flatten", ins, name, name, axis=1)

    def op_reshape(self, node, ins, a, name):
        shape = self.const(f"{name}.shape", np.array([0] + list(a.shape), np.int64))
        self.add("Reshape", ins + [shape], name, name)

    def op_dropout(self, node, ins, a, name):
        ratio = self.const(f"{name}.ratio", np.array(a.p, np.float32))
        if self.mode == "train":
            training = self.const(f"{name}.training_mode", np.array(True))
            self.add("Dropout", ins + [ratio, training], name, name)
        else:
            self.add("Dropout", ins + [ratio], name, name)

    def _simple(op_type: str, **fixed):
        def method(self, node, ins, a, name):
            self.add(op_type, ins, name, name, **fixed)
        return method

    op_relu = _simple("Relu")
    op_sigmoid = _simple("Sigmoid")
    op_tanh = _simple("Tanh")
    op_hardswish = _simple("HardSwish")
    op_identity = _simple("Identity")

    def op_leaky_relu(self, node, ins, a, name):
        self.add("LeakyRelu", ins, name, name, alpha=a.slope)

    def op_elu(self, node, ins, a, name):
        self.add("Elu", ins, name, name, alpha=a.alpha)

    def op_softmax(self, node, ins, a, name):
        self.add("Softmax", ins, name, name, axis=a.axis)

    def op_relu6(self, node, ins, a, name):
        lo = self.const(f"{name}.min", np.array(0.0, np.float32))
        hi = self.const(f"{name}.max", np.array(6.0, np.float32))
        self.add("Clip", ins + [lo, hi], name, name)

    def op_silu(self, node, ins, a, name):
        sig = self.add("Sigmoid", ins, f"{name}/sigmoid", f"{name}/sigmoid")
        self.add("Mul", [ins[0], sig], name, name)

    def op_maxout(self, node, ins, a, name):
        x = self.graph.type_of(ins[0])
        shape = [0, x.c // a.pieces, a.pieces] + list(x.dims[1:])
        grouped = self.add("Reshape", ins + [self.const(f"{name}.shape", np.array(shape, np.int64))],
                           f"{name}/pieces", f"{name}/pieces")
        self.add("ReduceMax", [grouped], name, name, axes=[2], keepdims=0)

    def op_add(self, node, ins, a, name):
        self.add("Add" if len(ins) == 2 else "Sum", ins, name, name)

    def op_mul(self, node, ins, a, name):
        self.add("Mul", ins, name, name)

    def op_concat(self, node, ins, a, name):
        self.add("Concat", ins, name, name, axis=a.axis)

    def op_center_crop(self, node, ins, a, name):
        x = self.graph.type_of(ins[0])
        (h, w), (H, W) = a.size, (x.h, x.w)
        top, left = (H - h) // 2, (W - w) // 2
        self.add("Slice", ins + [self.const(f"{name}.starts", np.array([top, left], np.int64)),
                                 self.const(f"{name}.ends", np.array([top + h, left + w], np.int64)),
                                 self.const(f"{name}.axes", np.array([2, 3], np.int64))], name, name)


def exportable_ops() -> list[str]:
    """The netspec ops with an ONNX mapping."""
    return sorted(k[3:] for k in dir(_Builder) if k.startswith("op_"))


def _value_info(name: str, shape, helper, TensorProto):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def export_onnx(graph: Graph, weights: dict[str, np.ndarray] | None = None, batch: int | str = 1,
                mode: str = "eval", check: bool = True):
    """The graph as an onnx.ModelProto (opset 17), checked with onnx.checker (full check).

    weights: {"node.param": array} (checked against the graph), or None for netspec's initialization
    (seed 0). batch: a positive int, or "dynamic" for a symbolic batch dimension `N`. mode: "eval" or
    "train" (see the module's doc). check: run onnx.checker's full check on the result (serializes
    the model once more; `check_serialized(bytes)` checks bytes you already have).
    """
    _require_onnx()
    from onnx import TensorProto, helper

    from ..weights import check_weights, init_weights

    if mode not in ("eval", "train"):
        raise ExportError(f"mode must be 'eval' or 'train', got {mode!r}")
    if batch != "dynamic" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be a positive integer or 'dynamic', got {batch!r}")
    weights = init_weights(graph) if weights is None else check_weights(graph, weights)
    active = graph.active(mode)
    builder = _Builder(active, weights, mode)
    for node in active.nodes:
        builder.emit(node)

    n: Any = "N" if batch == "dynamic" else batch
    inputs = [_value_info(name, (n,) + t.dims, helper, TensorProto) for name, t in active.inputs.items()]
    outputs = [_value_info(name, (n,) + active.type_of(name).dims, helper, TensorProto) for name in active.outputs]
    outputs += [_value_info(name, shape, helper, TensorProto) for name, shape in builder.extra_outputs]
    value_info = [_value_info(node.name, (n,) + node.type.dims, helper, TensorProto)
                  for node in active.nodes if node.name not in active.outputs]
    onnx_graph = helper.make_graph(builder.nodes, graph.name, inputs, outputs, value_info=value_info)
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name=PRODUCER, producer_version=_version())
    model.ir_version = min(model.ir_version, 8)  # opset 17's IR version: readable by older runtimes too
    for name, value in builder.initializers.items():  # written in place: copying 500 MB of protobuf is slow
        tensor = model.graph.initializer.add()
        tensor.name = name
        tensor.data_type = helper.np_dtype_to_tensor_dtype(value.dtype)
        tensor.dims.extend(value.shape)
        tensor.raw_data = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
    source = printable(str(graph.source or ""))  # (a file name that is not UTF-8, escaped)
    model.doc_string = f"{graph.name}, exported by netspec from {source or 'a graph'} ({mode} mode)"
    meta = {"netspec.mode": mode, "netspec.source": source}
    if graph.variant:
        meta["netspec.variant"] = graph.variant
    if graph.params:
        meta["netspec.params"] = json.dumps(graph.params)
    if graph.preprocess:
        meta["netspec.preprocess"] = json.dumps(graph.preprocess)
    helper.set_model_props(model, meta)
    if check:
        check_serialized(model.SerializeToString())
    return model


def check_serialized(data: bytes) -> None:
    """onnx.checker's full check (with shape inference) of a serialized model; ExportError if it fails."""
    import onnx
    try:
        onnx.checker.check_model(data, full_check=True)
    except Exception as e:  # a bug in the exporter, not the user's mistake: say what the checker said
        raise ExportError(f"the exported model fails onnx.checker: {str(e).strip().splitlines()[0]}") from None


def _version() -> str:
    from .. import __version__
    return __version__
