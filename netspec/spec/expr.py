"""Safe expressions: `${ (nc + 5) * 3 }` and `$name` in spec values.

The text is parsed with Python's `ast` module and then *interpreted* here over a small whitelist
of node types; nothing is ever passed to `eval`. Allowed: numbers, strings, booleans, lists,
+ - * / // % **, comparisons, and/or/not, `a if cond else b`, indexing, list comprehensions
(`[e for x in xs if cond]`), the functions in FUNCTIONS, spec and block parameters, the shapes of
earlier nodes (`input.c`, `conv1.h`), and in a block parameter's default the spec's parameters
(`spec.g`). Sizes and steps are bounded so an expression cannot eat time or memory.

A name may be a template: `denselayer${i + 1}` (see `interpolate`).
"""
from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from collections import ChainMap
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import did_you_mean

MAX_EXPR_CHARS = 500
MAX_MAGNITUDE = 10**15
MAX_EXPONENT = 64
MAX_LIST = 10_000  # items of a list an expression makes (range, a comprehension)
MAX_STEPS = 100_000  # comprehension iterations in one expression, nested ones included

_FULL = re.compile(r"^\$\{(.*)\}$", re.S)
_SHORT = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_PIECE = re.compile(r"\$\{([^{}]*)\}")  # one ${...} inside a template


class ExprError(ValueError):
    pass


