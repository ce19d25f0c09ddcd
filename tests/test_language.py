"""The spec language, feature by feature: every capability of README's "The spec language"."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

import netspec
from netspec.spec.errors import SpecError

from conftest import BASIC_BLOCK, dedent, errors_at, locate, one_error_at


def dims(g, name):
    return g.type_of(name).dims


# --- names and inputs ------------------------------------------------------------------------------

def test_named_nodes_default_to_previous_input(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 3, padding: 1}
          - {op: relu, name: b}
          - {op: conv2d, name: c, out: 2, kernel: 1}
    """)
    assert [n.name for n in g] == ["a", "b", "c"]
    assert g.node("a").inputs == ("input",)
    assert g.node("b").inputs == ("a",)
    assert g.node("c").inputs == ("b",)
    assert g.outputs == ["c"]
    assert dims(g, "c") == (2, 8, 8)


def test_in_with_one_and_several_earlier_names(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: conv2d, name: b, out: 5, kernel: 1}
          - {op: conv2d, name: c, in: a, out: 6, kernel: 1}
          - {op: concat, name: cat, in: [a, b, c]}
          - {op: conv2d, name: d, in: input, out: 1, kernel: 1}
        outputs: [cat, d]
    """)
    assert g.node("c").inputs == ("a",)
    assert g.node("cat").inputs == ("a", "b", "c")
    assert dims(g, "cat") == (4 + 5 + 6, 8, 8)
    assert g.node("d").inputs == ("input",)
    assert g.outputs == ["cat", "d"]


def test_in_refuses_an_integer_index(spec_error):
    err = spec_error("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu}
          - {op: relu, in: 0}
    """)
    assert errors_at(err, 4)
    assert "name" in err.format()


def test_unnamed_entries_are_numbered_by_position(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, out: 4, kernel: 1}
          - {op: relu}
          - {op: conv2d, name: head, out: 2, kernel: 1}
          - {op: relu}
    """)
    assert [n.name for n in g] == ["0", "1", "head", "3"]


def test_position_numbering_counts_only_present_entries(load_spec):
    g = load_spec("""
        params: {extra: false}
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu}
          - {op: dropout, when: $extra}
          - {op: sigmoid}
          - {op: tanh, when: "${not extra}"}
    """)
    assert [(n.name, n.op) for n in g] == [("0", "relu"), ("1", "sigmoid"), ("2", "tanh")]
    g2 = netspec.load("spec.yaml", params={"extra": True})
    assert [(n.name, n.op) for n in g2] == [("0", "relu"), ("1", "dropout"), ("2", "sigmoid")]


RESNET_LIKE = """
    params: {num_classes: 10}
    input: {shape: [3, 32, 32]}
""" + BASIC_BLOCK + """    layers:
      - {op: conv2d, name: stem, out: 16, kernel: 3, padding: 1}
      - {op: basic, name: layer1, repeat: 2, c: 16}
      - {op: basic, name: layer2, repeat: 2, c: 32, first: {stride: 2}}
      - {op: basic, name: layer3, repeat: 2, c: 64, first: {stride: 2}}
      - {op: global_avgpool, name: pool}
      - {op: flatten, name: flat}
      - {op: linear, name: fc, out: $num_classes}
"""


def test_hierarchical_names_from_blocks_repeats_and_groups(load_spec):
    g = load_spec(RESNET_LIKE)
    names = {n.name for n in g}
    assert "layer3.1.conv2" in names
    assert g.node("layer3.1.conv2").op == "conv2d"
    # the projection is a group inside a block inside a repeat: its unnamed entries are 0 and 1
    assert g.node("layer2.0.downsample.0").op == "conv2d"
    assert g.node("layer2.0.downsample.1").op == "batchnorm2d"
    assert g.node("layer2.0.add").inputs == ("layer2.0.bn2", "layer2.0.downsample.1")


def test_residual_projection_only_when_needed(load_spec):
    g = load_spec(RESNET_LIKE)
    names = {n.name for n in g}
    # layer1 keeps shape: no projection; the absent group's name refers to the block's input
    assert not any(n.startswith("layer1.") and ".downsample" in n for n in names)
    assert g.node("layer1.0.add").inputs == ("layer1.0.bn2", "stem")
    assert g.node("layer1.1.add").inputs == ("layer1.1.bn2", "layer1.0.relu2")
    # the first block of layer2 halves and widens: projection; the second does not need one
    assert "layer2.0.downsample.0" in names and not any(n.startswith("layer2.1.downsample") for n in names)
    assert dims(g, "layer2.0.downsample.0") == (32, 16, 16)
    assert dims(g, "layer3.1.relu2") == (64, 8, 8)
    assert dims(g, "fc") == (10,)
    # the block's first conv reads the block's input (the previous block's output)
    assert g.node("layer2.1.conv1").inputs == ("layer2.0.relu2",)


# --- blocks ----------------------------------------------------------------------------------------

BLOCK_PARAMS = """
    input: {shape: [4, 8, 8]}
    blocks:
      widen:
        params:
          c: int
          scale: {type: float, default: 1.0}
          hidden: {type: int, default: "${input.c * 2}"}
          out2: {type: int, default: "${hidden + c}"}
        layers:
          - {op: conv2d, name: expand, out: $hidden, kernel: 1}
          - {op: conv2d, name: project, out: "${int(out2 * scale)}", kernel: 1}
    layers:
