"""ONNX export and import: every zoo spec and every registered op is exported, checked with onnx's full
checker, run in ONNX Runtime and compared with netspec's own CPU execution (same weights and input:
rtol = atol = 1e-4 per op, 1e-3 end to end); export → import → export gives the same graph and
weights; unsupported ops are listed by node; bad input is one clear line from the CLI."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import netspec  # noqa: E402
from netspec import ops  # noqa: E402
from netspec.interop.onnx_export import OPSET, export_onnx, exportable_ops  # noqa: E402
from netspec.interop.onnx_import import OnnxImportError, import_onnx, to_spec_text  # noqa: E402

from test_run import ZOO, _random_weights  # noqa: E402  (the same reduced configurations as test_run)

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _session(data: bytes, optimize: bool = True):
    """An ONNX Runtime CPU session. optimize=False: no graph rewrites (faster to build for the large zoo
    models; and in training mode ONNX Runtime 1.2x's rewrites drop a Dropout that an Identity follows,
    whatever its training_mode)."""
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _checked_bytes(model) -> bytes:
    data = model.SerializeToString()
    onnx.checker.check_model(data, full_check=True)
    assert model.opset_import[0].version >= 17
    return data


def _same_graph(a, b):
    """Same nodes (names, ops, attributes, inputs, types) and outputs."""
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        assert (x.op, x.attrs, x.inputs, x.type) == (y.op, y.attrs, y.inputs, y.type), x.name
    assert a.outputs == b.outputs
    assert a.inputs == b.inputs


def _same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _round_trip(graph, weights, model):
    """export → import → export: the same graph, the same weights, the same ONNX nodes."""
    imported, imported_weights = import_onnx(model)
    _same_graph(graph.active("eval"), imported)
    _same_weights({k: v for k, v in weights.items() if k in imported_weights}, imported_weights)
    again = export_onnx(imported, imported_weights, batch=2, check=False)
    assert list(again.graph.node) == list(model.graph.node)
    assert [t.name for t in again.graph.initializer] == [t.name for t in model.graph.initializer]
    # (the initializers' values are the weights compared above: the exporter writes them as they are)


# --- the zoo ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _zoo_graph(name, variant, params):
    return netspec.load(SPECS / f"{name}.yaml", variant=variant, params=dict(params))


@pytest.mark.parametrize("name,variant,params", ZOO, ids=[f"{s}{'-' + v if v else ''}" for s, v, _ in ZOO])
def test_zoo_exports_runs_in_onnxruntime_and_round_trips(name, variant, params):
    graph = _zoo_graph(name, variant, tuple(sorted(params.items())))
    weights = _random_weights(graph)
    model = export_onnx(graph, weights, batch=2, check=False)
    data = _checked_bytes(model)
    assert [n.name for n in model.graph.node if "/" not in n.name] == [n.name for n in graph.active("eval").nodes]
    (input_name, input_type), = graph.inputs.items()
    x = np.random.default_rng(1).standard_normal((2,) + input_type.dims, dtype=np.float32)
    got = _session(data, optimize=False).run(None, {input_name: x})
    want = netspec.compile(graph, backend="cpu", weights=weights, progress=False).run(x)
    outputs = graph.active("eval").outputs
    assert [o.name for o in model.graph.output] == outputs
    for key, value in zip(outputs, got):
        scale = max(1.0, float(np.abs(want[key]).max()))
        np.testing.assert_allclose(value, want[key], rtol=1e-3, atol=1e-3 * scale)
    _round_trip(graph, weights, model)


def test_zoo_names_follow_node_paths():
    graph = _zoo_graph("resnet18", None, ())
    model = export_onnx(graph, check=False)
    names = {n.name for n in model.graph.node}
    inits = {t.name for t in model.graph.initializer}
    assert "layer1.0.conv1" in names and "layer1.0.conv1.weight" in inits
    assert "layer2.0.downsample.1.running_var" in inits
    ops_used = {n.op_type for n in model.graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm"} <= ops_used


def test_dynamic_batch(load_spec):
    graph = load_spec(PER_OP_BASE + "  - {op: conv2d, out: 4, kernel: 3}\n")
    model = export_onnx(graph, batch="dynamic")
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    session = _session(model.SerializeToString())
    for n in (1, 3):
        x = np.ones((n, 3, 9, 9), np.float32)
        assert session.run(None, {"input": x})[0].shape == (n, 4, 7, 7)


def test_bad_export_options(load_spec):
    from netspec.interop.onnx_export import ExportError
    graph = load_spec(PER_OP_BASE + "  - {op: relu}\n")
    with pytest.raises(ExportError, match="batch"):
        export_onnx(graph, batch=0)
    with pytest.raises(ExportError, match="mode"):
        export_onnx(graph, mode="training")


# --- every op ---------------------------------------------------------------------------------------

PER_OP_BASE = "input: {shape: [3, 9, 9]}\nlayers:\n"

# (id, input shape, layers): one node per op (plus plain nodes feeding merges), several attribute sets each
OP_CASES = [
    ("conv2d", [3, 9, 9], ["{op: conv2d, out: 4, kernel: 3}"]),
    ("conv2d-stride-pad", [3, 9, 9], ["{op: conv2d, out: 4, kernel: 3, stride: 2, padding: 1}"]),
    ("conv2d-rect-same", [3, 9, 8], ["{op: conv2d, out: 4, kernel: [3, 4], padding: same, bias: false}"]),
    ("conv2d-dilated", [3, 9, 9], ["{op: conv2d, out: 6, kernel: 3, dilation: 2, padding: [2, 1], stride: [1, 2]}"]),
    ("conv2d-groups", [4, 9, 9], ["{op: conv2d, out: 6, kernel: 3, groups: 2}"]),
    ("conv2d-depthwise", [4, 9, 9], ["{op: conv2d, out: 4, kernel: 3, groups: 4, padding: 1}"]),
    ("conv_transpose2d", [4, 5, 5], ["{op: conv_transpose2d, out: 3, kernel: 2, stride: 2}"]),
    ("conv_transpose2d-outpad", [4, 5, 5],
     ["{op: conv_transpose2d, out: 6, kernel: 3, stride: 2, padding: 1, output_padding: 1, groups: 2}"]),
    ("conv_transpose2d-dilated", [4, 5, 6],
     ["{op: conv_transpose2d, out: 2, kernel: [3, 2], stride: [1, 2], dilation: 2, padding: [1, 0], bias: false}"]),
    ("maxpool2d", [3, 9, 9], ["{op: maxpool2d, kernel: 2}"]),
    ("maxpool2d-pad", [3, 9, 9], ["{op: maxpool2d, kernel: 3, stride: 2, padding: 1}"]),
    ("maxpool2d-ceil", [3, 10, 9], ["{op: maxpool2d, kernel: 3, stride: 2, ceil_mode: true}"]),
    ("maxpool2d-dilated", [3, 9, 9], ["{op: maxpool2d, kernel: 2, stride: 1, dilation: 2}"]),
    ("avgpool2d", [3, 9, 9], ["{op: avgpool2d, kernel: 2}"]),
    ("avgpool2d-pad-exclude", [3, 9, 9], ["{op: avgpool2d, kernel: 3, stride: 2, padding: 1, count_include_pad: false}"]),
    ("avgpool2d-pad-include", [3, 9, 9], ["{op: avgpool2d, kernel: 3, stride: 2, padding: 1}"]),
    ("avgpool2d-ceil", [3, 10, 9], ["{op: avgpool2d, kernel: 3, stride: 2, ceil_mode: true}"]),
    ("avgpool2d-ceil-pad", [3, 9, 9], ["{op: avgpool2d, kernel: 3, stride: 1, padding: 1, ceil_mode: true}"]),
    ("global_avgpool", [3, 9, 9], ["{op: global_avgpool}"]),
    ("adaptive_avgpool2d-uniform", [3, 9, 6], ["{op: adaptive_avgpool2d, size: 3}"]),
    ("adaptive_avgpool2d-bins", [3, 7, 5], ["{op: adaptive_avgpool2d, size: [3, 2]}"]),
    ("adaptive_avgpool2d-rows", [3, 7, 4], ["{op: adaptive_avgpool2d, size: [3, 4]}"]),
    ("adaptive_avgpool2d-up", [3, 3, 3], ["{op: adaptive_avgpool2d, size: 4}"]),
    ("batchnorm2d", [3, 9, 9], ["{op: batchnorm2d}"]),
    ("batchnorm2d-eps-momentum", [3, 9, 9], ["{op: batchnorm2d, eps: 1.0e-3, momentum: 0.01}"]),
    ("batchnorm2d-no-affine", [3, 9, 9], ["{op: batchnorm2d, affine: false}"]),
    ("batchnorm2d-features", [3, 4, 4], ["{op: flatten}", "{op: batchnorm2d}"]),
    ("lrn", [6, 5, 5], ["{op: lrn, size: 5, alpha: 1.0e-4, beta: 0.75}"]),
    ("lrn-params", [6, 5, 5], ["{op: lrn, size: 3, alpha: 0.02, beta: 0.5, k: 2.0}"]),
    ("lrn-even", [6, 5, 5], ["{op: lrn, size: 4, alpha: 0.02, beta: 0.6, k: 1.5}"]),
    ("linear", [3, 4, 4], ["{op: flatten}", "{op: linear, out: 5}"]),
    ("linear-no-bias", [3, 4, 4], ["{op: flatten}", "{op: linear, out: 7, bias: false}"]),
    ("flatten", [3, 4, 4], ["{op: flatten}"]),
    ("reshape", [4, 3, 3], ["{op: reshape, shape: [2, -1, 3]}"]),
    ("dropout", [3, 9, 9], ["{op: dropout, p: 0.3}"]),
    ("relu", [3, 9, 9], ["{op: relu}"]),
    ("relu6", [3, 9, 9], ["{op: relu6}"]),
    ("sigmoid", [3, 9, 9], ["{op: sigmoid}"]),
    ("tanh", [3, 9, 9], ["{op: tanh}"]),
    ("leaky_relu", [3, 9, 9], ["{op: leaky_relu, slope: 0.2}"]),
    ("elu", [3, 9, 9], ["{op: elu, alpha: 0.5}"]),
    ("softmax", [3, 9, 9], ["{op: softmax}"]),
    ("softmax-last-axis", [3, 9, 9], ["{op: softmax, axis: -1}"]),
    ("softmax-features", [3, 4, 4], ["{op: flatten}", "{op: softmax}"]),
    ("silu", [3, 9, 9], ["{op: silu}"]),
    ("hardswish", [3, 9, 9], ["{op: hardswish}"]),
    ("maxout", [6, 4, 4], ["{op: maxout, pieces: 3}"]),
    ("maxout-features", [3, 2, 2], ["{op: flatten}", "{op: maxout, pieces: 4}"]),
    ("add", [3, 9, 9], ["{op: relu, name: a}", "{op: tanh, name: b, in: input}", "{op: add, in: [a, b]}"]),
    ("add-three", [3, 9, 9], ["{op: relu, name: a}", "{op: tanh, name: b, in: input}",
                              "{op: add, in: [a, b, input]}"]),
    ("mul", [3, 9, 9], ["{op: sigmoid, name: a}", "{op: mul, in: [input, a]}"]),
    ("mul-broadcast", [3, 9, 9], ["{op: global_avgpool, name: g}", "{op: mul, in: [input, g]}"]),
    ("concat", [3, 9, 9], ["{op: relu, name: a}", "{op: conv2d, name: b, in: input, out: 2, kernel: 1}",
                           "{op: concat, in: [a, b, input]}"]),
    ("center_crop", [3, 9, 8], ["{op: center_crop, size: [4, 5]}"]),
    ("identity", [3, 9, 9], ["{op: identity}"]),
]


def _op_spec(shape, layers):
    return f"input: {{shape: {shape}}}\nlayers:\n" + "".join(f"  - {line}\n" for line in layers)


def test_every_registered_op_has_an_export_and_a_case():
    registered = {op.name for op in ops.all_ops()}
    internal = {"fused_conv2d", "fused_linear", "squeeze_excitation"}  # made by passes: tested below
    assert registered | internal == set(exportable_ops())
    covered = {case.split("-")[0] for case, _, _ in OP_CASES}
    assert registered <= covered


@pytest.mark.parametrize("name, params, made", [
    ("efficientnet", {"resolution": 32}, {"fused_conv2d", "squeeze_excitation"}),
    ("resnet18", {"resolution": 32}, {"fused_conv2d"}),
    ("alexnet", {"resolution": 96}, {"fused_linear"}),
])
def test_an_optimized_graph_with_fused_ops_exports(name, params, made):
    # gate, residual and activation epilogues and SE gates (EfficientNet, ResNet), linear + relu (AlexNet)
    _optimized_export_agrees(_zoo_graph(name, None, tuple(sorted(params.items()))), made)


SE_GATE = """
input: {shape: [6, 5, 5]}
layers:
  - {op: global_avgpool, name: pool}
  - {op: conv2d, name: reduce, out: 3, kernel: 1, bias: false}
  - {op: leaky_relu, slope: 0.2}
  - {op: conv2d, name: gate, out: 6, kernel: 1}
  - {op: mul, name: scaled, in: [input, gate]}