class UnknownName(ExprError):
    """A name the expression's environment does not have; `name` says which (callers explain scoping)."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


class Unavailable(ExprError):
    """A name whose value could not be made because of an error already reported (a node that
    failed): the expression fails quietly, as a follow-on of that error."""


@dataclass(frozen=True)
class ShapeRef:
    """The shape of an earlier tensor as seen by expressions: `.c`, `.h`, `.w`, `.shape` (no batch)."""

    shape: tuple[int, ...]  # without the batch dimension

    def attr(self, name: str) -> Any:
        dims = {"c": 0, "h": 1, "w": 2}
        if name == "shape":
            return list(self.shape)
        if name in dims:
            if dims[name] >= len(self.shape):
                raise ExprError(f"a tensor of shape {list(self.shape)} has no '{name}' dimension")
            return self.shape[dims[name]]
        raise ExprError(f"shapes have .c, .h, .w and .shape, not '.{name}'{did_you_mean(name, ['c', 'h', 'w', 'shape'])}")


@dataclass(frozen=True)
class Namespace:
    """`spec.g`: the spec's parameters, read by name (only a block parameter's default sees `spec`)."""

    values: Mapping[str, Any]

    def attr(self, name: str) -> Any:
        if name not in self.values:
            declared = ", ".join(self.values) or "none"
            raise ExprError(f"the spec has no parameter '{name}'{did_you_mean(name, self.values)} "
                            f"(its parameters: {declared})")
        return self.values[name]


def _round(x, ndigits=None):
    """Round half away from zero (2.5 -> 3), which is what people expect of channel counts."""
    if ndigits is None:
        return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)
    scale = 10 ** int(ndigits)
    return math.floor(abs(x) * scale + 0.5) / scale * (1 if x >= 0 else -1)


def _make_divisible(value, divisor=8, min_value=None):
    """The channel rounding of MobileNet v2/v3 and EfficientNet (torchvision's _make_divisible)."""
    if divisor <= 0:
        raise ExprError("make_divisible: divisor must be positive")
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:  # never round down by more than 10%
        new += divisor
    return new


FUNCTIONS = {
    "min": min,
    "max": max,
    "abs": abs,
    "ceil": lambda x: int(math.ceil(x)),
    "floor": lambda x: int(math.floor(x)),
    "round": _round,
    "int": int,
    "float": float,
    "sqrt": math.sqrt,
    "make_divisible": _make_divisible,
}


def _range(*args):
    if len(args) > 3 or any(isinstance(a, bool) or not isinstance(a, int) for a in args):
        raise ExprError("range takes one to three integers")
    r = range(*args)
    if len(r) > MAX_LIST:
        raise ExprError(f"range of {len(r):,} items; lists are limited to {MAX_LIST:,}")
    return list(r)


def _sum(items):
    total = 0
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ExprError(f"sum needs a list of numbers, got {x!r} in it")
        total = _bounded(total + x)
    return total


# Functions over lists (the others take numbers only).
LIST_FUNCTIONS = {"len": len, "sum": _sum, "range": _range}

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


def expression_text(value: Any) -> str | None:
    """The expression inside a `${...}` or `$name` string, or None for a plain value."""
    if not isinstance(value, str) or not value.startswith("$"):
        return None
    if m := _FULL.match(value):
        return m.group(1).strip()
    if m := _SHORT.match(value):
        return m.group(1)
    raise ExprError(f"'{value}' is not an expression: write ${{ ... }} around it, or $name for a parameter")


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$")


def evaluate(value: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate expressions in a value (recursively through lists and mappings)."""
    if isinstance(value, list):
        return [evaluate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, env) for k, v in value.items()}
    text = expression_text(value)
    if text is None:
        return value
    return evaluate_text(text, env)


def interpolate(value: Any, env: Mapping[str, Any], any_value: bool = False) -> Any:
    """A template's text with each `${...}` replaced by its value (`denselayer${i + 1}` →
    `denselayer3`); a whole `${...}` or `$name` is evaluated as usual, and other values are kept.
    Pieces must be integers or strings, so that the result is a name, never `layer2.0` from a float
    (`any_value`: any value, for messages)."""
    if not isinstance(value, str) or "$" not in value:
        return value
    if _PIECE.fullmatch(value) or _SHORT.match(value):
        return evaluate(value, env)

    def piece(m: re.Match) -> str:
        v = evaluate_text(m.group(1).strip(), env)
        if any_value:
            return str(v)
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ExprError(f"'${{{m.group(1)}}}' in '{value}' gives {v!r}; a piece of a name must be an "
                            "integer or a string")
        return str(v)
    text = _PIECE.sub(piece, value)
    if "$" in text:
        raise ExprError(f"'{value}': write each computed piece as ${{ ... }}")
    return text


def names_in(text: str) -> list[str]:
    """The names an expression reads (not its functions' names), in order; [] when it does not parse."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    found = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called]
    return list(dict.fromkeys(found))


def evaluate_text(text: str, env: Mapping[str, Any]) -> Any:
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"expression is longer than {MAX_EXPR_CHARS} characters")
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal": the error below says enough
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(" ".join(text.splitlines()), mode="eval")  # line breaks inside ${...} are fine
    except SyntaxError as e:
        raise ExprError(f"invalid expression '{text}': {e.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExprError(f"invalid expression '{text}'") from None
    try:
        result = _Interpreter(env).visit(tree.body)
    except RecursionError:
        raise ExprError(f"expression '{text}' is nested too deeply") from None
    except (TypeError, ZeroDivisionError, OverflowError, ValueError) as e:
        if isinstance(e, ExprError):
            raise
        raise ExprError(f"in '{text}': {e}") from None
    if isinstance(result, ShapeRef):
        return list(result.shape)
    if isinstance(result, Namespace):
        raise ExprError("'spec' is not a value: read one of its parameters, spec.NAME")
    return result


class _Interpreter:
    def __init__(self, env: Mapping[str, Any]):
        self.env = env
        self.steps = 0  # comprehension iterations so far

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, "visit_" + type(node).__name__, None)
        if method is None:
            raise ExprError(f"'{ast.unparse(node)}' is not allowed in expressions")
        return method(node)

    def visit_Constant(self, node: ast.Constant):
        if isinstance(node.value, (bool, int, float, str)):
            return _bounded(node.value)
        raise ExprError(f"constant {node.value!r} is not allowed")

    def visit_Name(self, node: ast.Name):
        if node.id in ("True", "False"):
            return node.id == "True"
        if node.id not in self.env:
            known = [k for k in self.env] + list(FUNCTIONS) + list(LIST_FUNCTIONS)
            raise UnknownName(f"unknown name '{node.id}'{did_you_mean(node.id, known)}", node.id)
        return self.env[node.id]

    def visit_Attribute(self, node: ast.Attribute):
        base = self.visit(node.value)
        if not isinstance(base, (ShapeRef, Namespace)):
            raise ExprError(f"'{ast.unparse(node.value)}' has no attribute '{node.attr}'; "
                            "only node shapes do (.c, .h, .w, .shape)")
        return base.attr(node.attr)

    def visit_ListComp(self, node: ast.ListComp):
        """`[e for x in xs if cond]`, nested `for`s too; the loop names shadow others inside it only."""
        if any(gen.is_async for gen in node.generators):
            raise ExprError("async comprehensions are not allowed")
        result: list = []
        outer = self.env

        def loop(k: int, local: dict[str, Any]) -> None:
            self.env = ChainMap(local, outer) if local else outer
            if k == len(node.generators):
                result.append(self.visit(node.elt))
                if len(result) > MAX_LIST:
                    raise ExprError(f"the comprehension makes more than {MAX_LIST:,} items")
                return
            gen = node.generators[k]
            items = self.visit(gen.iter)
            if isinstance(items, ShapeRef):
                items = list(items.shape)
            if not isinstance(items, list):
                raise ExprError(f"'{ast.unparse(gen.iter)}' is not a list to loop over")
            for item in items:
                self.steps += 1
                if self.steps > MAX_STEPS:
                    raise ExprError(f"the expression takes more than {MAX_STEPS:,} steps")
                inner = {**local, **_bind(gen.target, item)}
                self.env = ChainMap(inner, outer)
                if all(self.visit(test) for test in gen.ifs):
                    loop(k + 1, inner)

        try:
            loop(0, {})
        finally:
            self.env = outer
        return result

    def visit_List(self, node: ast.List):
        return [self.visit(e) for e in node.elts]

    visit_Tuple = visit_List

    def visit_Subscript(self, node: ast.Subscript):
        base = self.visit(node.value)
        index = self.visit(node.slice)
        if isinstance(base, ShapeRef):
            base = list(base.shape)
        if not isinstance(base, list) or not isinstance(index, int) or isinstance(index, bool):
            raise ExprError(f"'{ast.unparse(node)}': only lists can be indexed, by an integer")
        try:
            return base[index]
        except IndexError:
            raise ExprError(f"'{ast.unparse(node)}': index {index} is out of range") from None

    def visit_UnaryOp(self, node: ast.UnaryOp):
        value = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not value
        _need_number(value, node)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return +value
        raise ExprError(f"operator in '{ast.unparse(node)}' is not allowed")

    def visit_BinOp(self, node: ast.BinOp):
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExprError(f"operator in '{ast.unparse(node)}' is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_EXPR_CHARS:
                raise ExprError("string too long")
            return left + right
        _need_number(left, node)
        _need_number(right, node)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ExprError(f"exponent {right} is too large in '{ast.unparse(node)}'")
        return _bounded(op(left, right))

    def visit_BoolOp(self, node: ast.BoolOp):
        if isinstance(node.op, ast.And):
            result = True
            for v in node.values:
                result = self.visit(v)
                if not result:
                    return result
            return result
        result = False
        for v in node.values:
            result = self.visit(v)
            if result:
                return result
        return result

    def visit_Compare(self, node: ast.Compare):
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise ExprError(f"comparison in '{ast.unparse(node)}' is not allowed")
            right = self.visit(right_node)
            if not op(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp):
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_Call(self, node: ast.Call):
        known = {**FUNCTIONS, **LIST_FUNCTIONS}
        if not isinstance(node.func, ast.Name) or node.func.id not in known:
            name = ast.unparse(node.func)
            raise ExprError(f"unknown function '{name}'{did_you_mean(name, known)}; "
                            f"available: {', '.join(sorted(known))}")
        if node.keywords:
            raise ExprError(f"'{node.func.id}' takes positional arguments only")
        name = node.func.id
        args = [self.visit(a) for a in node.args]
        args = [list(a.shape) if isinstance(a, ShapeRef) else a for a in args]
        if name in ("min", "max") and len(args) == 1 and isinstance(args[0], list):  # max(depths)
            if not args[0]:
                raise ExprError(f"'{ast.unparse(node)}': {name} of an empty list")
            for a in args[0]:
                _need_number(a, node)
            return FUNCTIONS[name](args[0])
        if name in LIST_FUNCTIONS:
            if name != "range" and (len(args) != 1 or not isinstance(args[0], list)):
                raise ExprError(f"'{ast.unparse(node)}': {name} takes one list")
            return LIST_FUNCTIONS[name](*args)
        for a in args:
            _need_number(a, node)
        return _bounded(FUNCTIONS[name](*args))


def _bind(target: ast.AST, item: Any) -> dict[str, Any]:
    """The loop names of a comprehension's `for` (a name, or names unpacking a list) and their values."""
    if isinstance(target, ast.Name):
        return {target.id: item}
    if isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in target.elts):
        if not isinstance(item, list) or len(item) != len(target.elts):
            raise ExprError(f"cannot unpack {item!r} into {ast.unparse(target)}")
        return {e.id: v for e, v in zip(target.elts, item)}
    raise ExprError(f"'{ast.unparse(target)}': a comprehension loops with a name, or names: for a, b in pairs")


def _need_number(value: Any, node: ast.AST) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExprError(f"'{ast.unparse(node)}' needs numbers, got {type(value).__name__} {value!r}")


def _bounded(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ExprError("result is not a finite number")
        if abs(value) > MAX_MAGNITUDE:
            raise ExprError(f"value {value:.3g} is too large")
    return value