"""


def test_block_defaults_are_expressions_over_params_and_input(load_spec):
    g = load_spec(dedent(BLOCK_PARAMS) + "  - {op: widen, name: b, c: 3}\n")
    assert dims(g, "b.expand") == (8, 8, 8)          # hidden = input.c * 2 = 8
    assert dims(g, "b.project") == (8 + 3, 8, 8)     # out2 = hidden + c
    assert g.outputs == ["b.project"]


def test_block_arguments_override_defaults_and_are_typed(load_spec):
    g = load_spec(dedent(BLOCK_PARAMS) + "  - {op: widen, name: b, c: 3, hidden: 5, scale: 2}\n")
    assert dims(g, "b.expand") == (5, 8, 8)
    assert dims(g, "b.project") == (16, 8, 8)  # int((5 + 3) * 2.0); an int is accepted for a float


def test_block_required_param_missing(spec_error):
    err = spec_error(dedent(BLOCK_PARAMS) + "  - {op: widen, name: b}\n")
    assert len(err.diagnostics) == 1
    d = err.diagnostics[0]
    assert d.location.line == 13
    assert "'c'" in d.message and "widen" in d.message


@pytest.mark.parametrize("value", ["2.5", "true", "abc", "[1, 2]"])
def test_block_param_type_error(spec_error, value):
    err = spec_error(dedent(BLOCK_PARAMS) + f"  - {{op: widen, name: b, c: {value}}}\n")
    assert len(err.diagnostics) == 1
    d = err.diagnostics[0]
    assert d.location.line == 13
    assert "'c'" in d.message and "int" in d.message


def test_block_unknown_argument(spec_error):
    err = spec_error(dedent(BLOCK_PARAMS) + "  - {op: widen, name: b, c: 3, hiden: 4}\n")
    (d,) = err.diagnostics
    assert (d.location.line, d.location.col) == (13, 32)
    assert "hiden" in d.message and "did you mean 'hidden'" in d.message


def test_block_sees_only_its_own_names(spec_error):
    err = spec_error("""
        input: {shape: [4, 8, 8]}
        blocks:
          b:
            layers:
              - {op: add, in: [input, outer]}
        layers:
          - {op: relu, name: outer}
          - {op: b}
    """)
    assert errors_at(err, 5)
    assert "outer" in err.format()


def test_blocks_imported_from_a_library(write_spec, load_spec):
    write_spec("""
        blocks:
          conv_bn:
            params: {c: int, k: 3}
            layers:
              - {op: conv2d, name: conv, out: $c, kernel: $k, padding: "${k // 2}", bias: false}
              - {op: batchnorm2d, name: bn}
              - {op: relu, name: act}
    """, "lib/blocks.yaml")
    g = load_spec("""
        input: {shape: [3, 16, 16]}
        imports: [lib/blocks.yaml]
        layers:
          - {op: conv_bn, name: s1, c: 8}
          - {op: conv_bn, name: s2, c: 4, k: 5}
    """)
    assert [n.name for n in g] == ["s1.conv", "s1.bn", "s1.act", "s2.conv", "s2.bn", "s2.act"]
    assert g.node("s2.conv").attrs.kernel == (5, 5)
    assert dims(g, "s2.act") == (4, 16, 16)


def test_imports_are_relative_to_the_importing_file_and_transitive(write_spec, load_spec):
    write_spec("""
        blocks:
          unit:
            params: {c: int}
            layers: [{op: conv2d, name: conv, out: $c, kernel: 1}]
    """, "lib/base/unit.yaml")
    write_spec("""
        imports: [base/unit.yaml]
        blocks:
          pair:
            params: {c: int}
            layers:
              - {op: unit, name: u1, c: $c}
              - {op: unit, name: u2, c: "${c * 2}"}
    """, "lib/pair.yaml")
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        imports: [lib/pair.yaml]
        layers:
          - {op: pair, name: p, c: 4}
          - {op: unit, name: last, c: 1}
    """, "nets/spec.yaml".replace("nets/", ""))
    assert [n.name for n in g] == ["p.u1.conv", "p.u2.conv", "last.conv"]
    assert dims(g, "p.u2.conv") == (8, 8, 8)


