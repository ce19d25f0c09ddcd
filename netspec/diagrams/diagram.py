"""Architecture diagrams: one pure function from a typed Graph (and options) to a graphviz.Digraph.

What is drawn:
- one DOT node per *visible unit*: a graph node, or, below `depth` name levels, a whole block, group
  or repeat folded into one node (its name, block name, ×count, output shape, params and MACs);
- the enclosing blocks, groups and repeats as nested clusters labelled `layer1 · basic ×2`;
- one edge per tensor between two different units, labelled with its shape without the batch
  dimension (C×H×W, or `features` after a flatten);
- the graph's inputs and outputs as dark ellipses (with `scope`, the tensors entering and leaving the
  scope as small dashed ones), and a legend listing only the categories drawn.

Encoder-decoder skips (a merge whose input comes from far back, past an upsampling op, as in U-Net)
put their source and their merge on the same rank, so U-Net draws as a U with the skips across it;
residual shortcuts, Inception branches and squeeze-excitation gates are left to dot's layout, which
already draws them beside the main path.

DOT node ids: units are named by their node or scope name (`layer1.0.conv1`, `layer1`); the other
nodes carry a prefix no spec name can contain: `input/NAME`, `output/NAME`, `legend/CATEGORY`.
"""
from __future__ import annotations

import difflib
import html
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import graphviz

from .. import ops
from ..ir.graph import Graph, Node
from ..ir.printer import describe
from ..ir.types import TensorType

CATEGORY_COLORS = {  # pastel fills, one per op category (netspec.ops.registry.Category)
    "convolution": "#a6cee3",
    "pooling": "#fdbf6f",
    "normalization": "#b2df8a",
    "activation": "#fb9a99",
    "dropout": "#d9d9d9",
    "merge": "#ffff99",
    "linear": "#cab2d6",
    "reshape": "#eeeeee",
}
BLOCK = "block"  # the legend entry of folded blocks, groups and repeats
BLOCK_COLOR = "#f7f7f7"
IO_COLOR = "#404040"
AUTO_MAX_BOXES = 48  # depth "auto": the deepest depth drawing at most this many nodes and clusters
LONG_SKIP = 6  # a merge input more than this many nodes back (and past an upsampling) is a long skip
SHOW = ("params", "macs")
FONT = "Helvetica"


class RenderError(ValueError):
    """A bad option (unknown scope, depth or figure); the message says what is accepted."""


@dataclass
class Unit:
    """A DOT node of the diagram: one graph node, or several folded into their block."""

    key: str  # the node's name, or the folded scope's name
    nodes: list[Node] = field(default_factory=list)
    folded: bool = False


# --- the public entry points ---------------------------------------------------------------------

def render(graph: Graph, depth: int | str | None = None, rankdir: str = "TB", shapes: bool = True,
           show: Iterable[str] = (), scope: str | None = None) -> graphviz.Digraph:
    """The architecture diagram of `graph` as a graphviz.Digraph (`.source` is the DOT text).

    depth: name levels drawn before blocks fold into one node: a positive int, "full" (every node) or
    "auto"/None (the deepest depth drawing at most AUTO_MAX_BOXES nodes and clusters: ResNet-50,
    GoogLeNet and EfficientNet-B0 fit one screen, small nets like LeNet-5 are drawn in full). With `scope`,
    levels count from inside the scope. rankdir: "TB" or "LR". shapes: label edges with tensor shapes.
    show: any of "params", "macs" to print per node. scope: draw only the nodes under this name
    (`layer2`, `inception3a`), with the tensors from outside as small input nodes.
    """
    show = _check_show(show)
    if rankdir not in ("TB", "LR"):
        raise RenderError(f"rankdir must be TB or LR, got {rankdir!r}")
    nodes = _in_scope(graph, scope)
    base = len(scope.split(".")) if scope else 0
    level = resolve_depth(graph, depth, scope)
    units = _units(nodes, base, level)
    unit_of = {n.name: u.key for u in units.values() for n in u.nodes}
    stats = _stats(graph)
    d = graphviz.Digraph(name=graph.name, graph_attr={
        "rankdir": rankdir, "fontname": FONT, "fontsize": "12", "nodesep": "0.25", "ranksep": "0.35",
        "labelloc": "t", "label": _title(graph, nodes, stats, scope), "ordering": "out",
        "newrank": "true"},  # rank globally, across clusters: branches start below their fork, skips can go across
        node_attr={"fontname": FONT, "fontsize": "10", "shape": "box", "style": "rounded,filled",
                   "margin": "0.12,0.04", "height": "0.3"},
        edge_attr={"fontname": FONT, "fontsize": "8", "fontcolor": "#555555", "color": "#555555",
                   "arrowsize": "0.6", "weight": "2"})

    sources, sinks = _boundary(graph, nodes, scope)
    for name in sources:
        d.node(f"input/{name}", _io_label("input" if scope is None else name, graph.type_of(name), scope is None),
               **_io_style(scope is None))
    _draw_units(d, graph, units, base, stats, show)
    _draw_edges(d, graph, nodes, unit_of, shapes)
    for name in sinks:
        d.node(f"output/{name}", _io_label("output" if scope is None else name, graph.type_of(name), scope is None,
                                           name if scope is None and len(sinks) > 1 else None),
               **_io_style(scope is None))
        d.edge(unit_of[name], f"output/{name}", **_shape_label(graph.type_of(name), shapes))
    skips = long_skips(graph, nodes, unit_of)
    for group in skips:
        with d.subgraph() as same:
            same.attr(rank="same")
            for unit in group:
                same.node(unit)
    _draw_legend(d, graph, units)
    return d


