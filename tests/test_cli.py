"""The `netspec` command, run in-process: check, summary, expand, schema, ops, and usage errors."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import netspec
from conftest import BASIC_BLOCK

SPEC = """
    name: net
    params:
      num_classes: 10
      width: {type: float, default: 1.0}
      use_bias: true
      depth: 2
    input: {shape: [3, 16, 16]}
    variants:
      wide: {params: {width: 2.0}}
      tiny: {params: {depth: 1, num_classes: 2}}
""" + BASIC_BLOCK + """    layers:
      - {op: conv2d, name: stem, out: "${int(8 * width)}", kernel: 3, padding: 1, bias: $use_bias}
      - {op: basic, name: layer1, repeat: $depth, c: "${int(8 * width)}"}
      - {op: basic, name: layer2, repeat: $depth, c: "${int(16 * width)}", first: {stride: 2}}
      - {op: dropout, name: drop, p: 0.1, mode: train}
      - {op: global_avgpool, name: pool}
      - {op: flatten, name: flat}
      - {op: linear, name: fc, out: $num_classes}
"""


@pytest.fixture
def spec(write_spec):
    return write_spec(SPEC)


def no_traceback(r):
    assert "Traceback" not in r.out + r.err
    assert "internal error" not in r.err


# --- check -----------------------------------------------------------------------------------------

def test_check_ok_with_all_variants(spec, cli):
    r = cli("check", "spec.yaml")
    assert r.code == 0, r.err
    assert "ok" in r.out and "spec.yaml" in r.out
    assert "base" in r.out and "wide" in r.out and "tiny" in r.out


def test_check_fails_when_one_variant_is_broken(write_spec, cli):
    write_spec(SPEC.replace("tiny: {params: {depth: 1, num_classes: 2}}", "tiny: {params: {depth: 1, num_classes: 0}}"))
    r = cli("check", "spec.yaml")
    assert r.code == 1
    assert "tiny" in r.err and ": error: " in r.err
    no_traceback(r)


def test_check_several_specs(spec, write_spec, cli):
    write_spec("input: {shape: [3, 8, 8]}\nlayers: [{op: reluu}]\n", "bad.yaml")
    r = cli("check", "spec.yaml", "bad.yaml")
    assert r.code == 1
    assert "ok" in r.out and "spec.yaml" in r.out
    assert "bad.yaml:2:" in r.err and "1 of 2" in r.err
    r = cli("check", "spec.yaml", "spec.yaml")
    assert r.code == 0 and "2 of 2" in r.out


def test_check_with_set(spec, cli):
    assert cli("check", "spec.yaml", "--set", "num_classes=5").code == 0
    r = cli("check", "spec.yaml", "--set", "num_classes=0")
    assert r.code == 1
    no_traceback(r)


# --- summary ---------------------------------------------------------------------------------------

def test_summary_table(spec, cli):
    r = cli("summary", "spec.yaml")
    assert r.code == 0, r.err
    s = netspec.summary(netspec.load("spec.yaml"))
    for name in ["stem", "layer1.0.conv1", "layer2.0.downsample.0", "fc"]:
        assert name in r.out
    assert "drop" not in r.out.split()  # eval mode by default
    assert f"{s.params:,}" in r.out and f"{s.macs:,}" in r.out


def test_summary_train_mode(spec, cli):
    r = cli("summary", "spec.yaml", "--mode", "train")
    assert r.code == 0 and "drop" in r.out.split()


def test_summary_depth(spec, cli):
    r = cli("summary", "spec.yaml", "--depth", "1")
    assert r.code == 0
    first_column = [line.split()[0] for line in r.out.splitlines() if line.strip()]
    assert "layer1" in first_column and "layer2" in first_column
    assert not any(c.startswith("layer1.") for c in first_column)
    data = json.loads(cli("summary", "spec.yaml", "--depth", "1", "--json").out)
    full = json.loads(cli("summary", "spec.yaml", "--json").out)
    by_name = {n["name"]: n for n in data["nodes"]}
    assert by_name["layer2"]["params"] == sum(n["params"] for n in full["nodes"] if n["name"].startswith("layer2."))
    assert by_name["layer2"]["macs"] == sum(n["macs"] for n in full["nodes"] if n["name"].startswith("layer2."))
    assert data["totals"] == full["totals"]


def test_summary_json(spec, cli):
    r = cli("summary", "spec.yaml", "--json")
    assert r.code == 0
    data = json.loads(r.out)
    table = cli("summary", "spec.yaml").out
    assert f"{data['totals']['params']:,}" in table
    assert f"{data['totals']['macs']:,}" in table
    assert data["totals"]["flops"] == 2 * data["totals"]["macs"]
    assert data["outputs"] == {"fc": [1, 10]}
    assert data["nodes"][0]["name"] == "stem"


def test_summary_explain(spec, cli):
    r = cli("summary", "spec.yaml", "--explain")
    assert r.code == 0
    # the stem: 8 filters of 3×3×3 plus bias = 224 parameters; MACs = 8·16·16 outputs × 3·3·3
    assert "8·3·3·3 + 8" in r.out and "224" in r.out
    assert f"{8 * 16 * 16 * 27:,}" in r.out


def test_summary_set_and_batch(spec, cli):
    base = json.loads(cli("summary", "spec.yaml", "--json").out)
    r = cli("summary", "spec.yaml", "--json", "--set", "num_classes=3", "--set", "width=0.5",
            "--set", "use_bias=false", "--batch", "8")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["outputs"] == {"fc": [8, 3]}
    assert data["batch"] == 8
    assert data["params_used"]["width"] == 0.5 and data["params_used"]["use_bias"] is False
    stem = next(n for n in data["nodes"] if n["name"] == "stem")
    assert stem["params"] == 4 * 3 * 3 * 3  # 4 filters, no bias
    assert stem["output"] == [8, 4, 16, 16]
    b8 = json.loads(cli("summary", "spec.yaml", "--json", "--batch", "8").out)
    assert b8["totals"]["macs"] == 8 * base["totals"]["macs"]
    assert b8["totals"]["params"] == base["totals"]["params"]


def test_summary_variant(spec, cli):
    data = json.loads(cli("summary", "spec.yaml", "--json", "--variant", "tiny").out)
    assert data["variant"] == "tiny" and data["outputs"] == {"fc": [1, 2]}
    r = cli("summary", "spec.yaml", "--variant", "tinny")
    assert r.code == 1 and "did you mean 'tiny'" in r.err
    no_traceback(r)


@pytest.mark.parametrize("setting", ["num_classes=ten", "num_classes=2.5", "use_bias=3", "width=[1]",
                                     "nope=1", "depth=true"])
def test_set_is_typed(spec, cli, setting):
    r = cli("summary", "spec.yaml", "--set", setting)
    assert r.code == 1, r
    assert setting.split("=")[0] in r.err
    no_traceback(r)


# --- expand ----------------------------------------------------------------------------------------

def same_graph(a, b):
    assert list(a.inputs.items()) == list(b.inputs.items())
    assert [n.name for n in a] == [n.name for n in b]
    for x, y in zip(a, b):
        assert (x.op, x.inputs, x.type, x.mode) == (y.op, y.inputs, y.type, y.mode), x.name
        assert x.attrs == y.attrs, x.name
    assert a.outputs == b.outputs


@pytest.mark.parametrize("args", [[], ["--variant", "wide"], ["--set", "depth=3", "--set", "use_bias=false"]])
def test_expand_loads_back_to_the_same_graph(spec, cli, workdir, args):
    r = cli("expand", "spec.yaml", *args)
    assert r.code == 0, r.err
    (workdir / "flat.yaml").write_text(r.out)
    flat = yaml.safe_load(r.out)
    assert "blocks" not in flat and "${" not in r.out and "repeat" not in r.out
    original = netspec.load("spec.yaml", variant=args[1] if args[:1] == ["--variant"] else None,
                            params={"depth": 3, "use_bias": False} if "--set" in args else None)
    same_graph(original, netspec.load("flat.yaml"))
    assert "layer2.0.downsample.0" in r.out


def test_expand_to_a_file(spec, cli, workdir):
    r = cli("expand", "spec.yaml", "-o", "out.yaml")
    assert r.code == 0 and r.out == ""
    same_graph(netspec.load("spec.yaml"), netspec.load("out.yaml"))
    assert sorted(p.name for p in workdir.iterdir()) == ["out.yaml", "spec.yaml"]  # no temporary left


def test_failing_expand_does_not_overwrite_the_output(write_spec, cli, workdir):
    write_spec("input: {shape: [3, 8, 8]}\nlayers: [{op: conv2d, out: 0, kernel: 1}]\n", "bad.yaml")
    (workdir / "out.yaml").write_text("KEEP\n")
    r = cli("expand", "bad.yaml", "-o", "out.yaml")
    assert r.code == 1
    assert (workdir / "out.yaml").read_text() == "KEEP\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["bad.yaml", "out.yaml"]
    no_traceback(r)


def test_expand_to_a_directory_is_a_usage_error(spec, cli, workdir):
    (workdir / "outdir").mkdir()
    r = cli("expand", "spec.yaml", "-o", "outdir")
    assert r.code == 2
    no_traceback(r)


def test_expand_to_a_missing_directory(spec, cli):
    r = cli("expand", "spec.yaml", "-o", "no/such/dir/out.yaml")
    assert r.code != 0
    no_traceback(r)


# --- schema ----------------------------------------------------------------------------------------

def test_schema_is_json_and_validates_a_real_spec(cli):
    r = cli("schema")
    assert r.code == 0, r.err
    schema = json.loads(r.out)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    from conftest import dedent
    jsonschema.validate(yaml.safe_load(dedent(SPEC)), schema)
    bad = yaml.safe_load(dedent(SPEC))
    bad["layerz"] = []
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


NEW_SYNTAX = """
params: {n: 2, g: 1}
input: {shape: [4, 8, 8]}
blocks:
  b:
    params: {g: {type: int, default: "${spec.g}"}}
    layers:
      - {assert: "${g >= 1}", message: "g is ${g}"}
      - {op: conv2d, name: conv, out: 4, kernel: 1, groups: $g}
