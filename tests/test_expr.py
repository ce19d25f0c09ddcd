"""Safe expressions: a property test against an independent evaluator, fuzzing, and the constructs
that must be refused."""
from __future__ import annotations

import math
import operator

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from netspec.spec.expr import (MAX_LIST, ExprError, Namespace, ShapeRef, UnknownName, evaluate, evaluate_text,
                                interpolate)

ENV = {"a": 7, "b": 3, "input": ShapeRef((16, 32, 24))}
BIG = 10**12  # beyond this, the evaluator may refuse ("their sizes are bounded")

# --- a random expression tree, its text, and an independent evaluation -----------------------------

leaf = st.one_of(st.integers(0, 20).map(lambda n: ("num", n)), st.sampled_from(["a", "b"]).map(lambda v: ("var", v)))


def _extend(children):
    return st.one_of(
        st.tuples(st.just("bin"), st.sampled_from(["+", "-", "*", "/", "//", "%"]), children, children),
        st.tuples(st.just("pow"), children, st.integers(0, 3)),
        st.tuples(st.just("neg"), children),
        st.tuples(st.just("call"), st.sampled_from(["min", "max"]), st.lists(children, min_size=2, max_size=3)),
        st.tuples(st.just("call"), st.sampled_from(["abs", "floor", "ceil"]), st.lists(children, min_size=1,
                                                                                      max_size=1)),
        st.tuples(st.just("if"), st.sampled_from(["<", "<=", "==", "!=", ">", ">="]), children, children,
                  children, children),
    )


trees = st.recursive(leaf, _extend, max_leaves=12)

OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
       "//": operator.floordiv, "%": operator.mod}
CMP = {"<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne, ">": operator.gt,
       ">=": operator.ge}
FUNCS = {"min": min, "max": max, "abs": abs, "floor": lambda x: int(math.floor(x)),
         "ceil": lambda x: int(math.ceil(x))}


def text_of(t) -> str:
    kind = t[0]
    if kind == "num":
        return str(t[1])
    if kind == "var":
        return t[1]
    if kind == "bin":
        return f"({text_of(t[2])} {t[1]} {text_of(t[3])})"
    if kind == "pow":
        return f"({text_of(t[1])} ** {t[2]})"
    if kind == "neg":
        return f"(-{text_of(t[1])})"
    if kind == "call":
        return f"{t[1]}({', '.join(text_of(c) for c in t[2])})"
    _, cmp, left, right, yes, no = t
    return f"({text_of(yes)} if {text_of(left)} {cmp} {text_of(right)} else {text_of(no)})"


class TooBig(Exception):
    pass


def value_of(t):
    """Evaluate the tree directly (not through its text). Raises ZeroDivisionError, or TooBig when an
    intermediate value leaves the range where the expression language must give an exact answer."""
    kind = t[0]
    if kind == "num":
        v = t[1]
    elif kind == "var":
        v = ENV[t[1]]
    elif kind == "bin":
        v = OPS[t[1]](value_of(t[2]), value_of(t[3]))
    elif kind == "pow":
        v = value_of(t[1]) ** t[2]
    elif kind == "neg":
        v = -value_of(t[1])
    elif kind == "call":
        v = FUNCS[t[1]](*[value_of(c) for c in t[2]])
    else:
        _, cmp, left, right, yes, no = t
        v = value_of(yes) if CMP[cmp](value_of(left), value_of(right)) else value_of(no)
    if isinstance(v, float) and not math.isfinite(v) or abs(v) > BIG:
        raise TooBig
    return v


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_arithmetic_matches_an_independent_evaluator(tree):
    text = text_of(tree)
    try:
        expected = value_of(tree)
    except ZeroDivisionError:
        with pytest.raises(ExprError):
            evaluate_text(text, ENV)
        return
    except TooBig:
        try:
            got = evaluate_text(text, ENV)
        except ExprError:
            return
        # if it does answer, the answer must still be right
        expected = eval(compile(text, "<expr>", "eval"), {"__builtins__": {}}, {**ENV, **FUNCS})
        assert got == expected
        return
    got = evaluate_text(text, ENV)
    assert got == expected, text
    assert type(got) is type(expected), text
    # and the same through the spec-value forms
    assert evaluate("${" + text + "}", ENV) == expected


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789+-*/%()<>=! abcdfiorntwxlu_.[],'\"~&|^@:$#{}\\", max_size=40))
def test_arbitrary_text_raises_only_expr_error(text):
    try:
        evaluate_text(text, ENV)
    except ExprError:
        pass
    try:
        evaluate("$" + text, ENV)
        evaluate("${" + text + "}", ENV)
    except ExprError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "input", "input.c", "input.h", "input.shape", "[1, 2]", "1.5", "'s'",
                                 "True", "-", "+", "*", "**", "//", "%", "(", ")", "[", "]", "0", "not", "and",
                                 "or", "if", "else", "==", "<", "min(", "max(", "round(", "sqrt(",
                                 "make_divisible(", "int(", "float(", ",", "[0]", ".c", ".w"]),
                max_size=15))