def to_svg(graph: Graph, **options) -> str | None:
    """The diagram as SVG text, or None when graphviz's `dot` program is not installed."""
    if shutil.which("dot") is None:
        return None
    try:
        return render(graph, **options).pipe(format="svg", encoding="utf-8")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError):
        return None


def resolve_depth(graph: Graph, depth: int | str | None, scope: str | None = None) -> int | None:
    """The depth a diagram uses: a positive int, or None for every node ("full")."""
    nodes = _in_scope(graph, scope)
    base = len(scope.split(".")) if scope else 0
    if depth == "full":
        return None
    if depth is None or depth == "auto":
        deepest = max((len(n.name.split(".")) - base for n in nodes), default=1)
        for level in range(deepest, 0, -1):
            units = _units(nodes, base, level)
            clusters = {c for key in units for c in _clusters_of(key, base)}
            if len(units) + len(clusters) <= AUTO_MAX_BOXES:
                return None if level == deepest else level
        return 1
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise RenderError(f"depth must be a positive integer, 'auto' or 'full', got {depth!r}")
    return depth


def long_skips(graph: Graph, nodes: Sequence[Node], unit_of: dict[str, str]) -> list[tuple[str, ...]]:
    """The units to put on one rank for each encoder-decoder skip: its source, the reshapes on the way
    (U-Net's center crop) and the merge. A skip is a merge input that comes from more than LONG_SKIP
    nodes back, where the path between them upsamples (goes down and back up, as in U-Net); residual
    shortcuts, Inception branches and squeeze-excitation gates never upsample."""
    index = {n.name: i for i, n in enumerate(nodes)}
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    inputs: dict[str, list[str]] = {n.name: [i for i in n.inputs if i in index] for n in nodes}
    for n in nodes:
        for i in inputs[n.name]:
            users[i].append(n.name)
    groups: list[tuple[str, ...]] = []
    for m in nodes:
        if ops.get(m.op).category != "merge" or len(set(m.inputs)) < 2:
            continue
        for s in dict.fromkeys(i for i in m.inputs if i in index):
            path = [s]  # back through the reshapes that only adapt the skip (a crop)
            while ops.get(graph.node(path[-1]).op).category == "reshape" and len(inputs[path[-1]]) == 1:
                path.append(inputs[path[-1]][0])
            source = path[-1]
            if index[m.name] - index[source] <= LONG_SKIP:
                continue
            lo, hi = index[source], index[m.name]
            between = _reachable(source, users, lambda x: index[x] < hi) & \
                _reachable(m.name, inputs, lambda x: index[x] > lo)
            if any(_upsamples(graph, graph.node(x)) for x in between):
                group = tuple(dict.fromkeys(unit_of[x] for x in path[::-1] + [m.name]))
                if len(group) > 1 and group not in groups:
                    groups.append(group)
    return groups


def _reachable(start: str, edges: dict[str, list[str]], keep) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for x in edges[todo.pop()]:
            if x not in seen and keep(x):
                seen.add(x)
                todo.append(x)
    return seen


def _upsamples(graph: Graph, node: Node) -> bool:
    """Whether the node's output is spatially larger than its (first) input: an up-convolution."""
    t, x = node.type, graph.type_of(node.inputs[0])
    return t.rank == 4 and x.rank == 4 and t.h * t.w > x.h * x.w


# --- units and scopes ---------------------------------------------------------------------------