"""


def test_a_squeeze_excitation_gate_without_a_bias_or_gate_activation_exports(load_spec):
    # EfficientNet's SE gates have both biases, silu and sigmoid: here the other branches, and alpha
    exe = _optimized_export_agrees(load_spec(SE_GATE), {"squeeze_excitation"})
    a = exe.graph.node("gate").attrs
    assert (a.squeeze_bias, a.excite_bias, a.activation, a.alpha, a.gate_activation) == \
        (False, True, "leaky_relu", pytest.approx(0.2), None)


def _optimized_export_agrees(graph, made: set[str]):
    """The graph optimized (with the `made` ops among its nodes), exported and run in ONNX Runtime,
    agrees with netspec's CPU execution; the optimized executable."""
    exe = netspec.compile(graph, backend="cpu", weights=_random_weights(graph), progress=False)
    assert made <= {n.op for n in exe.graph.nodes}
    model = export_onnx(exe.graph, exe.weights, batch=2)
    assert [n.name for n in model.graph.node if "/" not in n.name] == [n.name for n in exe.graph.nodes]
    (input_name, input_type), = graph.inputs.items()
    x = np.random.default_rng(1).standard_normal((2,) + input_type.dims, dtype=np.float32)
    got = _session(_checked_bytes(model), optimize=False).run(None, {input_name: x})
    want = exe.run(x)
    for key, value in zip(exe.graph.outputs, got):
        scale = max(1.0, float(np.abs(want[key]).max()))
        np.testing.assert_allclose(value, want[key], rtol=1e-3, atol=1e-3 * scale)
    return exe