def test_duplicate_block_name_from_an_import(write_spec, spec_error):
    write_spec("""
        blocks:
          unit:
            layers: [{op: relu}]
    """, "lib.yaml")
    err = spec_error("""
        input: {shape: [3, 8, 8]}
        imports: [lib.yaml]
        blocks:
          unit:
            layers: [{op: tanh}]
        layers:
          - {op: unit}
    """)
    text = err.format()
    assert "unit" in text and "twice" in text
    assert len(err.diagnostics) == 1


def test_missing_import(spec_error):
    err = spec_error("""
        input: {shape: [3, 8, 8]}
        imports: [nowhere.yaml]
        layers: [{op: relu}]
    """)
    (d,) = err.diagnostics
    assert (d.location.line, d.location.col) == (2, 11)
    assert "nowhere.yaml" in d.message


# --- repeat ----------------------------------------------------------------------------------------

def test_repeat_with_first_last_and_index(load_spec):
    g = load_spec("""
        input: {shape: [3, 32, 32]}
        layers:
          - op: conv2d
            name: s
            repeat: 4
            out: ${8 * (i + 1)}
            kernel: 3
            padding: 1
            first: {stride: 2}
            last: {out: 5, kernel: 1, padding: 0}
    """)
    assert [n.name for n in g] == ["s.0", "s.1", "s.2", "s.3"]
    assert dims(g, "s.0") == (8, 16, 16)
    assert dims(g, "s.1") == (16, 16, 16)
    assert dims(g, "s.2") == (24, 16, 16)
    assert dims(g, "s.3") == (5, 16, 16)
    assert g.node("s.3").attrs.kernel == (1, 1)
    assert [g.node(f"s.{k}").inputs for k in range(4)] == [("input",), ("s.0",), ("s.1",), ("s.2",)]


def test_repeat_once_applies_first_and_last(load_spec):
    g = load_spec("""
        input: {shape: [3, 32, 32]}
        layers:
          - {op: conv2d, name: s, repeat: 1, out: 4, kernel: 3, first: {stride: 2}, last: {out: 7}}
    """)
    assert dims(g, "s.0") == (7, 15, 15)


def test_repeat_zero_passes_through(load_spec):
    g = load_spec("""
        params: {n: 0}
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: conv2d, name: r, repeat: $n, out: 4, kernel: 1}
          - {op: relu, name: after}
          - {op: add, name: sum, in: [r or a, a]}
    """)
    assert [n.name for n in g] == ["a", "after", "sum"]
    assert g.node("after").inputs == ("a",)
    assert g.node("sum").inputs == ("a", "a")
    g3 = netspec.load("spec.yaml", params={"n": 2})
    assert [n.name for n in g3] == ["a", "r.0", "r.1", "after", "sum"]
    assert g3.node("sum").inputs == ("r.1", "a")


def test_repeat_of_a_group(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - name: stage
            repeat: 2
            layers:
              - {op: conv2d, name: conv, out: "${4 * (i + 1)}", kernel: 1}
              - {op: relu}
    """)
    assert [n.name for n in g] == ["stage.0.conv", "stage.0.1", "stage.1.conv", "stage.1.1"]
    assert dims(g, "stage.1.conv") == (8, 8, 8)
    assert g.node("stage.1.conv").inputs == ("stage.0.1",)


# --- branches and skips ----------------------------------------------------------------------------

def test_inception_like_concat_of_branches(load_spec):
    g = load_spec("""
        input: {shape: [16, 14, 14]}
        layers:
          - {op: conv2d, name: branch1, out: 8, kernel: 1}
          - name: branch2
            in: input
            layers:
              - {op: conv2d, out: 6, kernel: 1}
              - {op: conv2d, out: 12, kernel: 3, padding: 1}
          - name: branch3
            in: input
            layers:
              - {op: maxpool2d, kernel: 3, stride: 1, padding: 1}
              - {op: conv2d, out: 4, kernel: 1}
          - {op: concat, name: out, in: [branch1, branch2, branch3]}
    """)
    assert g.node("branch2.0").inputs == ("input",)
    assert g.node("branch3.0").inputs == ("input",)
    assert g.node("out").inputs == ("branch1", "branch2.1", "branch3.1")
    assert dims(g, "out") == (8 + 12 + 4, 14, 14)


def test_unet_like_skips_and_a_two_input_block(load_spec):
    g = load_spec("""
        input: {shape: [1, 32, 32]}
        blocks:
          up:
            params: {c: int}
            inputs: [x, skip]
            layers:
              - {op: conv_transpose2d, name: upconv, in: x, out: $c, kernel: 2, stride: 2}
              - {op: concat, name: cat, in: [upconv, skip]}
              - {op: conv2d, name: conv, out: $c, kernel: 3, padding: 1}
        layers:
          - {op: conv2d, name: e1, out: 8, kernel: 3, padding: 1}
          - {op: maxpool2d, name: p1, kernel: 2}
          - {op: conv2d, name: e2, out: 16, kernel: 3, padding: 1}
          - {op: maxpool2d, name: p2, kernel: 2}
          - {op: conv2d, name: bottom, out: 32, kernel: 3, padding: 1}
          - {op: up, name: u2, in: [bottom, e2], c: 16}
          - {op: up, name: u1, in: [u2, e1], c: 8}
          - {op: conv2d, name: head, out: 2, kernel: 1}
    """)
    assert g.node("u2.upconv").inputs == ("bottom",)
    assert g.node("u2.cat").inputs == ("u2.upconv", "e2")
    assert dims(g, "u2.cat") == (32, 16, 16)
    assert g.node("u1.upconv").inputs == ("u2.conv",)
    assert g.node("u1.cat").inputs == ("u1.upconv", "e1")
    assert dims(g, "u1.cat") == (16, 32, 32)
    assert dims(g, "head") == (2, 32, 32)


def test_block_with_two_inputs_given_one(spec_error):
    err = spec_error("""
        input: {shape: [1, 8, 8]}
        blocks:
          merge:
            inputs: [x, y]
            layers: [{op: add, in: [x, y]}]
        layers:
          - {op: relu, name: a}
          - {op: merge, in: a}
    """)
    assert errors_at(err, 8)
    assert "2 input" in err.format()


def test_group_looks_names_up_in_enclosing_scopes(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - name: g
            layers:
              - {op: relu, name: r}
              - {op: add, name: s, in: [r, a]}
    """)
    assert g.node("g.r").inputs == ("a",)
    assert g.node("g.s").inputs == ("g.r", "a")


