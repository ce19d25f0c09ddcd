"""Analysis: parameters, MACs, FLOPs, activation memory and receptive field, checked against values
computed here from README's counting conventions."""
from __future__ import annotations

import json
import re
from fractions import Fraction
from math import prod

import pytest

import netspec
from netspec.report import explain, fold, table, to_json
from conftest import BASIC_BLOCK

SMALL = """
    input: {shape: [3, 8, 8]}
    layers:
      - {op: conv2d, name: conv, out: 4, kernel: 3, padding: 1}
      - {op: batchnorm2d, name: bn}
      - {op: relu, name: relu}
      - {op: conv2d, name: dw, out: 4, kernel: 3, padding: 1, groups: 4, bias: false}
      - {op: maxpool2d, name: pool, kernel: 2}
      - {op: dropout, name: drop, mode: train}
      - {op: flatten, name: flat}
      - {op: linear, name: fc, out: 10}
"""


def conv_params(cin, cout, k, groups=1, bias=True):
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def conv_macs(cin, cout, h_out, w_out, k, groups=1, batch=1):
    return batch * cout * h_out * w_out * (cin // groups) * k * k


@pytest.fixture
def small(load_spec):
    return load_spec(SMALL)


def test_params_and_macs_of_a_small_network(small):
    s = netspec.summary(small)
    expected_params = {
        "conv": conv_params(3, 4, 3),                   # 112
        "bn": 2 * 4,                                    # gamma and beta
        "relu": 0,
        "dw": conv_params(4, 4, 3, groups=4, bias=False),  # depthwise: 36
        "pool": 0,
        "flat": 0,
        "fc": 64 * 10 + 10,
    }
    expected_macs = {
        "conv": conv_macs(3, 4, 8, 8, 3),               # 4·8·8 outputs × 3·3·3
        "bn": 0, "relu": 0,
        "dw": conv_macs(4, 4, 8, 8, 3, groups=4),
        "pool": 0, "flat": 0,
        "fc": 10 * 64,                                  # output elements × in_features
    }
    assert [r.name for r in s.rows] == list(expected_params)  # eval mode: no dropout
    for name in expected_params:
        assert s.row(name).params == expected_params[name], name
        assert s.row(name).macs == expected_macs[name], name
    assert s.params == sum(expected_params.values()) == 112 + 8 + 36 + 650
    assert s.buffers == 8  # running mean and variance
    assert s.macs == sum(expected_macs.values())
    assert s.flops == 2 * s.macs


def test_train_mode_has_the_dropout(small):
    s = netspec.summary(small, mode="train")
    assert "drop" in [r.name for r in s.rows]
    assert s.row("drop").params == 0 and s.row("drop").macs == 0
    assert s.params == netspec.summary(small).params


def test_transposed_conv_macs_count_input_elements(load_spec):
    g = load_spec("""
        input: {shape: [8, 5, 5]}
        layers:
          - {op: conv_transpose2d, name: up, out: 6, kernel: 3, stride: 2, groups: 2}
    """)
    s = netspec.summary(g)
    r = s.row("up")
    assert r.type.dims == (6, 11, 11)
    # README: transposed conv = input elements × C_out/groups × k_h × k_w
    assert r.macs == (8 * 5 * 5) * (6 // 2) * 3 * 3
    assert r.macs != (6 * 11 * 11) * (8 // 2) * 9  # not the conv rule on the output
    # weight C_in × C_out/groups × k × k, plus bias
    assert r.params == 8 * (6 // 2) * 9 + 6


@pytest.mark.parametrize("batch", [1, 2, 7, 32])
def test_batch_scales_macs_and_memory_not_params(small, batch):
    one = netspec.summary(small)
    s = netspec.summary(small, batch=batch)
    assert s.macs == batch * one.macs
    assert s.flops == 2 * s.macs
    assert s.params == one.params and s.buffers == one.buffers
    assert s.activation_bytes == batch * one.activation_bytes
    assert s.row("fc").type.shape == (batch, 10)


def test_activation_memory_is_all_outputs_plus_input(small):
    for batch in (1, 3):
        s = netspec.summary(small, batch=batch)
        outputs = {"conv": 4 * 8 * 8, "bn": 4 * 8 * 8, "relu": 4 * 8 * 8, "dw": 4 * 8 * 8, "pool": 4 * 4 * 4,
                   "flat": 64, "fc": 10}
        expected = batch * (3 * 8 * 8 + sum(outputs.values())) * 4  # fp32
        assert s.activation_bytes == expected
        assert to_json(s)["totals"]["activation_elements"] == expected // 4


def test_receptive_field_of_three_3x3_convs(load_spec):
    g = load_spec("""
        input: {shape: [1, 32, 32]}
        layers:
          - {op: conv2d, name: a, out: 1, kernel: 3, padding: 1}
          - {op: conv2d, name: b, out: 1, kernel: 3, padding: 1}
          - {op: conv2d, name: c, out: 1, kernel: 3, padding: 1}
          - {op: relu, name: r}
    """)
    s = netspec.summary(g)
    assert [tuple(s.row(n).field.size) for n in "abc"] == [(3, 3), (5, 5), (7, 7)]
    assert tuple(s.row("c").field.jump) == (1, 1)
    assert tuple(s.row("r").field.size) == (7, 7)  # pointwise ops keep it


def test_receptive_field_of_a_resnet_stem(load_spec):
    g = load_spec("""
        input: {shape: [3, 224, 224]}
        layers:
          - {op: conv2d, name: conv1, out: 64, kernel: 7, stride: 2, padding: 3}
          - {op: maxpool2d, name: pool, kernel: 3, stride: 2, padding: 1}
          - {op: conv2d, name: conv2, out: 64, kernel: 3, padding: 1}
    """)
    s = netspec.summary(g)
    assert tuple(s.row("conv1").field.size) == (7, 7) and tuple(s.row("conv1").field.jump) == (2, 2)
    assert tuple(s.row("pool").field.size) == (11, 11) and tuple(s.row("pool").field.jump) == (4, 4)
    assert tuple(s.row("conv2").field.size) == (19, 19)  # 11 + 2·4


def test_receptive_field_with_dilation_and_rectangles(load_spec):
    g = load_spec("""
        input: {shape: [1, 64, 64]}
        layers:
          - {op: conv2d, name: a, out: 1, kernel: [3, 1], stride: [1, 2]}
          - {op: conv2d, name: b, out: 1, kernel: 3, dilation: 2}
    """)
    s = netspec.summary(g)
    assert tuple(s.row("a").field.size) == (3, 1)
    assert tuple(s.row("b").field.size) == (3 + 4 * 1, 1 + 4 * 2)  # effective kernel 5


def test_receptive_field_of_branches_takes_the_widest(load_spec):
    g = load_spec("""
        input: {shape: [1, 32, 32]}
        layers:
          - {op: conv2d, name: small, out: 1, kernel: 1}
          - {op: conv2d, name: big, in: input, out: 1, kernel: 5, padding: 2}
          - {op: add, name: sum, in: [small, big]}
          - {op: global_avgpool, name: gap}
    """)
    s = netspec.summary(g)
    assert tuple(s.row("sum").field.size) == (5, 5)
    assert s.row("gap").field.is_global


def brute_force_rf_1d(layers, probes=range(8, 16)):
    """The span of input positions some output position depends on, on an unbounded line, taking the
    widest over several output positions (transposed convs depend on fewer inputs at some phases).
    layers: ("conv", k, s) or ("convT", k, s)."""
    def deps(layer, o):
        kind, k, s = layer
        if kind == "conv":
            return {o * s + j for j in range(k)}
        return {(o - j) // s for j in range(k) if (o - j) % s == 0}
    widest = 0
    for o in probes:
        positions = {o}
        for layer in reversed(layers):
            positions = set().union(*(deps(layer, p) for p in positions))
        widest = max(widest, max(positions) - min(positions) + 1)
    return widest


def test_brute_force_rf_sanity():
    assert brute_force_rf_1d([("conv", 3, 1)] * 3) == 7
    assert brute_force_rf_1d([("conv", 7, 2), ("conv", 3, 2)]) == 11


@pytest.mark.parametrize("k,s", [(2, 2), (4, 2), (3, 2), (3, 1), (3, 3)])
def test_receptive_field_through_a_transposed_conv(load_spec, k, s):
    g = load_spec(f"""
        input: {{shape: [1, 64, 64]}}
        layers:
          - {{op: conv2d, name: down, out: 1, kernel: 3, stride: 2}}
          - {{op: conv_transpose2d, name: up, out: 1, kernel: {k}, stride: {s}}}
    """)
    r = netspec.summary(g).row("up")
    expected = brute_force_rf_1d([("conv", 3, 2), ("convT", k, s)])
    assert tuple(r.field.size) == (expected, expected)
    assert tuple(r.field.jump) == (Fraction(2, s), Fraction(2, s))


RESNET = """
    input: {shape: [3, 32, 32]}
""" + BASIC_BLOCK + """    layers:
      - {op: conv2d, name: stem, out: 16, kernel: 3, padding: 1}
      - {op: basic, name: layer1, repeat: 2, c: 16}
      - {op: basic, name: layer2, repeat: 2, c: 32, first: {stride: 2}}
      - {op: global_avgpool, name: pool}
      - {op: flatten, name: flat}
      - {op: linear, name: fc, out: 10}
"""


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_depth_folding_sums_rows(load_spec, depth):
    g = load_spec(RESNET)
    s = netspec.summary(g, batch=2)
    rows = fold(s, depth)
    # every node is counted in exactly one folded row: the one named by its first `depth` levels
    expected: dict[str, list] = {}
    for r in s.rows:
        key = ".".join(r.name.split(".")[:depth])
        expected.setdefault(key, []).append(r)
    assert [r.name for r in rows] == list(expected)
    for row in rows:
        members = expected[row.name]
        assert row.params == sum(m.params for m in members), row.name
        assert row.buffers == sum(m.buffers for m in members), row.name
        assert row.macs == sum(m.macs for m in members), row.name
        assert row.activation_bytes == sum(m.activation_bytes for m in members), row.name
        assert row.type == members[-1].type  # the scope's output
    assert sum(r.params for r in rows) == s.params and sum(r.macs for r in rows) == s.macs
    if depth == 1:
        assert [r.name for r in rows] == ["stem", "layer1", "layer2", "pool", "flat", "fc"]
        assert "×2" in rows[1].op and "basic" in rows[1].op


def test_resnet_like_totals_by_hand(load_spec):
    g = load_spec(RESNET)
    s = netspec.summary(g)
    stem = conv_params(3, 16, 3)
    block16 = 2 * conv_params(16, 16, 3, bias=False) + 2 * 2 * 16
    block32_first = (conv_params(16, 32, 3, bias=False) + conv_params(32, 32, 3, bias=False) + 2 * 2 * 32
                     + conv_params(16, 32, 1, bias=False) + 2 * 32)
    block32 = 2 * conv_params(32, 32, 3, bias=False) + 2 * 2 * 32
    fc = 32 * 10 + 10
    assert s.params == stem + 2 * block16 + block32_first + block32 + fc
    macs = (conv_macs(3, 16, 32, 32, 3) + 4 * conv_macs(16, 16, 32, 32, 3)
            + conv_macs(16, 32, 16, 16, 3) + conv_macs(32, 32, 16, 16, 3) + conv_macs(16, 32, 16, 16, 1)
            + 2 * conv_macs(32, 32, 16, 16, 3) + 32 * 10)
    assert s.macs == macs


def test_json_agrees_with_the_table(load_spec):
    g = load_spec(RESNET)
    s = netspec.summary(g, batch=4)
    data = json.loads(json.dumps(to_json(s)))
    t = data["totals"]
    assert t["params"] == s.params and t["macs"] == s.macs and t["flops"] == 2 * s.macs
    assert t["non_trainable"] == s.buffers
    assert t["activation_bytes"] == s.activation_bytes
    assert sum(n["params"] for n in data["nodes"]) == t["params"]
    assert sum(n["macs"] for n in data["nodes"]) == t["macs"]
    assert data["batch"] == 4 and data["outputs"] == {"fc": [4, 10]}
    text = table(s)
    assert f"{s.params:,}" in text and f"{s.macs:,}" in text and f"{2 * s.macs:,}" in text
    folded = to_json(s, 1)
    assert sum(n["params"] for n in folded["nodes"]) == t["params"]
    assert folded["totals"] == data["totals"]


def _check_formula(line: str, expected_total: int):
    """`... = a·b·c = total ...`: the numbers multiply to the stated total, which is the expected one."""
    m = re.search(r"= ([\d·]+(?: \+ [\d·]+)*) = ([\d,]+)", line)
    assert m, line
    terms = m.group(1).split(" + ")
    value = sum(prod(int(x) for x in term.split("·")) for term in terms)
    assert value == int(m.group(2).replace(",", "")) == expected_total, line


def test_explain_shows_formulas_with_numbers(small):
    s = netspec.summary(small, batch=2)
    text = explain(s)
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("conv "))
    block = lines[start:start + 6]
    params_line = next(l for l in block if l.strip().startswith("params"))
    macs_line = next(l for l in block if l.strip().startswith("MACs"))
    _check_formula(params_line, conv_params(3, 4, 3))
    _check_formula(macs_line, conv_macs(3, 4, 8, 8, 3, batch=2))
    assert "C_out" in params_line and "k_h" in macs_line
    fc = lines[next(i for i, l in enumerate(lines) if l.startswith("fc ")):][:6]
    _check_formula(next(l for l in fc if l.strip().startswith("MACs")), 2 * 10 * 64)
    assert f"{s.params:,}" in text and f"{s.macs:,}" in text


def test_summary_rejects_a_bad_mode_and_batch(small):
    with pytest.raises(ValueError):
        netspec.summary(small, mode="training")
    with pytest.raises(ValueError):
        netspec.summary(small, batch=0)