@pytest.mark.parametrize("case,shape,layers", OP_CASES, ids=[c for c, _, _ in OP_CASES])
def test_op_matches_onnxruntime_and_round_trips(load_spec, case, shape, layers):
    graph = load_spec(_op_spec(shape, layers))
    weights = _random_weights(graph, seed=3)
    model = export_onnx(graph, weights, batch=3)
    data = _checked_bytes(model)
    x = (np.random.default_rng(2).standard_normal((3,) + tuple(shape), dtype=np.float32) * 4).astype(np.float32)
    got = _session(data).run(None, {"input": x})
    want = netspec.compile(graph, backend="cpu", weights=weights, progress=False).run(x)
    for key, value in zip(graph.outputs, got):
        assert value.shape == want[key].shape
        np.testing.assert_allclose(value, want[key], rtol=1e-4, atol=1e-4)
    _round_trip(graph, weights, export_onnx(graph, weights, batch=2, check=False))


# --- training mode ----------------------------------------------------------------------------------

TRAIN_SPEC = """
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
  - {op: batchnorm2d, name: bn, momentum: 0.2}
  - {op: relu, name: relu}
  - {op: flatten, name: flat}
  - {op: batchnorm2d, name: bn_features, affine: false}
"""


def test_train_mode_batchnorm_uses_batch_statistics(load_spec):
    graph = load_spec(TRAIN_SPEC)
    weights = _random_weights(graph)
    model = export_onnx(graph, weights, batch=4, mode="train")
    data = _checked_bytes(model)
    bn = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert all(onnx.helper.get_attribute_value(a) == 1 for n in bn for a in n.attribute if a.name == "training_mode")
    momentum = [onnx.helper.get_attribute_value(a) for a in bn[0].attribute if a.name == "momentum"]
    assert momentum == [pytest.approx(0.8)]  # ONNX momentum = 1 - PyTorch momentum
    outputs = [o.name for o in model.graph.output]
    assert outputs == ["bn_features", "bn.running_mean_next", "bn.running_var_next",
                       "bn_features.running_mean_next", "bn_features.running_var_next"]
    x = np.random.default_rng(5).standard_normal((4, 3, 8, 8), dtype=np.float32)
    got = dict(zip(outputs, _session(data, optimize=False).run(None, {"input": x})))
    exe = netspec.compile(graph, backend="cpu", mode="train", weights=dict(weights), progress=False)
    want = exe.run(x)
    np.testing.assert_allclose(got["bn_features"], want["bn_features"], rtol=1e-4, atol=1e-4)
    # the updated statistics: the same mean; ONNX updates the variance with the biased batch variance
    np.testing.assert_allclose(got["bn.running_mean_next"], exe.weights["bn.running_mean"], rtol=1e-4, atol=1e-5)
    eval_out = netspec.compile(graph, backend="cpu", mode="eval", weights=weights, progress=False)
    assert not np.allclose(eval_out.run(x)["bn_features"], want["bn_features"], atol=1e-3)
    count = 4 * 8 * 8
    m = 0.2
    batch_var_unbiased = (exe.weights["bn.running_var"] - (1 - m) * weights["bn.running_var"]) / m
    onnx_expected = (1 - m) * weights["bn.running_var"] + m * batch_var_unbiased * (count - 1) / count
    np.testing.assert_allclose(got["bn.running_var_next"], onnx_expected, rtol=1e-4, atol=1e-5)
    # the train-mode model imports back to the same graph
    imported, _ = import_onnx(model)
    _same_graph(graph.active("train"), imported)


