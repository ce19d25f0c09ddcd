"""ONNX import: an ONNX model built from the ops netspec knows becomes a netspec graph and its weights.

The graph is written as the flat spec form (`netspec.spec.flat.to_flat_yaml`: one named node per line,
`in:` only where the input is not the previous node). Besides the one-to-one ops (Conv, Gemm,
BatchNormalization, pools, activations, merges, ...) the importer recognises the patterns netspec's
exporter writes: x·Sigmoid(x) → silu, Clip(0, 6) → relu6, Reshape + ReduceMax → maxout, Slice (centred)
→ center_crop, the Slice/ReduceMean/Concat decomposition of a non-uniform adaptive average pool, and the
explicit form of an even-sized LRN. An unsupported op is never guessed at: every one is listed with the
names of its nodes, and nothing is imported.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import ops
from ..files import open_regular
from ..ir.graph import Graph, Node
from ..ir.types import BATCH, TensorType
from ..ops.pool import adaptive_bins
from ..ops.registry import ShapeError, infer_output
from ..spec.schema import NAME_RE


class OnnxImportError(ValueError):
    """A model that cannot be read or imported; the message says why (every unsupported op, by node)."""


def _f32(v) -> float:
    """An ONNX float (float32) as the shortest decimal that gives it back: 1e-05, not 9.99999974738e-06."""
    return float(str(np.float32(v)))


@dataclass
class _Item:
    """One netspec node in the making."""
    name: str
    op: str
    attrs: dict
    inputs: list[str]  # ONNX tensor names
    params: dict[str, np.ndarray] = field(default_factory=dict)
    onnx_name: str = ""


class _Unsupported(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def read_model(path: str | Path):
    """onnx.load with every failure as an OnnxImportError: missing, unreadable or corrupt files."""
    try:
        import onnx
    except ImportError:
        raise OnnxImportError("ONNX import needs the onnx package: pip install 'netspec[onnx]' (or pip install onnx)") \
            from None
    p = Path(path)
    try:
        open_regular(p).close()  # (onnx.load would wait on a FIFO and read a device for ever)
    except OSError as e:
        raise OnnxImportError(f"cannot read '{path}': {e.strerror}") from None
    try:
        model = onnx.load(str(p))
    except OSError as e:
        raise OnnxImportError(f"cannot read '{path}': {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise OnnxImportError(f"'{path}' is not a valid ONNX model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'cannot parse it'})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise OnnxImportError(f"'{path}' is not a valid ONNX model (it holds no graph)")
    try:
        onnx.checker.check_model(str(p))  # from the file: no copy of the model through Python
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxImportError(f"'{path}' is not a valid ONNX model ({first})") from None
    return model


def _without_weights(model):
    """A copy of the model whose large initializers are typed graph inputs instead: shape inference needs
    their shapes only (and small constants' values), and copying hundreds of MB of weights is slow."""
    from onnx import ModelProto, helper
    light = ModelProto()
    for field_name in ("ir_version", "producer_name", "domain", "model_version"):
        setattr(light, field_name, getattr(model, field_name))
    light.opset_import.extend(model.opset_import)
    g, lg = model.graph, light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    declared = {i.name for i in g.input}
    for t in g.initializer:
        if np.prod(t.dims, dtype=np.int64) <= 64:
            lg.initializer.append(t)
        elif t.name not in declared:
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _attrs(node) -> dict[str, Any]:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _sanitize(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_.]", "_", name.replace("/", ".").replace(":", "."))
    text = ".".join(part for part in text.split(".") if part)
    return text


class _Importer:
    def __init__(self, model, origin: str):
        from onnx import numpy_helper, shape_inference

        self.origin = origin
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        g = model.graph
        self.g = g
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for node in g.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                a = _attrs(node)
                if "value" in a:
                    self.consts[node.output[0]] = numpy_helper.to_array(a["value"])
                else:
                    for key in ("value_float", "value_int"):
                        if key in a:
                            self.consts[node.output[0]] = np.array(a[key])
                    for key in ("value_floats", "value_ints"):
                        if key in a:
                            self.consts[node.output[0]] = np.array(a[key])
        self.shapes: dict[str, list] = {}
        try:
            inferred = shape_inference.infer_shapes(_without_weights(model))
            infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        except Exception:
            infos = list(g.value_info) + list(g.input) + list(g.output)
        for vi in infos:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        self.producer = {out: node for node in g.node for out in node.output if out}
        self.consumers: dict[str, list] = {}
        for node in g.node:
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        self.graph_outputs = [o.name for o in g.output]
        # netspec's own models are imported node for node: only their helpers (`node/part`) are folded
        self.from_netspec = model.producer_name == "netspec"

    # --- small helpers -------------------------------------------------------------------------------
    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise _Unsupported(f"its {what} is computed at run time (netspec needs a constant)")
        return self.consts[name]

    def shape(self, tensor: str) -> list | None:
        return self.shapes.get(tensor)

    def only_user(self, tensor: str, node) -> bool:
        return tensor not in self.graph_outputs and [n.name for n in self.consumers.get(tensor, [])] == [node.name] \
            and len(self.consumers.get(tensor, [])) == 1

    @staticmethod
    def hint(node) -> dict | None:
        doc = node.doc_string or ""
        if doc.startswith("netspec: "):
            try:
                value = json.loads(doc[len("netspec: "):])
                return value if isinstance(value, dict) and "op" in value else None
            except json.JSONDecodeError:
                return None
        return None

    # --- the whole model -----------------------------------------------------------------------------
    def run(self) -> tuple[Graph, dict[str, np.ndarray]]:
        g = self.g
        real_inputs = [i for i in g.input if i.name not in self.consts]
        if len(real_inputs) != 1:
            names = ", ".join(i.name for i in real_inputs) or "none"
            raise OnnxImportError(f"{self.origin}: netspec imports models with one input; this one has "
                                  f"{len(real_inputs)} ({names})")
        (inp,) = real_inputs
        dims = self.shapes.get(inp.name)
        if not dims or len(dims) not in (2, 3, 4) or any(d is None or d <= 0 for d in dims[1:]):
            raise OnnxImportError(f"{self.origin}: input '{inp.name}' needs a known shape N×C×H×W (or N×features), "
                                  f"got {dims}")
        input_name = _sanitize(inp.name) or "input"
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", input_name):
            input_name = "input"
        self.alias: dict[str, str] = {inp.name: input_name}
        self.used_names = {input_name}

        skip: set[int] = set()  # helper nodes folded into a pattern (they come before the node that ends it)
        for node in g.node:
            if node.op_type in ("Mul", "ReduceMax", "Concat", "Div") and node.domain in ("", "ai.onnx"):
                try:
                    skip.update(n.output[0] for n in self.convert(node)[1])
                except _Unsupported:
                    pass
        items: list[tuple[Any, _Item | None]] = []
        unsupported: dict[str, list[str]] = {}
        for index, node in enumerate(g.node):
            if node.output[0] in skip or (node.op_type == "Constant" and node.domain in ("", "ai.onnx")):
                continue
            try:
                if node.domain not in ("", "ai.onnx"):
                    raise _Unsupported("")
                item, folded = self.convert(node)
                skip.update(n.output[0] for n in folded)
                items.append((node, item))
            except _Unsupported as e:
                label = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
                reason = f" ({e.reason})" if e.reason else ""
                unsupported.setdefault(label + reason, []).append(node.name or f"#{index}")
        if unsupported:
            listing = "; ".join(f"{op} in node{'s' if len(names) > 1 else ''} {', '.join(names)}"
                                for op, names in unsupported.items())
            raise OnnxImportError(f"{self.origin}: unsupported ONNX op(s): {listing}")
        return self.build(input_name, dims, items)

    def build(self, input_name: str, dims: list, items) -> tuple[Graph, dict[str, np.ndarray]]:
        types: dict[str, TensorType] = {input_name: TensorType((BATCH,) + tuple(dims[1:]))}
        nodes: list[Node] = []
        weights: dict[str, np.ndarray] = {}
        for onnx_node, item in items:
            if item is None:  # an Identity on constants, folded away
                continue
            name = self.unique(item.name, onnx_node)
            try:
                inputs = tuple(self.alias[t] for t in item.inputs)
            except KeyError as e:
                raise OnnxImportError(f"{self.origin}: node '{onnx_node.name}' ({onnx_node.op_type}) takes "
                                      f"'{e.args[0]}', which netspec cannot compute") from None
            op = ops.get(item.op)
            try:
                attrs = op.attrs.model_validate(item.attrs)
                out_type = infer_output(op, attrs, [types[i] for i in inputs])
            except ShapeError as e:
                raise OnnxImportError(f"{self.origin}: node '{onnx_node.name}' ({onnx_node.op_type} → {item.op}): {e}") \
                    from None
            except ValueError as e:
                first = str(e).splitlines()
                raise OnnxImportError(f"{self.origin}: node '{onnx_node.name}' ({onnx_node.op_type} → {item.op}): "
                                      f"unsupported attributes {item.attrs} ({' '.join(first[:3])})") from None
            nodes.append(Node(name, item.op, attrs, inputs, out_type))
            types[name] = out_type
            self.alias[onnx_node.output[0]] = name
            for pname, value in item.params.items():
                weights[f"{name}.{pname}"] = np.ascontiguousarray(value, dtype=np.float32)
        outputs = []
        for out in self.graph_outputs:
            if out.endswith((".running_mean_next", ".running_var_next")) and out not in self.alias:
                continue  # a training-mode batch norm's updated statistics
            if out not in self.alias:
                raise OnnxImportError(f"{self.origin}: output '{out}' is not computed by a supported node")
            outputs.append(self.alias[out])
            declared = self.shapes.get(out)
            got = types[self.alias[out]].dims
            if declared and all(isinstance(d, int) and d > 0 for d in declared[1:]) and tuple(declared[1:]) != got:
                raise OnnxImportError(f"{self.origin}: output '{out}': the model declares shape "
                                      f"{'×'.join(map(str, declared[1:]))} per sample, netspec computes "
                                      f"{'×'.join(map(str, got))}")
        name = _sanitize(self.g.name).replace(".", "_") or "imported"
        graph = Graph(name=name, inputs={input_name: types[input_name]}, nodes=nodes, outputs=outputs)
        from ..weights import WeightsError, check_weights
        try:
            weights = check_weights(graph, weights, origin=f"weights in {self.origin}")
        except WeightsError as e:
            raise OnnxImportError(str(e)) from None
        return graph, weights

    def unique(self, proposed: str, node) -> str:
        name = _sanitize(proposed) or f"{node.op_type.lower()}"
        if not NAME_RE.match(name):
            name = node.op_type.lower()
        base, k = name, 2
        while name in self.used_names:
            name, k = f"{base}_{k}", k + 1
        self.used_names.add(name)
        return name

    # --- one node (and the helpers it folds in) ------------------------------------------------------
    def convert(self, node) -> tuple[_Item | None, list]:
        method = getattr(self, f"op_{node.op_type}", None)
        if method is None:
            raise _Unsupported("")
        result = method(node, _attrs(node))
        if isinstance(result, tuple):
            return result
        return result, []

    def item(self, node, op: str, attrs: dict, inputs: list[str] | None = None, params=None) -> _Item:
        for out in node.output[1:]:
            if out and (self.consumers.get(out) or out in self.graph_outputs) \
                    and not out.endswith((".running_mean_next", ".running_var_next")):
                raise _Unsupported(f"its extra output '{out}' is used")
        return _Item(node.name or node.output[0], op, attrs, [node.input[0]] if inputs is None else inputs,
                     params or {}, node.name)

    def _pads(self, a: dict, n: int = 2) -> list[int]:
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise _Unsupported(f"auto_pad {a['auto_pad'].decode() if isinstance(a['auto_pad'], bytes) else a['auto_pad']}")
        return list(a.get("pads", [0] * (2 * n)))

    def _spatial(self, node, a) -> None:
        x = self.shape(node.input[0])
        if x is not None and len(x) != 4:
            raise _Unsupported(f"a rank-{len(x)} input (netspec is 2-D: N×C×H×W)")

    def op_Conv(self, node, a):
        self._spatial(node, a)
        w = self.const(node.input[1], "weight")
        if w.ndim != 4:
            raise _Unsupported(f"a {w.ndim - 2}-D convolution (netspec's are 2-D)")
        kernel = list(a.get("kernel_shape", w.shape[2:]))
        stride, dilation = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER") and stride == [1, 1]:
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            pads = ([th // 2, tw // 2, th - th // 2, tw - tw // 2] if auto == "SAME_UPPER"
                    else [th - th // 2, tw - tw // 2, th // 2, tw // 2])
        else:
            pads = self._pads(a)
        t, l, b, r = pads
        if (t, l) == (b, r):
            padding: Any = [t, l]
        else:
            th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
            if stride == [1, 1] and (t, l, b, r) == (th // 2, tw // 2, th - th // 2, tw - tw // 2):
                padding = "same"  # PyTorch's 'same': the extra pixel at the bottom/right
            else:
                raise _Unsupported(f"asymmetric pads {pads} (netspec pads symmetrically, or as 'same' at stride 1)")
        params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self.const(node.input[2], "bias")
        attrs = {"out": int(w.shape[0]), "kernel": kernel, "stride": stride, "padding": padding,
                 "dilation": dilation, "groups": int(a.get("group", 1)), "bias": "bias" in params}
        return self.item(node, "conv2d", attrs, params=params)

    def op_ConvTranspose(self, node, a):
        self._spatial(node, a)
        if "output_shape" in a:
            raise _Unsupported("output_shape (give pads and output_padding instead)")
        w = self.const(node.input[1], "weight")
        if w.ndim != 4:
            raise _Unsupported(f"a {w.ndim - 2}-D transposed convolution (netspec's are 2-D)")
        t, l, b, r = self._pads(a)
        if (t, l) != (b, r):
            raise _Unsupported(f"asymmetric pads {[t, l, b, r]}")
        group = int(a.get("group", 1))
        params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            params["bias"] = self.const(node.input[2], "bias")
        attrs = {"out": int(w.shape[1]) * group, "kernel": list(a.get("kernel_shape", w.shape[2:])),
                 "stride": list(a.get("strides", [1, 1])), "padding": [t, l],
                 "output_padding": list(a.get("output_padding", [0, 0])), "dilation": list(a.get("dilations", [1, 1])),
                 "groups": group, "bias": "bias" in params}
        return self.item(node, "conv_transpose2d", attrs, params=params)

    def _pool(self, node, a) -> dict:
        self._spatial(node, a)
        kernel = list(a["kernel_shape"])
        if len(kernel) != 2:
            raise _Unsupported(f"a {len(kernel)}-D pool (netspec's are 2-D)")
        t, l, b, r = self._pads(a)
        if (t, l) != (b, r):
            raise _Unsupported(f"asymmetric pads {[t, l, b, r]}")
        return {"kernel": kernel, "stride": list(a.get("strides", [1, 1])), "padding": [t, l],
                "ceil_mode": bool(a.get("ceil_mode", 0))}

    def op_MaxPool(self, node, a):
        attrs = self._pool(node, a) | {"dilation": list(a.get("dilations", [1, 1]))}
        return self.item(node, "maxpool2d", attrs)

    def op_AveragePool(self, node, a):
        attrs = self._pool(node, a)
        hint = self.hint(node)
        x = self.shape(node.input[0])
        if hint and hint.get("op") == "adaptive_avgpool2d" and x and None not in x[2:] and "size" in hint:
            oh, ow = hint["size"]
            if (attrs["padding"] == [0, 0] and not attrs["ceil_mode"] and x[2] % oh == 0 and x[3] % ow == 0
                    and attrs["kernel"] == [x[2] // oh, x[3] // ow] == attrs["stride"]):
                return self.item(node, "adaptive_avgpool2d", {"size": [oh, ow]})
        attrs["count_include_pad"] = bool(a.get("count_include_pad", 0))
        return self.item(node, "avgpool2d", attrs)

    def op_GlobalAveragePool(self, node, a):
        self._spatial(node, a)
        return self.item(node, "global_avgpool", {})

    def op_BatchNormalization(self, node, a):
        if len(node.output) > 3:
            raise _Unsupported("the opset < 14 outputs saved_mean/saved_var")
        scale, bias = self.const(node.input[1], "scale"), self.const(node.input[2], "bias")
        mean, var = self.const(node.input[3], "mean"), self.const(node.input[4], "variance")
        plain = (np.all(scale == 1) and np.all(bias == 0)
                 and not (node.input[1].endswith(".weight") or node.input[2].endswith(".bias")))
        params = {"running_mean": mean, "running_var": var}
        if not plain:
            params = {"weight": scale, "bias": bias} | params
        momentum = float(f"{1.0 - _f32(a.get('momentum', 0.9)):.12g}")
        attrs = {"eps": _f32(a.get("epsilon", 1e-5)), "momentum": momentum, "affine": not plain}
        return self.item(node, "batchnorm2d", attrs, params=params)

    def op_LRN(self, node, a):
        size = int(a["size"])
        if size % 2 == 0:
            raise _Unsupported("an even size: ONNX centres the window one channel later than netspec/PyTorch")
        attrs = {"size": size, "alpha": _f32(a.get("alpha", 1e-4)), "beta": _f32(a.get("beta", 0.75)),
                 "k": _f32(a.get("bias", 1.0))}
        return self.item(node, "lrn", attrs)

    def op_Gemm(self, node, a):
        if a.get("transA", 0) or _f32(a.get("alpha", 1.0)) != 1.0 or _f32(a.get("beta", 1.0)) != 1.0:
            raise _Unsupported("transA, alpha or beta other than 0, 1, 1")
        w = self.const(node.input[1], "weight")
        if not a.get("transB", 0):
            w = w.T
        params = {"weight": w}
        if len(node.input) > 2 and node.input[2]:
            c = self.const(node.input[2], "bias")
            if c.size != w.shape[0]:
                raise _Unsupported(f"a bias C of shape {list(c.shape)}")
            params["bias"] = c.reshape(-1)
        return self.item(node, "linear", {"out": int(w.shape[0]), "bias": "bias" in params}, params=params)

    def op_Flatten(self, node, a):
        if a.get("axis", 1) != 1:
            raise _Unsupported(f"axis {a.get('axis')} (netspec flattens from axis 1)")
        return self.item(node, "flatten", {})

    def op_Reshape(self, node, a):
        if a.get("allowzero", 0):
            raise _Unsupported("allowzero")
        shape = [int(d) for d in self.const(node.input[1], "shape")]
        x = self.shape(node.input[0])
        dims = []
        for i, d in enumerate(shape[1:], start=1):
            if d == 0:
                if not x or i >= len(x) or x[i] is None:
                    raise _Unsupported("a 0 (copy) entry whose size is unknown")
                d = x[i]
            dims.append(d)
        if shape[0] not in (0, -1) and not (x and x[0] == shape[0]):
            raise _Unsupported(f"shape {shape} changes the batch dimension")
        if shape[0] == -1 and -1 in dims:
            raise _Unsupported(f"shape {shape} leaves the batch dimension to inference")
        return self.item(node, "reshape", {"shape": dims}, inputs=[node.input[0]])

    def _maxout_pieces(self, reshape, reduce) -> int:
        a = _attrs(reduce)
        axes = list(a.get("axes", [])) or ([int(v) for v in self.consts[reduce.input[1]]]
                                            if len(reduce.input) > 1 and reduce.input[1] in self.consts else [])
        shape = self.consts.get(reshape.input[1])
        x = self.shape(reshape.input[0])
        if shape is None or axes != [2] or a.get("keepdims", 1) != 0 or x is None:
            raise _Unsupported("")
        shape = [int(d) for d in shape]
        if len(shape) != len(x) + 1 or shape[0] != 0 or x[1] is None or shape[1] * shape[2] != x[1] \
                or shape[3:] != list(x[2:]):
            raise _Unsupported("")
        return shape[2]

    def op_ReduceMax(self, node, a):
        source = self.producer.get(node.input[0])
        if source is not None and source.op_type == "Reshape" and self.only_user(node.input[0], node):
            try:
                pieces = self._maxout_pieces(source, node)
            except _Unsupported:
                raise _Unsupported("a reduction other than maxout's") from None
            return self.item(node, "maxout", {"pieces": pieces}, inputs=[source.input[0]]), [source]
        raise _Unsupported("a reduction other than maxout's")

    def op_Dropout(self, node, a):
        if len(node.input) > 1 and node.input[1]:
            p = _f32(self.const(node.input[1], "ratio"))
        else:
            p = _f32(a.get("ratio", 0.5))
        return self.item(node, "dropout", {"p": p})

    def _simple(op: str):
        def method(self, node, a):
            return self.item(node, op, {})
        return method

    op_Relu = _simple("relu")
    op_Sigmoid = _simple("sigmoid")  # x·Sigmoid(x) is folded in by op_Mul
    op_Tanh = _simple("tanh")
    op_HardSwish = _simple("hardswish")

    def op_Identity(self, node, a):
        if node.input[0] in self.consts:  # an alias of a constant (PyTorch's exporter writes these)
            self.consts[node.output[0]] = self.consts[node.input[0]]
            return None, []
        return self.item(node, "identity", {})

    def op_LeakyRelu(self, node, a):
        return self.item(node, "leaky_relu", {"slope": _f32(a.get("alpha", 0.01))})

    def op_Elu(self, node, a):
        return self.item(node, "elu", {"alpha": _f32(a.get("alpha", 1.0))})

    def op_Softmax(self, node, a):
        x = self.shape(node.input[0])
        axis = int(a.get("axis", -1 if self.opset >= 13 else 1))
        if self.opset < 13 and not (x and len(x) == 2 and axis in (1, -1)):
            raise _Unsupported("opset < 13 softmax over more than one axis")
        return self.item(node, "softmax", {"axis": axis})

    def op_Clip(self, node, a):
        if len(node.input) > 1:
            lo = float(self.const(node.input[1], "min")) if node.input[1] else None
            hi = float(self.const(node.input[2], "max")) if len(node.input) > 2 and node.input[2] else None
        else:
            lo, hi = a.get("min"), a.get("max")
        if lo == 0.0 and hi == 6.0:
            return self.item(node, "relu6", {})
        if lo == 0.0 and (hi is None or hi == float("inf")):
            return self.item(node, "relu", {})
        raise _Unsupported(f"min {lo}, max {hi} (netspec has relu6: 0, 6)")

    def _tensor_inputs(self, node) -> list[str]:
        if any(i in self.consts for i in node.input):
            raise _Unsupported("a constant operand (netspec merges computed tensors only)")
        return list(node.input)

    def op_Add(self, node, a):
        return self.item(node, "add", {}, inputs=self._tensor_inputs(node))

    def op_Sum(self, node, a):
        inputs = self._tensor_inputs(node)
        if len(inputs) == 1:
            return self.item(node, "identity", {})
        return self.item(node, "add", {}, inputs=inputs)

    def op_Mul(self, node, a):
        x, y = node.input[0], node.input[1]
        for first, second in ((x, y), (y, x)):  # x · Sigmoid(x) is silu
            s = self.producer.get(second)
            if s is not None and s.op_type == "Sigmoid" and s.input[0] == first and self.only_user(second, node) \
                    and (s.name == f"{node.name}/sigmoid" or not self.from_netspec):
                return self.item(node, "silu", {}, inputs=[first]), [s]
        return self.item(node, "mul", {}, inputs=self._tensor_inputs(node))

    def op_Concat(self, node, a):
        hint = self.hint(node)
        if hint and hint.get("op") == "adaptive_avgpool2d":
            folded = self._adaptive(node, hint)
            if folded is not None:
                return folded
        axis = int(a["axis"])
        x = self.shape(node.input[0])
        if axis < 0 and x:
            axis += len(x)
        return self.item(node, "concat", {"axis": axis}, inputs=self._tensor_inputs(node))

    def _adaptive(self, node, hint):
        """The exporter's Slice/ReduceMean/Concat decomposition of a non-uniform adaptive average pool."""
        prefix = f"{node.name}/"
        helpers, source = [], None
        frontier = list(node.input)
        while frontier:
            t = frontier.pop()
            p = self.producer.get(t)
            if p is None or not p.name.startswith(prefix):
                if t in self.consts:
                    continue
                if source not in (None, t):
                    return None
                source = t
                continue
            if p.op_type not in ("Slice", "ReduceMean", "Concat") or p in helpers:
                if p in helpers:
                    continue
                return None
            helpers.append(p)
            frontier += [i for i in p.input if i]
        x = self.shape(source) if source else None
        try:
            oh, ow = hint["size"]
        except (KeyError, TypeError, ValueError):
            return None
        if not x or len(x) != 4 or None in x[2:]:
            return None
        expected = set()
        for axis, size, out in ((2, x[2], oh), (3, x[3], ow)):
            if size != out:
                expected |= {(axis, s, e) for s, e in adaptive_bins(size, out)}
        found = set()
        for p in helpers:
            if p.op_type == "Slice":
                found.add((int(self.consts[p.input[3]][0]), int(self.consts[p.input[1]][0]),
                           int(self.consts[p.input[2]][0])))
        if found != expected:
            return None
        return self.item(node, "adaptive_avgpool2d", {"size": [oh, ow]}, inputs=[source]), helpers

    def op_Div(self, node, a):
        hint = self.hint(node)
        if hint and hint.get("op") == "lrn":  # the exporter's explicit form of an even-sized LRN
            prefix, helpers, frontier = f"{node.name}/", [], [node.input[1]]
            while frontier:
                p = self.producer.get(frontier.pop())
                if p is None or not p.name.startswith(prefix) or p in helpers:
                    continue
                if p.op_type not in ("Mul", "Unsqueeze", "AveragePool", "Squeeze", "Add", "Pow"):
                    break
                helpers.append(p)
                frontier += [i for i in p.input if i and i != node.input[0]]
            else:
                attrs = {k: hint[k] for k in ("size", "alpha", "beta", "k") if k in hint}
                return self.item(node, "lrn", attrs, inputs=[node.input[0]]), helpers
        raise _Unsupported("")

    def op_Slice(self, node, a):
        x = self.shape(node.input[0])
        starts = [int(v) for v in self.const(node.input[1], "starts")]
        ends = [int(v) for v in self.const(node.input[2], "ends")]
        axes = [int(v) for v in self.const(node.input[3], "axes")] if len(node.input) > 3 and node.input[3] \
            else list(range(len(starts)))
        steps = [int(v) for v in self.const(node.input[4], "steps")] if len(node.input) > 4 and node.input[4] \
            else [1] * len(starts)
        if not x or len(x) != 4 or None in x[2:]:
            raise _Unsupported("an input of unknown shape")
        size = [x[2], x[3]]
        for start, end, axis, step in zip(starts, ends, axes, steps):
            axis = axis + 4 if axis < 0 else axis
            full = x[axis]
            start, end = (start + full if start < 0 else start), (end + full if end < 0 else min(end, full))
            if axis not in (2, 3) or step != 1 or start != (full - (end - start)) // 2:
                raise _Unsupported("a slice other than a centre crop of H and W")
            size[axis - 2] = end - start
        return self.item(node, "center_crop", {"size": size}, inputs=[node.input[0]])


def import_onnx(source) -> tuple[Graph, dict[str, np.ndarray]]:
    """An ONNX model (a path or an onnx.ModelProto) as a netspec Graph and its weights.

    Raises OnnxImportError: for a file that is missing, unreadable or not ONNX, and for a model using
    ops netspec does not have (every one is listed with the names of its nodes).
    """
    if isinstance(source, (str, Path)):
        model, origin = read_model(source), f"'{source}'"
    else:
        model, origin = source, "the model"
    return _Importer(model, origin).run()


def to_spec_text(graph: Graph, origin: str) -> str:
    """The flat spec form of an imported graph."""
    from ..spec.flat import to_flat_yaml
    return to_flat_yaml(graph, header=[f"imported from {origin} by `netspec import`",
                                       "the flat form: every node with its full name; `in:` where the input is not "
                                       "the previous node"])
