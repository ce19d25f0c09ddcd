"""Epilogue fusion (passes/fuse.py): a conv2d or linear takes over a following residual add and
activation, and a pointwise conv the squeeze-excitation gate before it. The pass must fire where it
may, not fire where another reader or a graph output would see a different value, and the fused
CPU kernels must give the value of the kernels run one after another: bit for bit for the residual
and activation epilogues (the same float32 operations in the same order), within rounding for the
gate (the CPU kernel scales the weights or the input, whichever is cheaper)."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import netspec
from netspec.backends.cpu import KERNELS
from netspec.backends.cpu import program as programs
from netspec.ops.registry import RunContext
from netspec.passes.fuse import fuse_epilogues, fuse_squeeze_excitation
from netspec.passes.manager import optimize
from netspec.threads import set_threads
from netspec.weights import init_weights


def _unfused(graph, weights, x):
    """The graph's outputs, each CPU kernel run on its own, in order."""
    values = {next(iter(graph.inputs)): x}
    ctx = RunContext("eval", None)
    for node in graph.nodes:
        params = {k.split(".")[-1]: v for k, v in weights.items() if k.rsplit(".", 1)[0] == node.name}
        values[node.name] = KERNELS[node.op](node.attrs, [values[i] for i in node.inputs], params, ctx)
    return {name: values[name] for name in graph.outputs}


def _weights(graph, seed=0):
    weights = init_weights(graph, seed)
    rng = np.random.default_rng(seed)
    for key in weights:
        if key.endswith(".bias"):
            weights[key] = rng.normal(0, 0.5, weights[key].shape).astype(np.float32)
    return weights


def _fused(graph):
    """{node name: its attributes} of the fused nodes of the optimized graph, and that graph."""
    optimized, _ = optimize(graph.active("eval"), _weights(graph))
    return {n.name: n.attrs for n in optimized.nodes if n.op.startswith("fused_")}, optimized


def _three_ways(graph, x):
    """Output `out` of the compiled CPU executable, of the CPU kernels run one by one (unfused), and of
    the reference executor on the graph as written, all with the same weights."""
    weights = _weights(graph)
    exe = netspec.compile(graph, weights=weights, progress=False)
    got = exe.run(x)["out"]
    reference = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)["out"]
    # (where the executable runs the batch as parts, one a thread, so do the kernels one by one:
    # a kernel's path, and so its bits, may depend on its batch)
    parts = programs.parts(exe.graph, *programs.key(len(x)))
    with set_threads(1) if parts > 1 else contextlib.nullcontext():
        unfused = np.concatenate([_unfused(graph, weights, part)["out"] for part in np.split(x, parts)])
    return got, unfused, reference


RESIDUAL = """
netspec: 1
name: residual
input: {shape: [4, 9, 9]}
layers:
  - {op: conv2d, name: a, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: a_act}
  - {op: conv2d, name: b, out: 4, kernel: %s, padding: %s}
  - {op: add, name: sum, in: [b, a_act]}
  - {op: %s, name: b_act}
  - {op: maxpool2d, name: out, kernel: 3}
"""


@pytest.mark.parametrize("kernel, padding", [(3, 1), (1, 0)])  # im2col and the pointwise GEMM path
@pytest.mark.parametrize("act", ["relu", "leaky_relu", "silu", "sigmoid"])
def test_residual_add_and_activation_fuse_bit_for_bit(load_spec, kernel, padding, act):
    graph = load_spec(RESIDUAL % (kernel, padding, act))
    fused, optimized = _fused(graph)
    assert fused["b"].residual and fused["b"].activation == act and not fused["b"].gate
    assert fused["a"].activation == "relu" and not fused["a"].residual
    assert [n.name for n in optimized.nodes] == ["a", "b", "out"]
    assert optimized.node("b").inputs == ("a", "a") and optimized.node("out").inputs == ("b",)
    x = np.random.default_rng(1).standard_normal((2, 4, 9, 9), dtype=np.float32)
    got, unfused, reference = _three_ways(graph, x)
    np.testing.assert_array_equal(got, unfused)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_residual_fuses_into_whichever_operand_comes_last(load_spec):
    # the shortcut conv runs after the main branch's conv (as ResNet's downsample does)
    graph = load_spec("""
netspec: 1
name: late_shortcut
input: {shape: [3, 8, 8]}
layers:
  - {op: conv2d, name: main, out: 4, kernel: 3, padding: 1}
  - {op: conv2d, name: shortcut, in: input, out: 4, kernel: 1}
  - {op: add, name: sum, in: [main, shortcut]}
  - {op: relu, name: act}
  - {op: global_avgpool, name: out}
""")
    fused, optimized = _fused(graph)
    assert set(fused) == {"shortcut"} and fused["shortcut"].residual
    assert optimized.node("shortcut").inputs == ("input", "main")
    weights = _weights(graph)
    x = np.random.default_rng(2).standard_normal((1, 3, 8, 8), dtype=np.float32)
    got = netspec.compile(graph, weights=weights, progress=False).run(x)
    np.testing.assert_array_equal(got["out"], _unfused(graph, weights, x)["out"])


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
outputs: [c, out]""", "conv is an output"),
    # the activation is the network output: its name must stay
    ("""  - {op: conv2d, name: c, out: 4, kernel: 3, padding: 1}
  - {op: relu, name: out}""", "activation is an output"),
    # the gate's mul feeds a 3×3 conv (scaling weights per image only pays for pointwise convs)
    ("""  - {op: global_avgpool, name: s}
  - {op: mul, name: m, in: [input, s]}
  - {op: conv2d, name: out, out: 4, kernel: 3, padding: 1}""", "gate before a 3×3 conv"),
    # the gated input is read by another node too
    ("""  - {op: global_avgpool, name: s}
  - {op: mul, name: m, in: [input, s]}
  - {op: conv2d, name: c, out: 4, kernel: 1}
  - {op: add, name: out, in: [m, m]}""", "gated input read twice"),
    # softmax is not elementwise
    ("""  - {op: conv2d, name: c, out: 4, kernel: 1}
  - {op: softmax, name: s}
  - {op: global_avgpool, name: out}""", "softmax"),
])
def test_fusion_does_not_fire_where_it_would_change_a_value(load_spec, layers, why):
    graph = load_spec("netspec: 1\nname: nofuse\ninput: {shape: [4, 4, 4]}\nlayers:\n" + layers + "\n")
    active = graph.active("eval")
    after, _ = fuse_epilogues(active, _weights(graph))
    assert after is active, why  # nothing fused
    weights = _weights(graph)
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 4), dtype=np.float32)
    got, want = netspec.compile(graph, weights=weights, progress=False).run(x), _unfused(graph, weights, x)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.parametrize("hw, stride", [(9, 1), (48, 1), (48, 2), (13, 2)])  # flat and by-rows paths
def test_depthwise_with_fused_activation_matches_reference(load_spec, hw, stride):
    graph = load_spec(f"""
