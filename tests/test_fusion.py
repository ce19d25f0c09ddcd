"""Epilogue fusion in the CPU executor's plan (backends/executor.py `_fuse_epilogues`): a conv2d
absorbs a following residual add and activation. Fused runs must give the same values, bit for
bit, as the kernels run one after another; the fusion must not fire where it would change what
another reader sees."""
from __future__ import annotations

import functools

import numpy as np
import pytest

import netspec
from netspec.backends.cpu import KERNELS
from netspec.backends.executor import Executable
from netspec.ops.registry import RunContext
from netspec.weights import init_weights


def _unfused(graph, weights, x):
    """The graph's outputs, each CPU kernel run on its own, in order."""
    values = {next(iter(graph.inputs)): x}
    ctx = RunContext("eval", None)
    for node in graph.nodes:
        params = {k.split(".")[-1]: v for k, v in weights.items() if k.rsplit(".", 1)[0] == node.name}
        values[node.name] = KERNELS[node.op](node.attrs, [values[i] for i in node.inputs], params, ctx)
    return {name: values[name] for name in graph.outputs}


def _compile(load_spec, text, seed=0):
    graph = load_spec(text)
    weights = init_weights(graph, seed)
    rng = np.random.default_rng(seed)
    for key in weights:
        if key.endswith(".bias"):
            weights[key] = rng.normal(0, 0.5, weights[key].shape).astype(np.float32)
    return graph, weights, Executable(graph, weights, KERNELS)


def _fused(exe):
    """{conv name: its fused keyword arguments} and the names of the steps that hand on a value."""
    fused = {s.node.name: s.kernel.keywords for s in exe.plan if isinstance(s.kernel, functools.partial)}
    passed = {s.node.name for s in exe.plan if getattr(s.kernel, "__name__", "") == "_pass_through"}
    return fused, passed


RESIDUAL = """
netspec: 1
name: residual
input: {shape: [4, 9, 9]}
layers:
  - {op: conv2d, name: a, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: a_act}
  - {op: conv2d, name: b, out: 4, kernel: %s, padding: %s}
  - {op: add, name: sum, in: [b, a_act]}
  - {op: %s, name: out_act}
"""


@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0)])  # im2col and the pointwise GEMM path
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "sigmoid"])
def test_residual_add_and_activation_fuse_bit_for_bit(load_spec, kernel, padding, act):
    graph, weights, exe = _compile(load_spec, RESIDUAL % (kernel, padding, act))
    fused, passed = _fused(exe)
    assert fused["b"]["residual"] is True and "act" in fused["b"]
    assert fused["a"]["act"] != 0 and "residual" not in fused["a"]
    assert passed == {"a_act", "sum", "out_act"}
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9), dtype=np.float32)
    got, want = exe.run(x), _unfused(graph, weights, x)
    np.testing.assert_array_equal(got["out_act"], want["out_act"])
    ref = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)
    np.testing.assert_allclose(got["out_act"], ref["out_act"], rtol=1e-4, atol=1e-4)


def test_residual_fuses_into_whichever_operand_comes_last(load_spec):
    # the shortcut conv runs after the main branch's conv (as ResNet's downsample does)
    graph, weights, exe = _compile(load_spec, """
netspec: 1
name: late_shortcut
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: main, out: 4, kernel: 3, padding: 1}
  - {op: conv2d, name: shortcut, in: input, out: 4, kernel: 1}
  - {op: add, name: sum, in: [main, shortcut]}
  - {op: relu, name: out}
""")
    fused, passed = _fused(exe)
    assert set(fused) == {"shortcut"} and fused["shortcut"]["residual"] is True
    assert [s.inputs for s in exe.plan if s.node.name == "shortcut"] == [["input", "main"]]
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(exe.run(x)["out"], _unfused(graph, weights, x)["out"])


@pytest.mark.parametrize("layers, why", [
    # the conv's output has a second reader: both must see it without the activation
    ("""  - {op: conv2d, name: c, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: r}
  - {op: add, name: out, in: [r, c]}""", "two readers"),
    # the add's other operand is computed after the conv, by an op that cannot take the residual
    ("""  - {op: conv2d, name: c, out: 4, kernel: 3, padding: 1}
  - {op: maxpool2d, name: p, in: input, kernel: 3, stride: 1, padding: 1}
  - {op: add, name: out, in: [c, p]}""", "operand computed later"),
    # the conv's output is itself a network output
    ("""  - {op: conv2d, name: c, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: out}
outputs: [c, out]""", "output"),
])
def test_fusion_does_not_fire_where_it_would_change_a_value(load_spec, layers, why):
    text = "netspec: 1\nname: nofuse\ninput: {shape: [4, 4, 4]}\nlayers:\n" + layers + "\n"
    graph, weights, exe = _compile(load_spec, text)
    fused, passed = _fused(exe)
    assert not fused and not passed, why
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 4), dtype=np.float32)
    got, want = exe.run(x), _unfused(graph, weights, x)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("hw, stride", [(9, 1), (48, 1), (48, 2), (13, 2)])  # flat and by-rows paths
def test_depthwise_with_fused_activation_matches_reference(load_spec, hw, stride):
    graph, weights, exe = _compile(load_spec, f"""
netspec: 1
name: dw
input: {{shape: [6, {hw}, {hw}]}}
layers:
  - {{op: conv2d, name: dw, out: 6, groups: 6, kernel: 3, stride: {stride}, padding: 1, dilation: {1 if stride == 2 else 2}}}
  - {{op: silu, name: out}}
""")
    assert _fused(exe)[0]["dw"]["act"] != 0
    x = np.random.default_rng(4).standard_normal((2, 6, hw, hw), dtype=np.float32)
    got = exe.run(x)["out"]
    np.testing.assert_array_equal(got, _unfused(graph, weights, x)["out"])
    ref = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)["out"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