# --- expressions -----------------------------------------------------------------------------------

def test_expressions_in_attributes(load_spec):
    g = load_spec("""
        params:
          width: {type: float, default: 0.75}
          base: 32
          act: {type: str, default: tanh}
        input: {shape: [3, 20, 20]}
        layers:
          - {op: conv2d, name: a, out: "${make_divisible(base * width, 8)}", kernel: 3, padding: 1}
          - {op: conv2d, name: b, out: "${max(3, min(7, base // 3))}", kernel: "${ceil(2.1)}"}
          - {op: conv2d, name: c, out: "${round(2.5) + floor(1.9)}", kernel: 1}
          - {op: conv2d, name: d, out: "${input.c * 4 + a.c}", kernel: 1}
          - {op: conv2d, name: e, out: "${b.shape[0] * 2 ** 3 % 5}", kernel: 1}
          - {op: "${'relu' if act == 'relu' else act}", name: f}
          - {op: conv2d, name: h, out: "${input.h - 2 * 3 if base > 10 else 1}", kernel: 1}
    """)
    def make_divisible(v, divisor, min_value=None):  # torchvision.models._utils._make_divisible
        min_value = min_value or divisor
        new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
        if new_v < 0.9 * v:
            new_v += divisor
        return new_v
    assert dims(g, "a")[0] == make_divisible(32 * 0.75, 8) == 24
    assert dims(g, "b") == (7, 18, 18)       # min(7, 10) = 7; kernel ceil(2.1) = 3
    assert dims(g, "c")[0] == 3 + 1          # round half away from zero: 2.5 -> 3
    assert dims(g, "d")[0] == 3 * 4 + 24
    assert dims(g, "e")[0] == (7 * 8) % 5
    assert g.node("f").op == "tanh"
    assert dims(g, "h")[0] == 14


def test_make_divisible_matches_torchvision(load_spec):
    g = load_spec("""
        input: {shape: [3, 4, 4]}
        layers:
          - {op: conv2d, name: a, out: "${make_divisible(10, 8)}", kernel: 1}
          - {op: conv2d, name: b, out: "${make_divisible(37)}", kernel: 1}
          - {op: conv2d, name: c, out: "${make_divisible(3, 8)}", kernel: 1}
    """)
    # torchvision: max(8, int(10 + 4) // 8 * 8) = 8 < 0.9 * 10, so one more step: 16
    assert dims(g, "a")[0] == 16
    assert dims(g, "b")[0] == 40
    assert dims(g, "c")[0] == 8


def test_round_halves_away_from_zero(load_spec):
    g = load_spec("""
        input: {shape: [3, 4, 4]}
        layers:
          - {op: conv2d, name: a, out: "${round(0.5)}", kernel: 1}
          - {op: conv2d, name: b, out: "${round(3.5)}", kernel: 1}
          - {op: conv2d, name: c, out: "${-round(-4.5)}", kernel: 1}
    """)
    assert [dims(g, n)[0] for n in "abc"] == [1, 4, 5]


# --- variants and extends --------------------------------------------------------------------------

VARIANTS = """
    params: {width: 8, depth: 1}
    input: {shape: [3, 8, 8]}
    variants:
      wide: {params: {width: 32}}
      deep: {params: {depth: 3}}
    layers:
      - {op: conv2d, name: c, repeat: $depth, out: $width, kernel: 1}
"""


