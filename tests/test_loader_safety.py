"""Hostile or broken input: the loader refuses it quickly and cleanly with a SpecError, never by
running code, eating memory or time, or crashing."""
from __future__ import annotations

import os
import time

import pytest

import netspec
from netspec.spec.errors import SpecError

FAST = 5.0  # seconds; generous, the point is "not minutes or hours"


def load_error(path, **kw) -> SpecError:
    with pytest.raises(SpecError) as info:
        netspec.load(path, **kw)
    err = info.value
    assert err.diagnostics
    for d in err.diagnostics:
        assert d.location.line >= 1, d.format()
    return err


def timed_error(path, **kw) -> tuple[SpecError, float]:
    start = time.perf_counter()
    err = load_error(path, **kw)
    return err, time.perf_counter() - start


# --- tags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tagged", [
    "!!python/object/apply:os.system ['touch PWNED']",
    "!!python/object:argparse.Namespace {x: 1}",
    "!!python/name:os.system",
    "!!python/object/new:os.system ['touch PWNED']",
    "!!python/tuple [1, 2]",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!custom 3",
    "!!omap [a: 1]",
])
def test_object_tags_are_refused(write_spec, workdir, tagged):
    path = write_spec(f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - op: relu
            name: {tagged}
    """)
    err = load_error(path)
    assert not (workdir / "PWNED").exists()
    assert any(d.location.line == 4 for d in err.diagnostics), err.format()
    assert "tag" in err.format()


def test_tag_on_a_top_level_collection_is_refused(write_spec, workdir):
    path = write_spec("""
        --- !!python/object/apply:os.system
        args: ['touch PWNED']
    """)
    load_error(path)
    assert not (workdir / "PWNED").exists()


def test_plain_aliases_and_merge_keys_still_work(load_spec):
    g = load_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - &c {op: conv2d, name: a, out: 4, kernel: 3, padding: 1}
          - {<<: *c, name: b, out: 8}
    """)
    assert g.type_of("b").c == 8 and g.node("b").attrs.kernel == (3, 3)
    assert g.node("b").inputs == ("a",)


# --- alias bombs, size limits ----------------------------------------------------------------------

def test_billion_laughs_is_refused_quickly(write_spec):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for k in range(1, 10):
        prev = f"*a{k - 1}"
        lines.append(f"a{k}: &a{k} [{', '.join([prev] * 10)}]")
    lines += ["input: {shape: [3, 8, 8]}", "layers: [{op: relu}]"]
    path = write_spec("\n".join(lines) + "\n")
    err, seconds = timed_error(path)
    assert seconds < FAST
    assert "values" in err.format() or "alias" in err.format()


def test_alias_bomb_through_layers_is_refused(write_spec):
    lines = ["x0: &x0 [{op: relu}, {op: relu}, {op: relu}, {op: relu}]"]
    for k in range(1, 12):
        lines.append(f"x{k}: &x{k} [*x{k - 1}, *x{k - 1}, *x{k - 1}, *x{k - 1}]")
    lines += ["input: {shape: [3, 8, 8]}", "layers: *x11"]
    path = write_spec("\n".join(lines) + "\n")
    _, seconds = timed_error(path)
    assert seconds < FAST


def test_file_over_two_mib_is_refused(write_spec):
    filler = "# " + "x" * 1000 + "\n"
    path = write_spec("input: {shape: [3, 8, 8]}\nlayers: [{op: relu}]\n" + filler * 2200)
    err = load_error(path)
    assert "bytes" in err.format()


@pytest.mark.parametrize("attr", ["out: 1000000000000", "out: ${10**12}", "kernel: 1000000000",
                                  "stride: 100000000000", "padding: 99999999999"])
