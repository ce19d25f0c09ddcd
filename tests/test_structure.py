"""The code's shape (issue #29): netspec's modules import each other without cycles, and every op is
defined in one place, its ops/ module (the memory plan, the executor and the front end read what
they need from its definition)."""
from __future__ import annotations

import ast
from pathlib import Path

import netspec.ops as ops

PACKAGE = Path(__file__).resolve().parent.parent / "netspec"

# Imports inside functions that point back up the layers, each with its reason: none. (The two display
# hooks that were, Graph._repr_svg_ and Summary.__str__, are attached by netspec/__init__.py.)
ALLOWED_LAZY: dict[tuple[str, str], str] = {}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """For each module: the netspec modules it imports (importing a.b.c runs a, a.b and a.b.c),
    each with whether every import of it is inside a function (lazy)."""
    graph: dict[str, dict[str, bool]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges: dict[str, bool] = {}

        def add(target: str, lazy: bool) -> None:
            parts = target.split(".")
            for k in range(1, len(parts) + 1):
                module = ".".join(parts[:k])
                if module in modules and module != name and not name.startswith(module + "."):
                    edges[module] = edges.get(module, True) and lazy

        def visit(node: ast.AST, lazy: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name, lazy)
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        base = ".".join(package[:len(package) - child.level + 1] + ([base] if base else []))
                    for alias in child.names:
                        add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, lazy)
                visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := walk(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := walk(module)):
            return found
    return None


def test_module_level_imports_have_no_cycle():
    graph = _imports(_modules())
    top = {m: {t for t, lazy in edges.items() if not lazy} for m, edges in graph.items()}
    assert _cycle(top) is None, " → ".join(_cycle(top))


def test_lazy_imports_close_no_cycle_but_the_documented_ones():
    graph = _imports(_modules())
    every = {m: {t for t in edges if (m, t) not in ALLOWED_LAZY} for m, edges in graph.items()}
    found = _cycle(every)
    assert found is None, "an import inside a function closes a cycle: " + " → ".join(found)
    for (module, target) in ALLOWED_LAZY:  # the list stays true: each is still there, and still lazy
        assert graph[module].get(target) is True, (module, target)


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_op_is_defined_in_its_ops_module_only():
    """OpDef(...) is written only in netspec/ops/; and the registry refuses a name registered twice."""
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "ops" and path.parent.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        made = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call)
                and getattr(n.func, "id", getattr(n.func, "attr", None)) == "OpDef"]
        assert not made, f"{path.relative_to(PACKAGE.parent)}:{made[0]}: ops are defined in netspec/ops/"
    names = [name for op in ops.all_ops(internal=True, training=True) for name in (op.name, *op.aliases)]
    assert len(names) == len(set(names))


def test_memory_behaviour_is_part_of_each_op():
    """What the memory plan may share comes from the op's definition (it was a list in passes/memory.py)."""
    by_kind = {kind: {op.name for op in ops.all_ops(internal=True, training=True) if op.memory == kind}
               for kind in ("in_place", "view")}
    assert by_kind["in_place"] == {"relu", "relu6", "sigmoid", "tanh", "leaky_relu", "elu", "silu", "hardswish",
                                   "identity", "dropout", "batchnorm2d", "add", "mul"}
    assert by_kind["view"] == {"flatten", "reshape"}
