"""Every class of mistake is reported as `file:line:col: error: message` at the offending YAML node,
all mistakes of a file at once, and the CLI never shows a traceback."""
from __future__ import annotations

import pytest

from conftest import errors_at, locate, one_error_at


def check(spec_error, text, needle, *words, occurrence=1):
    """Load `text`, expect exactly one error, at the position of `needle`; return it."""
    err = spec_error(text)
    line, col = locate(text, needle, occurrence)
    assert len(err.diagnostics) == 1, err.format()
    return one_error_at(err, line, col, *words)


def test_unknown_top_level_field(spec_error):
    text = """
        name: net
        input: {shape: [3, 8, 8]}
        laters:
          - {op: relu}
        layers: [{op: relu}]
    """
    check(spec_error, text, "laters", "unknown field 'laters'", "did you mean 'layers'")


def test_unknown_field_in_a_layer_entry_position(spec_error):
    text = """
        input: {shape: [3, 8, 8], nmae: x}
        layers: [{op: relu}]
    """
    check(spec_error, text, "nmae", "unknown field 'nmae'", "did you mean 'name'")


def test_unknown_layer_attribute(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu}
          - {op: conv2d, out: 4, kernal: 3}
    """
    check(spec_error, text, "kernal", "unknown attribute 'kernal' for conv2d", "did you mean 'kernel'")


def test_unknown_layer_attribute_block_style(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - op: conv2d
            out: 4
            kernel: 3
            stirde: 2
    """
    check(spec_error, text, "stirde", "unknown attribute 'stirde'", "did you mean 'stride'")


def test_unknown_op(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, out: 4, kernel: 3}
          - {op: maxpol2d, kernel: 2}
    """
    check(spec_error, text, "maxpol2d", "unknown op 'maxpol2d'", "did you mean 'maxpool2d'")


@pytest.mark.parametrize("attr,value,words", [
    ("kernel", '"3"', ["kernel", "integer"]),
    ("kernel", "[3, 3, 3]", ["kernel"]),
    ("kernel", "2.5", ["kernel", "integer"]),
    ("bias", "1", ["bias", "true or false"]),
    ("padding", "middle", ["padding"]),
    ("out", "{c: 4}", ["out"]),
])
def test_wrong_value_type(spec_error, attr, value, words):
    attrs = {"out": "4", "kernel": "3", "bias": "true", "padding": "0"}
    attrs[attr] = value
    body = ", ".join(f"{k}: {v}" for k, v in attrs.items())
    text = f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: conv2d, {body}}}
    """
    line, col = locate(text, f"{attr}: {value}")
    err = spec_error(text)
    assert len(err.diagnostics) == 1, err.format()  # one mistake, one message
    one_error_at(err, line, col + len(attr) + 2, *words)


def test_wrong_type_in_structure(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, repeat: many}
    """
    check(spec_error, text, "many", "integer")


def test_input_shape_not_a_list(spec_error):
    text = """
        input: {shape: 224}
        layers: [{op: relu}]
    """
    check(spec_error, text, "224", "list")


def test_reference_to_a_missing_node(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv1, out: 4, kernel: 3}
          - {op: relu, name: r, in: conv}
    """
    check(spec_error, text, "conv}", "no earlier node named 'conv'", "did you mean 'conv1'")


def test_reference_to_a_missing_node_in_a_list(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, name: a}
          - {op: add, in: [a, b]}
    """
    check(spec_error, text, "b]", "'b'")


def test_reference_to_a_later_node(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, name: a}
          - {op: relu, name: b, in: c}
          - {op: relu, name: c, in: a}
    """
    check(spec_error, text, "c}", "'c'", "later")


def test_cycle(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, name: a}
          - {op: add, name: x, in: [a, y]}
          - {op: relu, name: y, in: x}
    """
    check(spec_error, text, "y]", "cycle")


def test_self_cycle(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, name: s, in: s}
    """
    check(spec_error, text, "s}", "cycle")