def test_absurd_attribute_sizes_are_refused(write_spec, attr):
    path = write_spec(f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: conv2d, out: 4, kernel: 1, {attr}}}
    """.replace("out: 4, kernel: 1, out:", "kernel: 1, out:").replace(
        "kernel: 1, kernel:", "kernel:").replace("out: 4, kernel: 1, kernel", "out: 4, kernel"))
    err, seconds = timed_error(path)
    assert seconds < FAST
    assert any(d.location.line == 3 for d in err.diagnostics), err.format()


@pytest.mark.parametrize("shape", ["[3, 1000000000, 1000000000]", "[1000000000000, 8, 8]", "[3, ${10**9}, 8]"])
def test_absurd_input_sizes_are_refused(write_spec, shape):
    path = write_spec(f"""
        input: {{shape: {shape}}}
        layers: [{{op: relu}}]
    """)
    err = load_error(path)
    assert err.diagnostics[0].location.line == 1


def test_size_limit_is_two_to_the_24(write_spec):
    path = write_spec(f"""
        input: {{shape: [3, 1, 1]}}
        layers:
          - {{op: conv2d, name: ok, out: {2**24}, kernel: 1}}
    """)
    assert netspec.load(path).type_of("ok").c == 2**24
    write_spec(f"""
        input: {{shape: [3, 1, 1]}}
        layers:
          - {{op: conv2d, name: big, out: {2**24 + 1}, kernel: 1}}
    """)
    load_error(path)


def test_absurd_feature_count_from_flatten_is_refused(write_spec):
    # each dimension is within the limit, but flatten makes 2^30 features (fields.py: no feature count
    # beyond MAX_SIZE)
    path = write_spec("""
        input: {shape: [1024, 1024, 1024]}
        layers:
          - {op: flatten}
          - {op: linear, out: 1000}
    """)
    load_error(path)


def test_absurd_upsampling_is_refused(write_spec):
    path = write_spec("""
        input: {shape: [3, 8192, 8192]}
        layers:
          - {op: conv_transpose2d, out: 3, kernel: 4096, stride: 4096}  # 2^25 × 2^25 outputs
    """)
    load_error(path)


# --- runaway expansion -----------------------------------------------------------------------------

@pytest.mark.parametrize("count", ["1000000000", "${10**9}", "10001", "-1", "2.5"])
def test_runaway_or_invalid_repeat_is_refused(write_spec, count):
    text = f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: relu, repeat: "{count}"}}
    """ if count.startswith("$") else f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: relu, repeat: {count}}}
    """
    err, seconds = timed_error(write_spec(text))
    assert seconds < FAST
    assert [d.location.line for d in err.diagnostics] == [3]
    assert "repeat" in err.format() or "integer" in err.format()


def test_repeat_at_the_limit_is_accepted(write_spec):
    g = netspec.load(write_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - {op: relu, name: r, repeat: 10000}
    """))
    assert len(g) == 10000 and g.outputs == ["r.9999"]


def test_nested_repeats_are_refused_quickly(write_spec):
    path = write_spec("""
        input: {shape: [3, 8, 8]}
        layers:
          - name: outer
            repeat: 10000
            layers:
              - name: inner
                repeat: 10000
                layers: [{op: relu}]
    """)
    err, seconds = timed_error(path)
    # refused once 50,000 nodes are built (README's limit); that takes a few seconds, not the hours that
    # 10^8 nodes would
    assert seconds < 3 * FAST
    assert "nodes" in err.format()


def test_exponential_blocks_are_refused_quickly(write_spec):
    blocks = ["  b0:\n    layers: [{op: relu}, {op: relu}]"]
    for k in range(1, 40):
        blocks.append(f"  b{k}:\n    layers: [{{op: b{k - 1}}}, {{op: b{k - 1}}}]")
    text = "input: {shape: [3, 8, 8]}\nblocks:\n" + "\n".join(blocks) + "\nlayers: [{op: b39}]\n"
    _, seconds = timed_error(write_spec(text))
    assert seconds < FAST


def test_recursive_block_is_refused(write_spec):
    path = write_spec("""
        input: {shape: [3, 8, 8]}
        blocks:
          a:
            layers: [{op: b}]
          b:
            layers: [{op: a}]
        layers: [{op: a}]
    """)
    err, seconds = timed_error(path)
    assert seconds < FAST
    assert "recursive" in err.format() or "itself" in err.format()


# --- expressions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("expr", ["10**10**10", "2**64**2", "9**9**9**9", "(10**15)*(10**15)", "'a' * 10**9",
                                  "[0] * 10**9", "1" + " + 1" * 400, "(" * 300 + "1" + ")" * 300,
                                  "-" * 499 + "1", "max(" * 100 + "1" + ")" * 100])