def test_token_soup_raises_only_expr_error(tokens):
    try:
        evaluate_text(" ".join(tokens), ENV)
    except ExprError:
        pass


# --- functions -------------------------------------------------------------------------------------

def torchvision_make_divisible(v, divisor=8, min_value=None):
    """torchvision.models._utils._make_divisible, copied from its documentation."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


@given(st.floats(1, 4096, allow_nan=False), st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_make_divisible_matches_torchvision(v, divisor):
    env = {"v": v, "d": divisor}
    assert evaluate_text("make_divisible(v, d)", env) == torchvision_make_divisible(v, divisor)
    if divisor == 8:
        assert evaluate_text("make_divisible(v)", env) == torchvision_make_divisible(v)


@given(st.integers(-10**6, 10**6))
def test_round_halves_away_from_zero(n):
    half = n + 0.5 if n >= 0 else n - 0.5
    expected = n + 1 if n >= 0 else n - 1
    assert evaluate_text("round(x)", {"x": half}) == expected


@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_floor_ceil_round_int(x):
    env = {"x": x}
    assert evaluate_text("floor(x)", env) == math.floor(x)
    assert evaluate_text("ceil(x)", env) == math.ceil(x)
    assert evaluate_text("int(x)", env) == int(x)
    r = evaluate_text("round(x)", env)
    assert abs(r - x) <= 0.5 and (abs(r - x) < 0.5 or abs(r) > abs(x))


def test_shapes_parameters_lists_and_conditionals():
    assert evaluate_text("input.c * 2 + input.h - input.w", ENV) == 16 * 2 + 32 - 24
    assert evaluate_text("input.shape", ENV) == [16, 32, 24]
    assert evaluate_text("input.shape[1] // 4", ENV) == 8
    assert evaluate_text("input", ENV) == [16, 32, 24]
    assert evaluate_text("[a, b, a * b][2]", ENV) == 21
    assert evaluate_text("'wide' if a > b and not b == 0 else 'narrow'", ENV) == "wide"
    assert evaluate_text("1 < b < a", ENV) is True
    assert evaluate_text("sqrt(16)", ENV) == 4.0
    assert evaluate_text("float(a) / 2", ENV) == 3.5
    assert evaluate_text("'res' + 'net'", ENV) == "resnet"
    assert evaluate("$a", ENV) == 7
    assert evaluate(["$a", {"k": "${b * 2}"}, 5, "plain"], ENV) == [7, {"k": 6}, 5, "plain"]


def test_a_shape_without_a_dimension():
    with pytest.raises(ExprError):
        evaluate_text("flat.h", {"flat": ShapeRef((512,))})


@pytest.mark.parametrize("value", ["$", "$1", "$a b", "${a", "$ a", "${}", "${ }", "$a.c", "${1) + (2}", "${a) if (b}"])
def test_malformed_expression_forms(value):
    with pytest.raises(ExprError):
        evaluate(value, ENV)


# --- forbidden constructs --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "__import__('os')",
    "__import__('os').system('true')",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('x = 1')",
    "globals()",
    "getattr(input, 'c')",
    "input.__class__",
    "input.shape.__class__",
    "(1).real",
    "a.bit_length()",
    "'abc'.upper()",
    "[1, 2].pop()",
    "().__class__.__bases__",
    "lambda: 1",
    "(lambda x: x)(1)",
    "[x async for x in [1, 2]]",
    "[x for x.c in [1, 2]]",
    "{x for x in [1]}",
    "{x: 1 for x in [1]}",
    "(x for x in [1])",
    "{1: 2}",
    "{1, 2}",
    "f'{a}'",
    "f'{__import__(\"os\")}'",
    "min(1, 2, key=abs)",
    "make_divisible(v=10)",
    "max(*[1, 2])",
    "(y := 3)",
    "[1, 2, 3][0:2]",
    "a @ b",
    "a << 2",
    "a & b",
    "~a",
    "a in [1]",
    "a is b",
    "import os",
    "x = 1",
    "yield 1",
    "await a",
    "...",
    "b'bytes'",
    "1j",
    "None",
    "print(1)",
    "__builtins__",
    "nope + 1",
])
def test_forbidden_constructs(text):
    with pytest.raises(ExprError):
        evaluate_text(text, ENV)


def test_forbidden_constructs_never_run(tmp_path):
    marker = tmp_path / "ran"
    for text in [f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')"]:
        with pytest.raises(ExprError):
            evaluate_text(text, ENV)
    assert not marker.exists()


@pytest.mark.parametrize("text", ["10**10**10", "2**1000", "10**20", "9**64 * 9**64", "1e308 * 10",
                                  "float('inf')", "float('nan')", "1 / 0", "1 // 0", "1 % 0", "sqrt(-1)",
                                  "'x' * 1000", "x" * 600, "(" * 245 + "1" + ")" * 245])
def test_huge_or_invalid_values_raise_expr_error(text):
    with pytest.raises(ExprError):
        evaluate_text(text, ENV)


# --- comprehensions, list functions, templates (issue #29) ---------------------------------------

small = st.integers(-50, 50)


@settings(max_examples=300, deadline=None)
@given(st.lists(small, max_size=12), small, st.sampled_from(["+", "-", "*", "//"]), st.sampled_from(["<", ">=", "!="]),
       small)
def test_comprehensions_match_python(xs, k, op, cmp, bound):
    """`[x OP k for x in xs if x CMP bound]` gives what Python's own comprehension gives."""
    if op == "//" and k == 0:
        k = 1
    env = {"xs": xs, "k": k, "bound": bound}
    text = f"[x {op} k for x in xs if x {cmp} bound]"
    expected = [OPS[op](x, k) for x in xs if CMP[cmp](x, bound)]
    assert evaluate_text(text, env) == expected
    assert evaluate_text(f"[[x, y] for x in xs for y in range(2) if x {cmp} bound]", env) == \
        [[x, y] for x in xs for y in range(2) if CMP[cmp](x, bound)]
    assert evaluate_text("sum(xs)", env) == sum(xs) and evaluate_text("len(xs)", env) == len(xs)
    if xs:
        assert evaluate_text("max(xs)", env) == max(xs) and evaluate_text("min(xs)", env) == min(xs)