def test_variants_are_chosen_by_name(load_spec):
    base = load_spec(VARIANTS)
    wide = netspec.load("spec.yaml", variant="wide")
    deep = netspec.load("spec.yaml", variant="deep")
    assert [n.name for n in base] == ["c.0"] and dims(base, "c.0")[0] == 8
    assert dims(wide, "c.0")[0] == 32 and wide.variant == "wide"
    assert [n.name for n in deep] == ["c.0", "c.1", "c.2"]
    # an explicit --set wins over the variant
    both = netspec.load("spec.yaml", variant="wide", params={"width": 4})
    assert dims(both, "c.0")[0] == 4


def test_variant_is_not_guessed_from_the_file_name(load_spec):
    g = load_spec(VARIANTS, "wide.yaml")
    assert dims(g, "c.0")[0] == 8 and g.variant is None


def test_unknown_variant(write_spec):
    path = write_spec(VARIANTS)
    with pytest.raises(SpecError) as info:
        netspec.load(path, variant="wider")
    text = info.value.format()
    assert "wider" in text and "did you mean 'wide'" in text
    assert "deep" in text  # lists the declared variants


def test_extends_changes_parameter_defaults(write_spec, load_spec):
    write_spec(VARIANTS, "base.yaml")
    g = load_spec("""
        extends: base.yaml
        name: deeper
        params: {depth: 2}
    """, "ext.yaml")
    assert g.name == "deeper"
    assert [n.name for n in g] == ["c.0", "c.1"]
    assert dims(g, "c.1")[0] == 8
    assert g.params["depth"] == 2 and g.params["width"] == 8
    # the base is unchanged, and the extension's parameters can still be overridden
    assert len(netspec.load("base.yaml")) == 1
    assert len(netspec.load("ext.yaml", params={"depth": 4})) == 4


def test_extends_refuses_layers(write_spec, spec_error):
    write_spec(VARIANTS, "base.yaml")
    err = spec_error("""
        extends: base.yaml
        layers: [{op: relu}]
    """, "ext.yaml")
    assert errors_at(err, 2)
    assert "extends" in err.format()


# --- modes -----------------------------------------------------------------------------------------

MODES = """
    input: {shape: [4, 8, 8]}
    layers:
      - {op: conv2d, name: a, out: 4, kernel: 1}
      - {op: dropout, name: drop, p: 0.2, mode: train}
      - {op: relu, name: r}
      - {op: identity, name: probe, mode: eval}
      - {op: conv2d, name: out, out: 2, kernel: 1}
"""


def test_mode_only_nodes_are_bypassed_by_active(load_spec):
    g = load_spec(MODES)
    assert g.node("drop").mode == "train" and g.node("probe").mode == "eval" and g.node("a").mode is None
    ev = g.active("eval")
    assert [n.name for n in ev] == ["a", "r", "probe", "out"]
    assert ev.node("r").inputs == ("a",)
    tr = g.active("train")
    assert [n.name for n in tr] == ["a", "drop", "r", "out"]
    assert tr.node("out").inputs == ("r",)
    assert tr.node("r").inputs == ("drop",)


def test_mode_only_output_is_bypassed_to_its_input(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: dropout, name: drop, mode: train}
    """)
    assert g.outputs == ["drop"]
    assert g.active("train").outputs == ["drop"]
    # in eval mode the dropout is bypassed, so the network's output is its input
    assert g.active("eval").outputs == ["a"]


def test_mode_applies_to_a_group(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: a}
          - {name: aux, mode: train, layers: [{op: dropout}, {op: identity}]}
          - {op: relu, name: b}
    """)
    assert g.node("aux.0").mode == "train" and g.node("aux.1").mode == "train"
    assert g.active("eval").node("b").inputs == ("a",)