def test_add_of_incompatible_shapes(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 3}
          - {op: add, name: sum, in: [a, input]}
    """
    check(spec_error, text, "{op: add", "sum", "4×6×6", "3×8×8")


def test_concat_of_incompatible_shapes(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 3}
          - op: concat
            name: cat
            in: [a, input]
    """
    check(spec_error, text, "op: concat", "cat", "4×6×6", "3×8×8")


def test_kernel_larger_than_padded_input(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: big, out: 4, kernel: 11, padding: 1}
    """
    check(spec_error, text, "11", "big", "kernel", "10")


def test_pool_kernel_larger_than_input(spec_error):
    text = """
        input: {shape: [3, 4, 4]}
        layers:
          - {op: maxpool2d, kernel: 5}
    """
    check(spec_error, text, "5}", "kernel")


@pytest.mark.parametrize("attr,value", [("out", "0"), ("out", "-3"), ("kernel", "0"), ("stride", "0"),
                                        ("dilation", "-1"), ("groups", "0"), ("padding", "-1")])
def test_non_positive_sizes(spec_error, attr, value):
    attrs = {"out": "4", "kernel": "1"}
    attrs[attr] = value
    body = ", ".join(f"{k}: {v}" for k, v in attrs.items())
    text = f"""
        input: {{shape: [4, 8, 8]}}
        layers:
          - {{op: conv2d, {body}}}
    """
    line, col = locate(text, f"{attr}: {value}")
    err = spec_error(text)
    assert len(err.diagnostics) == 1, err.format()
    one_error_at(err, line, col + len(attr) + 2, attr)


def test_non_positive_size_reported_at_the_value(spec_error):
    text = """
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, out: 0, kernel: 1}
    """
    check(spec_error, text, "0, kernel", "out", "positive")


def test_non_positive_input_size(spec_error):
    text = """
        input: {shape: [3, 0, 8]}
        layers: [{op: relu}]
    """
    check(spec_error, text, "0, 8", "input")


def test_linear_out_zero(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: flatten}
          - {op: linear, out: 0}
    """
    check(spec_error, text, "0}", "out")


def test_channels_not_divisible_by_groups(spec_error):
    text = """
        input: {shape: [6, 8, 8]}
        layers:
          - {op: conv2d, name: g, out: 8, kernel: 3, groups: 4}
    """
    check(spec_error, text, "4}", "'g'", "groups", "6")


def test_out_channels_not_divisible_by_groups(spec_error):
    text = """
        input: {shape: [6, 8, 8]}
        layers:
          - {op: conv2d, name: g, out: 4, kernel: 3, groups: 3}
    """
    check(spec_error, text, "3}", "groups")


BLOCK_ERROR = """
    input: {shape: [3, 8, 8]}
    blocks:
      dw:
        params: {g: 1}
        layers:
          - {op: relu, name: pre}
          - {op: conv2d, name: conv, out: 6, kernel: 1, groups: $g}
    layers:
      - {op: relu}
      - {op: dw, name: ok}
      - {op: dw, name: bad, g: 4}
"""


def test_error_inside_a_block_has_a_note_for_the_use(spec_error):
    err = spec_error(BLOCK_ERROR)
    assert len(err.diagnostics) == 1, err.format()
    line, col = locate(BLOCK_ERROR, "$g")
    d = one_error_at(err, line, col, "'bad.conv'", "groups (4)")
    use_line, use_col = locate(BLOCK_ERROR, "{op: dw, name: bad")
    assert [(n[0].line, n[0].col) for n in d.notes] == [(use_line, use_col)]
    lines = err.format().splitlines()
    assert lines[0].startswith(f"spec.yaml:{line}:{col}: error: ")
    assert lines[1] == f"spec.yaml:{use_line}:{use_col}: note: in block 'dw' used here"