def test_the_issue_comprehension():
    env = {"depths": [32, 16, 24, 40, 80, 112, 192, 320], "alpha": 1.4}
    assert evaluate("${[make_divisible(d * alpha, 8) for d in depths]}", env) == \
        [torchvision_make_divisible(d * 1.4, 8) for d in env["depths"]]


def test_comprehension_names_are_local_and_unpack_pairs():
    env = {"x": 100, "pairs": [[1, 2], [3, 4]]}
    assert evaluate_text("[a * b for a, b in pairs]", env) == [2, 12]
    assert evaluate_text("[x for x in [1, 2]][1] + x", env) == 102
    assert evaluate_text("[c for c in input]", ENV) == [16, 32, 24]  # a shape loops over its sizes
    with pytest.raises(ExprError, match="unpack"):
        evaluate_text("[a for a, b in [1, 2]]", env)


@pytest.mark.parametrize("text", [f"range({MAX_LIST + 1})", "[x for x in range(10000) for y in range(100)]",
                                  "[[y for y in range(1000)] for x in range(1000)]", "[x for x in 5]",
                                  "len(3)", "sum([1, 'a'])", "range(1.5)", "max([])"])
def test_comprehensions_and_list_functions_are_bounded(text):
    with pytest.raises(ExprError):
        evaluate_text(text, ENV)


def test_templates_make_names():
    env = {"i": 2, "k": "b", "f": 1.5}
    assert interpolate("denselayer${i + 1}", env) == "denselayer3"
    assert interpolate("${k}${i}_${i * 2}", env) == "b2_4"
    assert interpolate("${i + 1}", env) == 3 and interpolate("$i", env) == 2  # a whole expression: its value
    assert interpolate("plain", env) == "plain" and interpolate(4, env) == 4
    for bad in ["layer${f}", "layer${i > 1}", "layer$i", "layer${i"]:
        with pytest.raises(ExprError):
            interpolate(bad, env)


def test_spec_namespace_and_unknown_names():
    env = {"spec": Namespace({"g": 4})}
    assert evaluate_text("spec.g * 2", env) == 8
    with pytest.raises(ExprError, match="no parameter 'h'"):
        evaluate_text("spec.h", env)
    with pytest.raises(ExprError, match="not a value"):
        evaluate_text("spec", env)
    with pytest.raises(UnknownName) as info:
        evaluate_text("g + 1", env)
    assert info.value.name == "g"