netspec: 1
name: dw
input: {{shape: [6, {hw}, {hw}]}}
layers:
  - {{op: conv2d, name: dw, out: 6, groups: 6, kernel: 3, stride: {stride}, padding: 1, dilation: {1 if stride == 2 else 2}}}
  - {{op: silu, name: act}}
  - {{op: global_avgpool, name: out}}
""")
    assert _fused(graph)[0]["dw"].activation == "silu"
    x = np.random.default_rng(4).standard_normal((2, 6, hw, hw), dtype=np.float32)
    got, unfused, reference = _three_ways(graph, x)
    np.testing.assert_array_equal(got, unfused)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


SQUEEZE_EXCITE = """
netspec: 1
name: se
input: {{shape: [{c}, {hw}, {hw}]}}
layers:
  - {{op: conv2d, name: dw, out: {c}, groups: {c}, kernel: 3, padding: 1}}
  - {{op: silu, name: act}}
  - {{op: global_avgpool, name: squeeze}}
  - {{op: conv2d, name: reduce, out: 2, kernel: 1}}
  - {{op: silu}}
  - {{op: conv2d, name: excite, out: {c}, kernel: 1}}
  - {{op: sigmoid, name: gate}}
  - {{op: mul, name: scaled, in: [act, gate]}}
  - {{op: conv2d, name: project, out: {out}, kernel: 1}}
  - {{op: add, name: sum, in: [project, input]}}
  - {{op: global_avgpool, name: out}}