def test_huge_expressions_are_refused(write_spec, expr):
    path = write_spec(f"""
        input: {{shape: [3, 8, 8]}}
        layers:
          - {{op: conv2d, out: "${{{expr}}}", kernel: 1}}
    """)
    err, seconds = timed_error(path)
    assert seconds < FAST
    assert [d.location.line for d in err.diagnostics] == [3], err.format()


# --- broken files ----------------------------------------------------------------------------------

def test_deeply_nested_yaml_is_refused_cleanly(write_spec):
    path = write_spec("input: {shape: [3, 8, 8]}\nlayers: " + "[" * 5000 + "]" * 5000 + "\n")
    err, seconds = timed_error(path)
    assert seconds < FAST
    assert "nested" in err.format() or "deep" in err.format()


def test_moderately_nested_yaml_is_refused(write_spec):
    path = write_spec("input: {shape: [3, 8, 8]}\nlayers: [{op: relu, x: " + "{a: " * 100 + "1" + "}" * 100 + "}]\n")
    err = load_error(path)
    assert "deep" in err.format()


def test_non_utf8_file(workdir):
    path = workdir / "latin1.yaml"
    path.write_bytes("name: caf\xe9\ninput: {shape: [3, 8, 8]}\nlayers: [{op: relu}]\n".encode("latin-1"))
    err = load_error(path)
    assert "UTF-8" in err.format()
    assert err.diagnostics[0].location.file == "latin1.yaml"


def test_binary_garbage(workdir):
    path = workdir / "garbage.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    load_error(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "null\n", "~\n"])
def test_empty_file(workdir, text):
    path = workdir / "empty.yaml"
    path.write_text(text)
    err = load_error(path)
    assert err.diagnostics[0].location.file == "empty.yaml"


@pytest.mark.parametrize("text", ["42\n", "- relu\n", "just words\n", "'layers'\n"])
def test_not_a_mapping(workdir, text):
    path = workdir / "scalar.yaml"
    path.write_text(text)
    load_error(path)


def test_missing_file(workdir):
    err = load_error(workdir / "nope.yaml")
    assert "nope.yaml" in err.format()


def test_directory(workdir):
    (workdir / "adir.yaml").mkdir()
    err = load_error(workdir / "adir.yaml")
    assert "adir.yaml" in err.format()


def test_unreadable_file(workdir):
    if os.geteuid() == 0:  # root reads everything: use a dangling symlink instead
        (workdir / "dangling.yaml").symlink_to(workdir / "gone.yaml")
        load_error(workdir / "dangling.yaml")
    else:
        path = workdir / "secret.yaml"
        path.write_text("input: {shape: [3, 8, 8]}\nlayers: [{op: relu}]\n")
        path.chmod(0)
        load_error(path)


@pytest.mark.parametrize("text", [
    "input: {shape: [3, 8, 8]\nlayers: [\n",
    "input: {shape: [3, 8, 8]}\n\tlayers: []\n",
    "a: b: c\n",
    "input: {shape: [3, 8, 8]}\nlayers: [{op: relu}]\nlayers: [{op: tanh}]\n",
    "input: {shape: [3, 8, 8]}\nlayers: [{op: relu, *undefined}]\n",
    "input: {shape: [3, 8, 8]}\nlayers: [{op: relu}]\n---\nsecond: doc\n",
    "{[1, 2]: x}\n",
    "input: {shape: [3, 8, 8]}\nlayers: [{op: relu, 1.5: x}]\n",
])
def test_invalid_yaml_is_a_located_spec_error(workdir, text):
    path = workdir / "bad.yaml"
    path.write_text(text)
    load_error(path)


def test_broken_files_on_the_cli(workdir, cli):
    (workdir / "d.yaml").mkdir()
    (workdir / "e.yaml").write_text("")
    (workdir / "b.yaml").write_bytes(b"\xff\xfe\x00garbage")
    for name in ["d.yaml", "e.yaml", "b.yaml", "missing.yaml"]:
        r = cli("check", name)
        assert r.code == 1, (name, r)
        assert "Traceback" not in r.err and "internal error" not in r.err, r.err
        assert r.err.startswith(f"{name}:"), r.err