def test_mode_only_node_that_changes_shape_cannot_be_consumed(spec_error):
    err = spec_error("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 1}
          - {op: maxpool2d, name: p, kernel: 2, mode: train}
          - {op: conv2d, name: c, out: 2, kernel: 1}
    """)
    (d,) = err.diagnostics
    assert d.location.line == 5
    assert "'p'" in d.message and "train" in d.message


# --- parameters ------------------------------------------------------------------------------------

PARAMS = """
    params:
      num_classes: 1000
      width: {type: float, default: 1.0}
      use_bias: true
    input: {shape: [3, 4, 4]}
    layers:
      - {op: conv2d, name: c, out: "${int(8 * width)}", kernel: 1, bias: $use_bias}
      - {op: flatten}
      - {op: linear, name: fc, out: $num_classes}
"""


def test_param_overrides_through_the_api(load_spec):
    g = load_spec(PARAMS)
    assert dims(g, "fc") == (1000,) and g.params == {"num_classes": 1000, "width": 1.0, "use_bias": True}
    g = netspec.load("spec.yaml", params={"num_classes": 10, "width": 2, "use_bias": False})
    assert dims(g, "fc") == (10,)
    assert dims(g, "c")[0] == 16
    assert g.node("c").attrs.bias is False
    assert g.params["width"] == 2.0 and isinstance(g.params["width"], float)


@pytest.mark.parametrize("override", [{"num_classes": "10"}, {"num_classes": 2.5}, {"use_bias": 1},
                                      {"num_classes": True}, {"width": "wide"}])
def test_param_overrides_are_typed(load_spec, override):
    load_spec(PARAMS)
    with pytest.raises(SpecError) as info:
        netspec.load("spec.yaml", params=override)
    (key,) = override
    assert f"'{key}'" in info.value.format()


def test_unknown_param_override(load_spec):
    load_spec(PARAMS)
    with pytest.raises(SpecError) as info:
        netspec.load("spec.yaml", params={"num_clases": 10})
    assert "did you mean 'num_classes'" in info.value.format()


def test_required_spec_param(load_spec, write_spec):
    write_spec("""
        params: {n: int}
        input: {shape: [3, 4, 4]}
        layers: [{op: conv2d, out: $n, kernel: 1}]
    """)
    with pytest.raises(SpecError):
        netspec.load("spec.yaml")
    assert netspec.load("spec.yaml", params={"n": 5}).type_of("0").c == 5


def test_param_defaults_use_earlier_params(load_spec):
    g = load_spec("""
        params:
          base: 4
          wide: {type: int, default: "${base * 3}"}
        input: {shape: [3, 4, 4]}
        layers: [{op: conv2d, out: $wide, kernel: 1}]
    """)
    assert g.type_of("0").c == 12
    g = netspec.load("spec.yaml", params={"base": 5})
    assert g.type_of("0").c == 15


# --- inferred shapes -------------------------------------------------------------------------------

def test_shapes_are_inferred_without_in_channels(load_spec):
    g = load_spec("""
        input: {shape: [3, 28, 28]}
        layers:
          - {op: conv2d, name: c1, out: 6, kernel: 5, padding: 2}
          - {op: maxpool2d, name: p1, kernel: 2}
          - {op: conv2d, name: c2, out: 16, kernel: 5}
          - {op: flatten, name: f}
          - {op: linear, name: fc, out: 10}
    """)
    assert dims(g, "c1") == (6, 28, 28)
    assert dims(g, "p1") == (6, 14, 14)
    assert dims(g, "c2") == (16, 10, 10)
    assert dims(g, "f") == (1600,)
    assert g.type_of("fc").shape == ("N", 10)


def test_in_channels_is_an_unknown_attribute(spec_error):
    err = spec_error("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, in_channels: 3, out: 4, kernel: 3}
    """)
    (d,) = err.diagnostics
    assert (d.location.line, d.location.col) == (3, 18)
    assert "unknown attribute 'in_channels'" in d.message


# --- computed names (issue #29, 1) ------------------------------------------------------------------

def test_a_computed_name_numbers_repeat_iterations_directly(load_spec):
    g = load_spec("""
        params: {n: 3}
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: "c${i + 1}", repeat: $n, out: 4, kernel: 1}
          - {op: relu, name: "r${n}"}
          - {op: add, name: sum, in: [c1, c3]}
    """)
    assert [n.name for n in g] == ["c1", "c2", "c3", "r3", "sum"]
    assert g.node("c2").inputs == ("c1",) and g.node("r3").inputs == ("c3",)
    assert g.node("sum").inputs == ("c1", "c3")
    assert "c1" not in g.scopes  # no repeat level: the iterations are entries of the list


def test_a_repeat_without_a_computed_name_keeps_its_level(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: c, repeat: 2, out: 4, kernel: 1}
    """)
    assert [n.name for n in g] == ["c.0", "c.1"]


def test_computed_names_continue_across_stages_like_torchvision_features(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        blocks:
          unit:
            layers: [{op: conv2d, name: conv, out: 4, kernel: 1}, {op: relu, name: act}]
        layers:
          - {name: features, layers: [
              {op: conv2d, out: 4, kernel: 1},
              {op: unit, name: "${1 + i}", repeat: 2},
              {op: unit, name: "${3 + i}", repeat: 3},
              {op: relu}]}
    """)
    names = [n.name for n in g]
    assert names[0] == "features.0"
    assert names[1:11:2] == [f"features.{k}.conv" for k in range(1, 6)]
    assert names[-1] == "features.6"  # an unnamed entry counts the iterations before it


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 5), st.integers(0, 20))
def test_computed_names_property(n, start):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(dedent(f"""
            params: {{n: {n}, start: {start}}}
            input: {{shape: [2, 4, 4]}}
            layers:
              - {{op: relu, name: first}}
              - {{op: conv2d, name: "layer${{start + i}}", repeat: $n, out: 2, kernel: 1}}
              - {{op: relu, name: last}}
        """))
        g = netspec.load(path)
    expected = [f"layer{start + k}" for k in range(n)]
    assert [node.name for node in g] == ["first"] + expected + ["last"]
    chain = ["first"] + expected + ["last"]
    assert all(g.node(b).inputs == (a,) for a, b in zip(chain, chain[1:]))