layers:
  - {assert: "${n <= 24}"}
  - {op: b, name: "unit${i + 1}", repeat: $n}
  - {op: relu, name: r, when: "${n > 5}"}
  - {op: concat, in: [unit1, r if present, r or unit2]}
"""


def test_schema_knows_computed_names_asserts_and_optional_inputs(cli, write_spec):
    """The schema accepts what the loader accepts (issue #29's syntax) and refuses a malformed assert."""
    schema = json.loads(cli("schema").out)
    data = yaml.safe_load(NEW_SYNTAX)
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)) == []
    assert cli("check", write_spec(NEW_SYNTAX)).code == 0
    for bad in ({"assert": True, "op": "relu"}, {"op": "concat", "in": ["a if"]}):
        data["layers"].append(bad)
        assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)), bad
        data["layers"].pop()


def test_schema_to_a_file(cli, workdir):
    r = cli("schema", "-o", "netspec.schema.json")
    assert r.code == 0, r.err
    assert json.loads((workdir / "netspec.schema.json").read_text()) == json.loads(cli("schema").out)


# --- ops and usage errors --------------------------------------------------------------------------

def test_ops_lists_the_registry(cli):
    r = cli("ops")
    assert r.code == 0
    for name in ["conv2d", "conv_transpose2d", "maxpool2d", "batchnorm2d", "linear", "concat", "add"]:
        assert name in r.out


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["summary"],
    ["check"],
    ["summary", "spec.yaml", "--batch", "0"],
    ["summary", "spec.yaml", "--batch", "x"],
    ["summary", "spec.yaml", "--depth", "-1"],
    ["summary", "spec.yaml", "--mode", "training"],
    ["summary", "spec.yaml", "--json", "--explain"],
    ["summary", "spec.yaml", "--set", "novalue"],
    ["summary", "spec.yaml", "--set", "=3"],
    ["summary", "spec.yaml", "--bogus"],
])
def test_usage_errors_exit_2(spec, cli, args):
    r = cli(*args)
    assert r.code == 2, r
    no_traceback(r)