def test_train_mode_dropout_is_valid_and_eval_is_identity(load_spec):
    graph = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 3}
          - {op: dropout, name: drop, p: 0.5}
          - {op: identity, name: noise, mode: train}
    """)
    weights = _random_weights(graph)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8), dtype=np.float32)
    train = export_onnx(graph, weights, batch=2, mode="train")
    _checked_bytes(train)
    drop = next(n for n in train.graph.node if n.op_type == "Dropout")
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in train.graph.initializer}
    assert bool(inits[drop.input[2]]) is True and float(inits[drop.input[1]]) == pytest.approx(0.5)
    assert "noise" in {n.name for n in train.graph.node}
    y = _session(train.SerializeToString(), optimize=False).run(None, {"input": x})[0]
    conv = netspec.compile(graph, backend="cpu", mode="eval", weights=weights, progress=False).run(x)["drop"]
    dropped = y == 0
    assert 0.2 < dropped.mean() < 0.8
    np.testing.assert_allclose(y[~dropped], 2 * conv[~dropped], rtol=1e-4, atol=1e-4)
    evaluation = export_onnx(graph, weights, batch=2, mode="eval")
    assert "noise" not in {n.name for n in evaluation.graph.node}
    got = _session(_checked_bytes(evaluation)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, conv, rtol=1e-4, atol=1e-4)


# --- import: plain ONNX models, unsupported ops, the CLI ---------------------------------------------

def _plain_model(nodes, initializers, in_shape, out_name, out_shape, opset=OPSET):
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(nodes, "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_import_plain_model():
    """A model written by hand (as other exporters write them): 'same'-style asymmetric pads, Gemm without
    transB, a plain BatchNormalization, Clip(0, 6), x·Sigmoid(x) and PyTorch-style node names."""
    from onnx import helper
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    init = {"w": w, "s": rng.uniform(0.5, 1.5, 4).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
            "m": rng.standard_normal(4).astype(np.float32), "v": rng.uniform(0.5, 1.5, 4).astype(np.float32),
            "lo": np.array(0, np.float32), "hi": np.array(6, np.float32),
            "fc": rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32), "fcb": rng.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="/features/conv/Conv", kernel_shape=[4, 4],
                              pads=[1, 1, 2, 2]),
             helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], name="/features/bn",
                              epsilon=1e-3),
             helper.make_node("Clip", ["bn", "lo", "hi"], ["r6"], name="/features/act"),
             helper.make_node("Sigmoid", ["r6"], ["sg"], name="/sig"),
             helper.make_node("Mul", ["r6", "sg"], ["sw"], name="/swish"),
             helper.make_node("Flatten", ["sw"], ["fl"], name="flat"),
             helper.make_node("Gemm", ["fl", "fc", "fcb"], ["y"], name="head")]
    model = _plain_model(nodes, init, [2, 3, 6, 6], "y", [2, 5])
    graph, weights = import_onnx(model)
    assert [(n.name, n.op) for n in graph.nodes] == [
        ("features.conv.Conv", "conv2d"), ("features.bn", "batchnorm2d"), ("features.act", "relu6"),
        ("swish", "silu"), ("flat", "flatten"), ("head", "linear")]
    assert graph.nodes[0].attrs.padding == "same"
    assert graph.nodes[1].attrs.eps == 1e-3 and graph.nodes[1].attrs.affine
    np.testing.assert_array_equal(weights["head.weight"], init["fc"].T)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    want = _session(model.SerializeToString()).run(None, {"x": x})[0]
    got = netspec.compile(graph, backend="cpu", weights=weights, progress=False).run(x)["head"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_unsupported_ops_are_listed_by_node():
    from onnx import helper
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("Erf", ["a"], ["b"], name="erf1"),
             helper.make_node("Erf", ["b"], ["c"], name="erf2"),
             helper.make_node("Resize", ["c", "", "sc"], ["d"], name="up", mode="nearest"),
             helper.make_node("Conv", ["d", "w"], ["y"], name="conv", pads=[0, 0, 1, 1], strides=[2, 2])]
    model = _plain_model(nodes, {"sc": np.array([1, 1, 2, 2], np.float32), "w": np.ones((2, 3, 3, 3), np.float32)},
                         [1, 3, 4, 4], "y", None)
    with pytest.raises(OnnxImportError) as info:
        import_onnx(model)
    message = str(info.value)
    assert "Erf in nodes erf1, erf2" in message and "Resize in node up" in message
    assert "Conv (asymmetric pads [0, 0, 1, 1]" in message and "node conv" in message
    assert "\n" not in message


@pytest.fixture
def exported(cli, workdir):
    r = cli("export", SPECS / "lenet5.yaml", "--onnx", "lenet.onnx")
    assert r.code == 0, r.err
    return workdir / "lenet.onnx"


def test_cli_export_import_run(cli, exported, workdir):
    assert "wrote lenet.onnx" in cli("export", SPECS / "lenet5.yaml", "--onnx", "lenet.onnx", "--force").out
    r = cli("import", "lenet.onnx", "-o", "lenet.yaml", "--weights-out", "lenet.safetensors")
    assert r.code == 0, r.err
    text = (workdir / "lenet.yaml").read_text()
    assert "  - {name: conv1, op: conv2d, out: 6, kernel: 5}\n  - {name: act1, op: tanh}\n" in text
    assert " in: " not in text  # a plain chain: no `in:` anywhere
    graph = netspec.load("lenet.yaml")
    original = netspec.load(SPECS / "lenet5.yaml")
    _same_graph(original, graph)
    r = cli("run", "lenet.yaml", "--weights", "lenet.safetensors", "--repeat", "1")
    assert r.code == 0, r.err
    assert cli("export", "lenet.yaml", "--onnx", "again.onnx", "--weights", "lenet.safetensors",
               "--batch", "dynamic", "--mode", "train").code == 0


def _one_line_error(r, *words):
    assert r.code != 0
    assert "Traceback" not in r.err and r.err.startswith("netspec: error: ")
    assert len(r.err.strip().splitlines()) == 1, r.err
    for w in words:
        assert w in r.err, r.err


def test_cli_errors(cli, exported, workdir):
    _one_line_error(cli("import", "missing.onnx", "-o", "x.yaml"), "missing.onnx", "no such file")
    (workdir / "corrupt.onnx").write_bytes(exported.read_bytes()[:500])
    _one_line_error(cli("import", "corrupt.onnx", "-o", "x.yaml"), "not a valid ONNX model")
    (workdir / "text.onnx").write_text("hello")
    _one_line_error(cli("import", "text.onnx", "-o", "x.yaml"), "not a valid ONNX model")
    _one_line_error(cli("export", SPECS / "lenet5.yaml", "--onnx", "lenet.onnx"), "already exists", "--force")
    (workdir / "spec.yaml").write_text("x")
    _one_line_error(cli("import", "lenet.onnx", "-o", "spec.yaml"), "already exists")
    _one_line_error(cli("import", "lenet.onnx", "-o", "no/dir/x.yaml"), "no directory")
    _one_line_error(cli("export", SPECS / "lenet5.yaml", "--onnx", "no/dir/x.onnx"), "no directory")
    _one_line_error(cli("export", SPECS / "lenet5.yaml", "--onnx", "x.onnx", "--weights", "none.safetensors"),
                    "none.safetensors")
    assert not (workdir / "x.onnx").exists() and not (workdir / "x.yaml").exists()


def test_cli_unsupported_ops_write_nothing(cli, workdir):
    from onnx import helper
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"), helper.make_node("Erf", ["a"], ["y"], name="gelu_erf")]
    onnx.save(_plain_model(nodes, {}, [1, 3, 4, 4], "y", [1, 3, 4, 4]), str(workdir / "m.onnx"))
    r = cli("import", "m.onnx", "-o", "m.yaml", "--weights-out", "m.safetensors")
    _one_line_error(r, "unsupported ONNX op(s): Erf in node gelu_erf")
    assert not (workdir / "m.yaml").exists() and not (workdir / "m.safetensors").exists()


def test_spec_text_is_flat_form():
    graph = _zoo_graph("resnet18", None, ())
    imported, _ = import_onnx(export_onnx(graph, check=False))
    text = to_spec_text(imported, "r18.onnx")
    assert text.startswith("# imported from r18.onnx")
    assert "  - {name: layer1.0.add, op: add, in: [layer1.0.bn2, maxpool]}\n" in text


@pytest.mark.parametrize("pool", ["maxpool2d", "avgpool2d"])
def test_ceil_mode_pool_whose_last_window_pytorch_drops(load_spec, pool, tmp_path):
    """ONNX's ceil mode keeps a window starting in the padding; PyTorch's (and netspec's) drops it."""
    extra = ", count_include_pad: false" if pool == "avgpool2d" else ""
    graph = load_spec(f"""
        input: {{shape: [2, 10, 9]}}
        layers:
          - {{op: {pool}, kernel: 1, stride: 2, ceil_mode: true{extra}}}
        """)
    model = export_onnx(graph, {}, batch=1)
    x = np.random.default_rng(0).standard_normal((1, 2, 10, 9)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = next(iter(netspec.compile(graph, backend="reference").run(x).values()))
    assert got.shape == expected.shape == (1, 2, 5, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