def _in_scope(graph: Graph, scope: str | None) -> list[Node]:
    if scope is None:
        return list(graph.nodes)
    nodes = [n for n in graph.nodes if n.name == scope or n.name.startswith(scope + ".")]
    if not nodes:
        names = sorted(set(graph.scopes) | {n.name for n in graph.nodes})
        close = difflib.get_close_matches(scope, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        tops = ", ".join(s for s in graph.scopes if "." not in s) or "none"
        raise RenderError(f"no block, group or node named '{scope}' in {graph.name}{hint}; top-level scopes: {tops}")
    return nodes


def _unit_key(name: str, base: int, level: int | None) -> str:
    parts = name.split(".")
    if level is None or len(parts) <= base + level:
        return name
    return ".".join(parts[:base + level])


def _units(nodes: Sequence[Node], base: int, level: int | None) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for n in nodes:
        key = _unit_key(n.name, base, level)
        unit = units.setdefault(key, Unit(key, folded=key != n.name))
        unit.nodes.append(n)
    return units


def _clusters_of(key: str, base: int) -> list[str]:
    """The scopes drawn as clusters around a unit, outermost first."""
    parts = key.split(".")
    return [".".join(parts[:k]) for k in range(max(base, 1), len(parts))]


def _boundary(graph: Graph, nodes: Sequence[Node], scope: str | None) -> tuple[list[str], list[str]]:
    """The tensors drawn as input and output nodes: the graph's, or those crossing the scope."""
    if scope is None:
        return list(graph.inputs), list(dict.fromkeys(graph.outputs))
    inside = {n.name for n in nodes}
    sources = list(dict.fromkeys(i for n in nodes for i in n.inputs if i not in inside))
    used_outside = {i for n in graph.nodes if n.name not in inside for i in n.inputs}
    sinks = [n.name for n in nodes if n.name in used_outside or n.name in graph.outputs]
    return sources, sinks


def _scope_label(graph: Graph, prefix: str) -> str:
    info = graph.scopes.get(prefix)
    if info is None or info.kind == "group":
        return prefix
    return f"{prefix} · {info.label}" + (f" ×{info.count}" if info.kind == "repeat" else "")


# --- figures --------------------------------------------------------------------------------------

@dataclass
class _Stat:
    params: int
    macs: int


def _stats(graph: Graph) -> dict[str, _Stat]:
    """Params and MACs (batch 1) of every node, each in the mode it exists in."""
    from ..passes.analysis import analyze
    stats: dict[str, _Stat] = {}
    modes = ["eval"] + (["train"] if any(n.mode == "train" for n in graph.nodes) else [])
    for mode in modes:
        for row in analyze(graph, batch=1, mode=mode).rows:
            stats.setdefault(row.name, _Stat(row.params, row.macs))
    return stats


def si(n: int) -> str:
    """A count in three significant figures: 864, 36.9K, 11.7M, 1.81G."""
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return str(n)


def dims(t: TensorType) -> str:
    """A tensor's shape without the batch dimension: 64×56×56, or 1000 after a flatten."""
    return t.dims_str()


def _figures(stats: Iterable[_Stat], show: Sequence[str]) -> str:
    stats = list(stats)
    parts = []
    if "params" in show:
        parts.append(f"{si(sum(s.params for s in stats))} params")
    if "macs" in show:
        parts.append(f"{si(sum(s.macs for s in stats))} MACs")
    return " · ".join(parts)


def _check_show(show: Iterable[str]) -> tuple[str, ...]:
    if isinstance(show, str):
        show = [s for s in show.split(",") if s.strip()]
    show = tuple(s.strip() for s in show)
    for s in show:
        if s not in SHOW:
            raise RenderError(f"cannot show '{s}': choose from {', '.join(SHOW)}")
    return show


def _title(graph: Graph, nodes: Sequence[Node], stats: dict[str, _Stat], scope: str | None) -> str:
    name = graph.name + (f":{graph.variant}" if graph.variant else "") + (f" · {_scope_label(graph, scope)}" if scope else "")
    total = [stats[n.name] for n in nodes if n.name in stats]
    return f"{name}   ({_figures(total, SHOW)})"


# --- drawing ----------------------------------------------------------------------------------------

def _html(*lines: str) -> str:
    """An HTML-like graphviz label from lines already escaped."""
    return "<" + "<br/>".join(lines) + ">"


def _small(text: str, color: str = "#333333") -> str:
    return f'<font point-size="8" color="{color}">{html.escape(text)}</font>'


def _mode_of(unit: Unit) -> str | None:
    modes = {n.mode for n in unit.nodes}
    return modes.pop() if len(modes) == 1 else None


def _draw_units(d: graphviz.Digraph, graph: Graph, units: dict[str, Unit], base: int,
                stats: dict[str, _Stat], show: Sequence[str]) -> None:
    children: dict[str | None, list[tuple[str, str]]] = {None: []}
    for key in units:
        parent = None
        for prefix in _clusters_of(key, base):
            if prefix not in children:
                children[prefix] = []
                children[parent].append(("cluster", prefix))
            parent = prefix
        children[parent].append(("unit", key))

    def emit(g: graphviz.Digraph, parent: str | None) -> None:
        for kind, key in children[parent]:
            if kind == "unit":
                g.node(key, **_unit_attrs(graph, units[key], parent, stats, show))
                continue
            with g.subgraph(name=f"cluster_{key}") as c:
                c.attr(label=_scope_label(graph, key), style="rounded", color="#9a9a9a", fontcolor="#333333",
                       fontsize="10", labeljust="l", margin="10")
                emit(c, key)

    emit(d, None)


def _unit_attrs(graph: Graph, unit: Unit, parent: str | None, stats: dict[str, _Stat],
                show: Sequence[str]) -> dict[str, str]:
    mode = _mode_of(unit)
    figures = [stats[n.name] for n in unit.nodes if n.name in stats]
    if unit.folded:
        info = graph.scopes.get(unit.key)
        name = unit.key[len(parent) + 1:] if parent else unit.key
        kind = "" if info is None or info.kind == "group" else info.label
        if info is not None and info.kind == "repeat":
            kind += f" ×{info.count}"
        lines = [f"<b>{html.escape(name)}</b>"] + ([html.escape(kind)] if kind else []) + \
            [_small("→ " + dims(unit.nodes[-1].type)), _small(_figures(figures, SHOW))]
        attrs = {"shape": "box3d", "style": "filled", "fillcolor": BLOCK_COLOR, "margin": "0.15,0.08"}
    else:
        node = unit.nodes[0]
        label = describe(node)
        name = node.name[len(parent) + 1:] if parent else node.name
        lines = [html.escape(label)] + ([_small(name, "#555555")] if name != label else [])
        if show:
            lines.append(_small(_figures(figures, show)))
        attrs = {"fillcolor": CATEGORY_COLORS[ops.get(node.op).category]}
    if mode:
        lines.append(f'<i>{_small(f"{mode} only", "#aa0000")}</i>')
        attrs["style"] = attrs.get("style", "rounded,filled") + ",dashed"
    attrs["label"] = _html(*lines)
    attrs["tooltip"] = unit.key
    return attrs


def _io_label(title: str, t: TensorType, main: bool, name: str | None = None) -> str:
    if main:
        return _html(f"<b>{html.escape(title)}</b>", *([html.escape(name)] if name else []), html.escape(dims(t)))
    return _html(html.escape(title))


def _io_style(main: bool) -> dict[str, str]:
    if main:
        return {"shape": "ellipse", "style": "filled", "fillcolor": IO_COLOR, "fontcolor": "white", "color": IO_COLOR}
    return {"shape": "ellipse", "style": "dashed", "fontsize": "8", "height": "0.2", "color": "#777777",
            "fontcolor": "#333333"}


def _shape_label(t: TensorType, shapes: bool) -> dict[str, str]:
    return {"label": dims(t)} if shapes else {}


def _draw_edges(d: graphviz.Digraph, graph: Graph, nodes: Sequence[Node], unit_of: dict[str, str],
                shapes: bool) -> None:
    drawn: set[tuple[str, str, str]] = set()
    for n in nodes:
        for i in n.inputs:
            source = unit_of.get(i, f"input/{i}")
            target = unit_of[n.name]
            label = dims(graph.type_of(i))
            if source == target or (source, target, label) in drawn:
                continue
            drawn.add((source, target, label))
            # A merge's inputs pull on it less than a branch pulls on its source: parallel branches
            # start together below their fork (side by side) and wait for the merge at their end.
            weight = {"weight": "1"} if ops.get(n.op).category == "merge" and target == n.name else {}
            d.edge(source, target, **_shape_label(graph.type_of(i), shapes), **weight)


def _draw_legend(d: graphviz.Digraph, graph: Graph, units: dict[str, Unit]) -> None:
    """A small cluster with one table node: a coloured row per category drawn (and folded blocks)."""
    present = {ops.get(u.nodes[0].op).category for u in units.values() if not u.folded}
    entries = [c for c in CATEGORY_COLORS if c in present]
    if any(u.folded for u in units.values()):
        entries.append(BLOCK)
    rows = "".join(f'<tr><td bgcolor="{CATEGORY_COLORS.get(c, BLOCK_COLOR)}" align="left">{c}</td></tr>'
                   for c in entries)
    table = f'<<table border="0" cellborder="1" cellspacing="2" cellpadding="3">{rows}</table>>'
    with d.subgraph(name="cluster_legend") as legend:
        legend.attr(label="legend", style="rounded", color="#cccccc", fontcolor="#555555", fontsize="9",
                    labeljust="l", margin="6")
        legend.node("legend/categories", table, shape="plaintext", style="", fontsize="8", margin="0")