def test_a_computed_name_must_be_valid(spec_error):
    text = """
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: "a${'-x'}"}
    """
    one_error_at(spec_error(text), *locate(text, '"a$'), "'a-x'", "a${'-x'}", "not a valid name")


def test_computed_names_must_be_unique(spec_error):
    text = """
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: "r${i // 2}", repeat: 3}
    """
    one_error_at(spec_error(text), *locate(text, '"r$'), "'r0'", "already used")


def test_a_name_that_is_not_a_word_says_names_may_be_computed(spec_error):
    err = spec_error("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: "a b"}
    """)
    assert "${" in errors_at(err, 3)[0].message


# --- asserts (issue #29, 2) -------------------------------------------------------------------------

ASSERTING = """
    params: {n: 3}
    input: {shape: [4, 8, 8]}
    variants: {many: {params: {n: 30}}}
    blocks:
      dense:
        params: {n: int}
        layers:
          - {assert: "${n <= 24}", message: "dense lists at most 24 layers, got ${n}"}
          - {op: conv2d, name: "l${i + 1}", repeat: $n, out: 4, kernel: 1}
    layers:
      - {assert: "${n >= 1 and input.c == 4}"}
      - {op: dense, name: block, n: $n}
"""


def test_a_passing_assert_makes_nothing(load_spec):
    g = load_spec(ASSERTING)
    assert [n.name for n in g] == ["block.l1", "block.l2", "block.l3"]
    assert g.node("block.l1").inputs == ("input",)


def test_a_failing_assert_is_an_error_at_its_entry_with_the_message(spec_error):
    err = spec_error(ASSERTING, variant="many")
    d = one_error_at(err, *locate(ASSERTING, "{assert"), "assertion failed: dense lists at most 24 layers, got 30")
    assert d.notes and d.notes[0][0].line == locate(ASSERTING, "{op: dense")[0]  # the block's use
    err = spec_error(ASSERTING, params={"n": 0})
    one_error_at(err, *locate(ASSERTING, "{assert", 2), "assertion failed", "n >= 1 and input.c == 4", "n = 0")


def test_check_checks_asserts_for_every_variant(write_spec, cli):
    write_spec(ASSERTING)
    r = cli("check", "spec.yaml")
    assert r.code == 1
    line, col = locate(ASSERTING, "{assert")
    assert f"spec.yaml:{line}:{col}: error: assertion failed: dense lists at most 24 layers, got 30 (variant many)" in r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("entry,words", [
    ('{assert: "${3}"}', ["true or false", "3"]),
    ('{assert: "${nope}"}', ["unknown name 'nope'"]),
    ('{assert: true, op: relu}', ["assert"]),
    ('{assert: true, message: 3}', ["string"]),
    ('{assert: true, repeat: 2}', ["assert"]),
])
def test_malformed_asserts(spec_error, entry, words):
    err = spec_error(f"""
        input: {{shape: [4, 8, 8]}}
        layers:
          - {entry}
          - {{op: relu}}
    """)
    found = errors_at(err, 3)
    assert len(found) == 1, err.format()
    for w in words:
        assert w in found[0].message, found[0].message


# --- honest merges (issue #29, 3) -------------------------------------------------------------------

MERGE = """
    params: {n: 1}
    input: {shape: [4, 8, 8]}
    layers:
      - {op: conv2d, name: l1, out: 2, kernel: 1}
      - {op: conv2d, name: l2, in: [input], out: 2, kernel: 1, when: "${n >= 2}"}
      - {op: concat, name: cat, in: [input, l1, %s]}
"""


def test_an_absent_entry_in_a_merge_is_an_error(spec_error):
    err = spec_error(MERGE % "l2")
    d = one_error_at(err, *locate(MERGE % "l2", "l2]"), "'l2' is absent", "l2 if present")
    assert f"line {locate(MERGE, 'when')[0]}" in d.message


def test_an_optional_reference_is_left_out_when_absent(load_spec):
    g = load_spec(MERGE % "l2 if present")
    assert g.node("cat").inputs == ("input", "l1") and dims(g, "cat") == (6, 8, 8)
    g = load_spec(MERGE % "l2 if present", params={"n": 2})
    assert g.node("cat").inputs == ("input", "l1", "l2") and dims(g, "cat") == (8, 8, 8)


def test_a_fallback_reference_stands_in_for_an_absent_entry(load_spec):
    g = load_spec(MERGE % "l2 or input")
    assert g.node("cat").inputs == ("input", "l1", "input")
    g = load_spec(MERGE % "l2 or input", params={"n": 2})
    assert g.node("cat").inputs == ("input", "l1", "l2")


def test_a_single_input_still_passes_through_an_absent_entry(load_spec):
    g = load_spec("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: a}
          - {op: relu, name: b, when: false}
          - {op: relu, name: c, in: b}
    """)
    assert g.node("c").inputs == ("a",)