def test_error_inside_nested_blocks_notes_innermost_use_first(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        blocks:
          inner:
            params: {g: 1}
            layers:
              - {op: conv2d, out: 4, kernel: 1, groups: $g}
          outer:
            layers:
              - {op: inner, name: i1, g: 2}
        layers:
          - {op: relu}
          - {op: outer, name: o}
    """
    err = spec_error(text)
    (d,) = err.diagnostics
    assert (d.location.line, d.location.col) == locate(text, "$g")
    inner_use, outer_use = locate(text, "{op: inner"), locate(text, "{op: outer")
    # like a compiler's "required from here" chain: the closest use first
    assert [(n[0].line, n[0].col) for n in d.notes] == [inner_use, outer_use]
    assert "'inner'" in d.notes[0][1] and "'outer'" in d.notes[1][1]


def test_error_inside_an_imported_block_points_into_the_library(write_spec, spec_error):
    lib = """
        blocks:
          unit:
            params: {c: int}
            layers:
              - {op: conv2d, name: conv, out: $c, kernel: 1}
              - {op: maxpool2d, kernel: 9}
    """
    write_spec(lib, "lib.yaml")
    text = """
        input: {shape: [3, 8, 8]}
        imports: [lib.yaml]
        layers:
          - {op: unit, name: u, c: 4}
    """
    err = spec_error(text)
    (d,) = err.diagnostics
    assert (d.location.file, d.location.line, d.location.col) == ("lib.yaml", *locate(lib, "9}"))
    assert [(n[0].file, n[0].line, n[0].col) for n in d.notes] == [("spec.yaml", *locate(text, "{op: unit"))]


def test_default_of_a_block_parameter_that_fails(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        blocks:
          b:
            params:
              h: {type: int, default: "${input.q}"}
            layers: [{op: conv2d, out: $h, kernel: 1}]
        layers:
          - {op: b}
    """
    err = spec_error(text)
    (d,) = err.diagnostics
    assert d.location.line == locate(text, "input.q")[0]
    assert d.notes and d.notes[0][0].line == locate(text, "{op: b}")[0]


def test_several_errors_are_reported_at_once(spec_error, cli):
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernal: 3}
          - {op: conv2, name: b, out: 4, kernel: 3}
          - {op: relu, name: c, in: nothere}
          - {op: conv2d, name: d, in: input, out: 0, kernel: 3}
          - {op: conv2d, name: e, in: input, out: 4, kernel: 3, groups: 2}
          - {op: conv2d, name: f, in: input, out: 4, kernel: 30}
    """
    err = spec_error(text)
    expected = [locate(text, "kernal"), locate(text, "conv2,"), locate(text, "nothere"),
                locate(text, "0, kernel"), locate(text, "2}"), locate(text, "30")]
    found = sorted((d.location.line, d.location.col) for d in err.diagnostics)
    assert len(err.diagnostics) == 6, err.format()
    assert [line for line, _ in found] == [line for line, _ in expected]
    r = cli("check", "spec.yaml")
    assert r.code == 1
    assert r.err.count(": error: ") == 6


def test_structure_errors_are_all_reported_at_once(spec_error):
    text = """
        nmae: x
        input: {shape: [3, 8, 8]}
        params: {a: 1, b: unknown_type}
        layers:
          - {op: relu, repeat: lots}
          - {name: g}
    """
    err = spec_error(text)
    assert len(err.diagnostics) == 4, err.format()
    assert sorted(d.location.line for d in err.diagnostics) == [1, 3, 5, 6]


def test_broken_entries_nested_in_a_broken_group(spec_error, cli):
    # two structural mistakes, one inside the other: both reported, no crash in error recovery
    text = """
        input: {shape: [3, 8, 8]}
        layers:
          - name: ''
            layers:
              - {kernel: 3}
          - {op: relu, name: ok}
          - {op: reluu}
    """
    err = spec_error(text)
    lines = sorted(d.location.line for d in err.diagnostics)
    assert locate(text, "''")[0] in lines and locate(text, "{kernel")[0] in lines, err.format()
    r = cli("check", "spec.yaml")
    assert r.code == 1 and "internal error" not in r.err and "Traceback" not in r.err, r.err


def test_every_diagnostic_has_a_real_location(spec_error):
    text = """
        input: {shape: [3, 8, 8]}
        blocks:
          b:
            params: {c: int}
            layers:
              - {op: conv2d, out: $c, kernel: 5}
              - {op: add, in: [input, 0]}
        layers:
          - {op: b, c: 2}
          - {op: b, c: x}
          - {op: b}
    """
    err = spec_error(text)
    assert err.diagnostics
    for d in err.diagnostics:
        assert d.location.file == "spec.yaml" and d.location.line >= 1 and d.location.col >= 1, d.format()


ERROR_SPECS = {
    "unknown_field": "input: {shape: [3, 8, 8]}\nlayerz: []\nlayers: [{op: relu}]\n",
    "unknown_op": "input: {shape: [3, 8, 8]}\nlayers: [{op: relux}]\n",
    "bad_yaml": "input: {shape: [3, 8, 8]\nlayers: [\n",
    "shape": "input: {shape: [3, 8, 8]}\nlayers: [{op: linear, out: 3}]\n",
    "cycle": "input: {shape: [3, 8, 8]}\nlayers: [{op: relu, name: a, in: a}]\n",
    "not_mapping": "- 1\n- 2\n",
    "expr": "input: {shape: [3, 8, 8]}\nlayers: [{op: conv2d, out: '${1/0}', kernel: 1}]\n",
    "tag": "input: !!python/object:os.system {}\nlayers: []\n",
}


@pytest.mark.parametrize("name", sorted(ERROR_SPECS))
@pytest.mark.parametrize("command", ["check", "summary", "expand"])
def test_cli_reports_errors_without_traceback(write_spec, cli, name, command):
    write_spec(ERROR_SPECS[name], "bad.yaml")
    r = cli(command, "bad.yaml")
    assert r.code == 1, (r.out, r.err)
    assert "Traceback" not in r.out + r.err
    assert "internal error" not in r.err
    assert "bad.yaml:" in r.err and ": error: " in r.err
    first = r.err.splitlines()[0]
    file, line, col, rest = first.split(":", 3)
    assert file == "bad.yaml" and int(line) >= 1 and int(col) >= 1 and rest.startswith(" error: ")


@pytest.mark.parametrize("attr,words", [("eps: -1", ["eps", "must be positive"]), ("momentum: 5", ["momentum", "between 0 and 1"]),
                                        ("eps: .nan", ["eps", "finite"])])
def test_batchnorm_attribute_ranges(spec_error, attr, words):
    err = spec_error(f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: batchnorm2d, {attr}}}
        """)
    assert len(err.diagnostics) == 1 and err.diagnostics[0].location.line == 3
    for w in words:
        assert w in err.diagnostics[0].message


