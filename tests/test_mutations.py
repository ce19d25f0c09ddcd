"""Mutation testing of the front end: a randomly damaged valid spec either still loads or is refused
with a SpecError whose every diagnostic is located (line >= 1). Anything else is a crash."""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import netspec
from netspec.spec.errors import SpecError

from conftest import load_fuzz

# the small specs the command-line fuzzer mutates too (tools/fuzz.py): LeNet, a two-stage ResNet with a
# block and a variant, an Inception module
fuzz = load_fuzz()
BASES = [fuzz.LENET, fuzz.RESNET, fuzz.INCEPTION]

GARBAGE = ["{", "}", "]", "[", ": :", "- - -", "\t", "&a", "*nowhere", "!!python/object:os.system {}",
           "<<: 1", "%YAML 1.1", "@", "`", "'", '"', "? ", "|", ">", "#", "---", "...", "${", "$", "\\x00",
           "\u00e9", "\ufeff", "~", "null", "- {op: relu}", "layers:", "  ", "\n  -", ": 3", "!!binary x"]

NUMBERS = [0, -1, -3, 10**12, 10**30, 2**24 + 1, 1.5, float("inf"), float("nan"), True, 3]
VALUES = [None, "x", "", [], {}, [1, 2], {"a": 1}, "${1/0}", "${nope}", "$", "${i}", "input", "conv1", 0.5,
          "${" + "9" * 30 + "}", "${10**10**10}", "relu", "add", "basic", "conv_bn", False]


# walking the spec tree: the fuzzer's helpers
paths, get, names_in = fuzz.tree_paths, fuzz.tree_get, fuzz.names_in


def fresh(value):
    """A copy of a drawn value: the tree is mutated in place, and a later mutation of a shared []
    or {} would change VALUES itself, so that hypothesis, replaying an example, draws differently
    (FlakyStrategyDefinition)."""
    return copy.deepcopy(value)


def mutate(data, draw):
    all_paths = [p for p, _ in paths(data) if p]
    if not all_paths:
        return {"garbage": 1}
    path = draw(st.sampled_from(all_paths))
    parent, key = get(data, path[:-1]), path[-1]
    kind = draw(st.sampled_from(["delete", "type", "rename", "number", "duplicate", "swap", "add_key"]))
    if kind == "delete":
        del parent[key]
    elif kind == "type":
        parent[key] = fresh(draw(st.sampled_from(VALUES)))
    elif kind == "rename":
        parent[key] = draw(st.sampled_from(names_in(data)))
    elif kind == "number":
        parent[key] = draw(st.sampled_from(NUMBERS))
    elif kind == "duplicate":
        lists = [p for p, v in paths(data) if isinstance(v, list) and v]
        if lists:
            target = get(data, draw(st.sampled_from(lists)))
            i = draw(st.integers(0, len(target) - 1))
            target.insert(i, copy.deepcopy(target[i]))
    elif kind == "swap":
        lists = [p for p, v in paths(data) if isinstance(v, list) and len(v) > 1]
        if lists:
            target = get(data, draw(st.sampled_from(lists)))
            i, j = draw(st.integers(0, len(target) - 1)), draw(st.integers(0, len(target) - 1))
            target[i], target[j] = target[j], target[i]
    else:
        dicts = [p for p, v in paths(data) if isinstance(v, dict)]
        target = get(data, draw(st.sampled_from(dicts)))
        target[draw(st.sampled_from(["in", "repeat", "when", "mode", "first", "layers", "op", "name", "kernal",
                                     "groups", "in_channels", "extends", "imports", "outputs"]))] = \
            fresh(draw(st.sampled_from(VALUES + NUMBERS)))
    return data


def insert_garbage(text, draw):
    pos = draw(st.integers(0, len(text)))
    return text[:pos] + draw(st.sampled_from(GARBAGE)) + text[pos:]


def check_loads_or_located_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            graph = netspec.load(path)
        except SpecError as e:
            assert e.diagnostics, "a SpecError without diagnostics"
            for d in e.diagnostics:
                assert d.location.line >= 1, f"unlocated diagnostic: {d.format()}\n--- spec:\n{text}"
                assert d.message
            return
        # a spec that loads is a well-formed graph that the analysis accepts
        assert graph.outputs
        s = netspec.summary(graph)
        assert len(s.rows) == len(graph.active("eval"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES), st.data())
def test_mutated_specs_load_or_fail_cleanly(base, data):
    tree = yaml.safe_load(base)
    for _ in range(data.draw(st.integers(1, 3))):
        tree = mutate(tree, data.draw)
    text = yaml.safe_dump(tree, sort_keys=False, default_flow_style=None, allow_unicode=True)
    if data.draw(st.booleans()):
        text = insert_garbage(text, data.draw)
    check_loads_or_located_error(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES), st.data())
def test_text_mutations_load_or_fail_cleanly(base, data):
    text = base
    for _ in range(data.draw(st.integers(1, 3))):
        choice = data.draw(st.sampled_from(["garbage", "delete_line", "duplicate_line", "delete_chars"]))
        lines = text.splitlines(keepends=True)
        if choice == "garbage":
            text = insert_garbage(text, data.draw)
        elif choice == "delete_line" and lines:
            i = data.draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:i] + lines[i + 1:])
        elif choice == "duplicate_line" and lines:
            i = data.draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:i + 1] + lines[i:])
        elif text:
            i = data.draw(st.integers(0, len(text) - 1))
            n = data.draw(st.integers(1, 5))
            text = text[:i] + text[i + n:]
    check_loads_or_located_error(text)


def test_the_bases_are_valid():
    for base in BASES:
        check_loads_or_located_error(base)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "spec.yaml"
            path.write_text(base)
            assert len(netspec.load(path)) > 5