def test_a_merge_with_every_input_left_out(spec_error):
    text = """
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: a, when: false}
          - {op: concat, in: [a if present, a if present]}
    """
    one_error_at(spec_error(text), *locate(text, "[a if"), "every input")


@pytest.mark.parametrize("ref", ["'a if'", "'or a'", "'a or'", "'a or b c'", "'a  if present'"])
def test_malformed_optional_references(spec_error, ref):
    err = spec_error(f"""
        input: {{shape: [4, 8, 8]}}
        layers:
          - {{op: relu, name: a}}
          - {{op: concat, in: [a, {ref}]}}
    """)
    assert errors_at(err, 4), err.format()


# --- blocks and spec parameters (issue #29, 4) ------------------------------------------------------

def test_a_spec_parameter_inside_a_block_says_it_must_be_passed_in(spec_error):
    text = """
        params: {g: 2}
        input: {shape: [4, 8, 8]}
        blocks:
          b:
            layers: [{op: conv2d, out: 4, kernel: 1, groups: $g}]
        layers:
          - {op: b}
    """
    one_error_at(spec_error(text), *locate(text, "$g"), "unknown name 'g'", "spec parameter", "block 'b'", "spec.g")


def test_a_block_parameter_defaults_to_a_spec_parameter(load_spec):
    text = """
        params: {g: 2}
        input: {shape: [4, 8, 8]}
        blocks:
          b:
            params: {g: {type: int, default: "${spec.g}"}}
            layers: [{op: conv2d, name: conv, out: 4, kernel: 1, groups: $g}]
        layers:
          - {op: b, name: x}
          - {op: b, name: y, g: 4}
    """
    g = load_spec(text)
    assert g.node("x.conv").attrs.groups == 2 and g.node("y.conv").attrs.groups == 4
    g = load_spec(text, params={"g": 1})
    assert g.node("x.conv").attrs.groups == 1


def test_a_block_default_naming_a_missing_spec_parameter(spec_error):
    text = """
        input: {shape: [4, 8, 8]}
        blocks:
          b:
            params: {g: {type: int, default: "${spec.g}"}}
            layers: [{op: conv2d, out: 4, kernel: 1, groups: $g}]
        layers:
          - {op: b}
    """
    d = one_error_at(spec_error(text), *locate(text, '"${spec'), "spec has no parameter 'g'")
    assert d.notes[0][0].line == locate(text, "{op: b}")[0]


def test_spec_is_read_only_in_block_defaults(spec_error):
    text = """
        params: {g: 2}
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, out: 4, kernel: 1, groups: "${spec.g}"}
    """
    one_error_at(spec_error(text), *locate(text, '"${spec'), "spec.g", "block parameter")


def test_the_dense_block_example_has_torchvisions_names_and_counts():
    from pathlib import Path
    spec = Path(__file__).resolve().parent.parent / "specs" / "examples" / "dense_block.yaml"
    g = netspec.load(spec)
    convs = [n.name for n in g if n.op == "conv2d"]
    assert convs[:2] == ["features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.conv2"]
    assert convs[-1] == "features.transition1.conv" and len(convs) == 13
    assert dims(g, "features.denseblock1.denselayer6.cat") == (256, 56, 56)
    assert netspec.summary(g).params == 368_320  # torchvision's densenet121: its first block and transition
    g12 = netspec.load(spec, params={"depth": 12, "growth": 16})
    assert dims(g12, "features.denseblock1.denselayer12.cat") == (64 + 12 * 16, 56, 56)
    with pytest.raises(SpecError, match="a dense block holds 1 to 24 layers, not 25"):
        netspec.load(spec, params={"depth": 25})


def test_the_names_of_an_absent_computed_repeat_are_known_to_be_absent(spec_error, load_spec):
    text = """
        params: {deep: false}
        input: {shape: [4, 8, 8]}
        layers:
          - {op: relu, name: "r${i + 1}", repeat: 2, when: $deep}
          - {op: add, in: [r2 %s, input]}
    """
    one_error_at(spec_error(text % ""), *locate(text % "", "r2 ,"), "'r2' is absent")
    assert load_spec(text % "or input").nodes[-1].inputs == ("input", "input")
    assert [n.name for n in load_spec(text % "", params={"deep": True})] == ["r1", "r2", "2"]