def test_spec_errors_exit_1_and_count_them(write_spec, cli):
    write_spec("input: {shape: [3, 8, 8]}\nlayers:\n  - {op: reluu}\n  - {op: conv2d, out: 0, kernel: 1}\n",
               "bad.yaml")
    r = cli("summary", "bad.yaml")
    assert r.code == 1
    assert r.err.count(": error: ") == 2 and "2 errors" in r.err
    assert r.out == ""


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "specs").rglob("*.yaml")),
                         ids=lambda p: p.name)
def test_schema_accepts_every_zoo_file(cli, path):
    schema = json.loads(cli("schema").out)
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(yaml.safe_load(path.read_text()))]
    assert errors == []


@pytest.mark.parametrize("text,value", [("010", 10), ("1e-3", 0.001), ("0.5", 0.5), ("true", True), ("x", "x"),
                                        ("[1, 2]", [1, 2]), ("-3", -3)])
def test_set_values_are_typed_as_people_write_them(text, value):
    from netspec.cli import parse_sets
    assert parse_sets([f"k={text}"]) == {"k": value}


def test_a_bad_set_value_does_not_echo_through_dependent_defaults(cli, write_spec):
    write_spec("""
        params: {width: 1.0, c: {type: int, default: "${int(8 * width)}"}}
        input: {shape: [3, 8, 8]}
        layers: [{op: conv2d, out: $c, kernel: 1}]
        """)
    r = cli("check", "spec.yaml", "--set", "width=abc")
    assert r.code == 1 and "parameter 'width'" in r.err and "parameter 'c'" not in r.err


def test_expand_of_computed_names_and_optional_inputs_loads_back(cli, write_spec, workdir):
    write_spec(NEW_SYNTAX)
    r = cli("expand", "spec.yaml")
    assert r.code == 0, r.err
    assert "${" not in r.out and "assert" not in r.out and " if present" not in r.out
    (workdir / "flat.yaml").write_text(r.out)
    same_graph(netspec.load("spec.yaml"), netspec.load("flat.yaml"))
    # r is absent: left out of one list, unit2 standing in for it in the other; the concat is the third entry
    assert netspec.load("flat.yaml").node("2").inputs == ("unit1.conv", "unit2.conv")