"""


# out < H·W: the kernel scales the weights per image; out ≥ H·W: it scales the input
@pytest.mark.parametrize("c, hw, out", [(8, 6, 8), (24, 3, 24)])
def test_squeeze_excitation_gate_fuses_into_the_pointwise_conv(load_spec, c, hw, out):
    graph = load_spec(SQUEEZE_EXCITE.format(c=c, hw=hw, out=out))
    fused, optimized = _fused(graph)
    assert fused["project"].gate and fused["project"].residual and fused["project"].activation is None
    assert optimized.node("project").inputs == ("dw", "excite", "input")
    assert "scaled" not in {n.name for n in optimized.nodes}
    x = np.random.default_rng(5).standard_normal((3, c, hw, hw), dtype=np.float32)
    got, unfused, reference = _three_ways(graph, x)
    np.testing.assert_allclose(got, unfused, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


# c·hw² ≥ 32,768 (8·64²): the CPU kernel takes the means on all threads
@pytest.mark.parametrize("c, hw, batch", [(8, 6, 3), (8, 64, 1), (24, 3, 2)])
def test_the_squeeze_excitation_gate_becomes_one_node(load_spec, c, hw, batch):
    graph = load_spec(SQUEEZE_EXCITE.format(c=c, hw=hw, out=c))
    weights = _weights(graph)
    optimized, opt_weights = optimize(graph.active("eval"), weights)
    se = optimized.node("excite")
    assert se.op == "squeeze_excitation" and se.inputs == ("dw",)
    assert (se.attrs.hidden, se.attrs.activation, se.attrs.gate_activation) == (2, "silu", "sigmoid")
    assert not {"squeeze", "reduce"} & {n.name for n in optimized.nodes}
    for old, new in (("reduce.weight", "squeeze_weight"), ("reduce.bias", "squeeze_bias"),
                     ("excite.weight", "excite_weight"), ("excite.bias", "excite_bias")):
        assert opt_weights[f"excite.{new}"] is weights[old] and old not in opt_weights  # renamed, not copied
    x = np.random.default_rng(6).standard_normal((batch, c, hw, hw), dtype=np.float32)
    got, unfused, reference = _three_ways(graph, x)
    np.testing.assert_allclose(got, unfused, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


SE_HEAD = "netspec: 1\nname: se\ninput: {shape: [4, 5, 5]}\nlayers:\n"


def test_a_squeeze_excitation_gate_that_is_an_output_still_fuses(load_spec):
    """Its name stays (the fused node keeps the last conv's), so nothing a caller sees is lost."""
    graph = load_spec(SE_HEAD + """  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: relu}
  - {op: conv2d, name: out, out: 4, kernel: 1}
  - {op: sigmoid, name: gate}
outputs: [out, gate]
""")
    optimized, _ = optimize(graph.active("eval"), _weights(graph))
    assert optimized.node("out").op == "squeeze_excitation" and optimized.node("out").attrs.gate_activation is None
    x = np.random.default_rng(8).standard_normal((2, 4, 5, 5), dtype=np.float32)
    weights = _weights(graph)
    got = netspec.compile(graph, weights=weights, progress=False).run(x)
    want = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)
    for key in ("out", "gate"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layers, why", [
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: add, name: out, in: [e, p]}""", "the pooled value has a second reader"),
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: relu, name: r}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: concat, name: out, in: [e, r]}""", "the squeeze's value has a second reader"),
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: mul, name: out, in: [input, e]}
outputs: [s, out]""", "the squeeze's value is an output"),
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 3, padding: 1}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: mul, name: out, in: [input, e]}""", "a 3×3 squeeze"),
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: conv2d, name: e, out: 3, kernel: 1}
  - {op: global_avgpool, name: out}""", "the gate's channels are not the input's"),
    ("""  - {op: maxpool2d, name: p, kernel: 5}
  - {op: conv2d, name: s, out: 2, kernel: 1}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: mul, name: out, in: [input, e]}""", "not an average"),
    ("""  - {op: global_avgpool, name: p}
  - {op: conv2d, name: s, out: 2, kernel: 1, groups: 2}
  - {op: conv2d, name: e, out: 4, kernel: 1}
  - {op: mul, name: out, in: [input, e]}""", "a grouped squeeze"),
])
def test_squeeze_excitation_does_not_fuse_where_it_would_change_a_value(load_spec, layers, why):
    graph = load_spec(SE_HEAD + layers + "\n")
    weights = _weights(graph)
    fused, _ = fuse_epilogues(graph.active("eval"), weights)
    after, _ = fuse_squeeze_excitation(fused, weights)
    assert after is fused, why
    x = np.random.default_rng(7).standard_normal((2, 4, 5, 5), dtype=np.float32)
    got = netspec.compile(graph, weights=weights, progress=False).run(x)
    want = netspec.compile(graph, backend="reference", weights=weights, optimize=False).run(x)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_linear_takes_its_residual_and_activation(load_spec):
    graph = load_spec("""
netspec: 1
name: mlp
input: {shape: [3, 4, 4]}
layers:
  - {op: flatten, name: flat}
  - {op: linear, name: fc1, out: 48}
  - {op: add, name: sum, in: [fc1, flat]}
  - {op: elu, name: act, alpha: 0.5}
  - {op: linear, name: out, out: 5}
""")
    fused, optimized = _fused(graph)
    assert fused["fc1"].residual and fused["fc1"].activation == "elu" and fused["fc1"].alpha == 0.5
    assert optimized.node("fc1").op == "fused_linear" and optimized.node("out").inputs == ("fc1",)
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 4), dtype=np.float32)
    got, unfused, reference = _three_ways(graph, x)
    np.testing.assert_array_equal(got, unfused)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_a_spec_cannot_name_a_fused_op(write_spec, cli):
    write_spec("""
netspec: 1
name: sneaky
input: {shape: [3, 4, 4]}
layers:
  - {op: fused_conv2d, out: 4, kernel: 1, activation: relu}
""")
    r = cli("check", "spec.yaml")
    assert r.code == 1 and "spec.yaml:5:10: error: unknown op 'fused_conv2d' (did you mean 'conv2d'?)" in r.err, r.err
    assert "fused_conv2d" not in cli("ops").out


def test_dump_passes_shows_the_fusion(write_spec, cli):
    write_spec(RESIDUAL % (3, 1, "relu"))
    r = cli("compile", "spec.yaml", "--dump-passes")
    assert r.code == 0
    assert "# after fuse_epilogues: 3 removed, 0 added, 3 changed → 3 nodes" in r.out
    assert "#   removed: a_act, sum, b_act" in r.out
    assert "b = fused_conv2d(a, a) {out=4" in r.out and "residual=True, activation=relu" in r.out