# --- follow-on errors (issue #29, 6) ----------------------------------------------------------------

def test_a_follow_on_error_is_left_out_and_never_suggests_the_same_name(spec_error):
    err = spec_error("""
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 9}
          - {op: conv2d, out: "${a.c}", kernel: 1}
          - {op: relu, name: b, in: a}
          - {op: linear, out: "${b.c + 1}"}
    """)
    assert len(err.diagnostics) == 1, err.format()
    assert err.diagnostics[0].location.line == 3 and "kernel" in err.diagnostics[0].message
    assert "did you mean 'a'" not in err.format()


def test_did_you_mean_never_offers_the_word_itself():
    from netspec.spec.errors import did_you_mean
    assert did_you_mean("a", ["a", "b"]) == ""
    assert did_you_mean("conv", ["conv", "conv1"]) == " (did you mean 'conv1'?)"


def test_an_assert_over_a_failed_node_stays_quiet_or_names_parameters(spec_error, cli, write_spec):
    text = """
        params: {x: 1}
        input: {shape: [4, 8, 8]}
        layers:
          - {op: conv2d, name: a, out: 4, kernel: 99}
          - {assert: "${x > 5 or a.c > 1}"}
          - {assert: "${x > 5 and x < 9}"}
    """
    err = spec_error(text)
    assert [d.location.line for d in err.diagnostics] == [4, 6], err.format()
    assert err.diagnostics[1].message == "assertion failed: x > 5 and x < 9 (x = 1)"
    r = cli("check", write_spec(text, "bad.yaml"))
    assert r.code == 1 and "Traceback" not in r.err
