"""Architecture diagrams (`netspec render`, netspec.render): the structure of the DOT text, checked
against the graph (units, edges and their shapes, clusters, legend, skips), not pixels; one SVG
through graphviz's `dot`; and the command's files and messages."""
from __future__ import annotations

import functools
import html
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import graphviz
import pytest

import netspec
from netspec import ops
from netspec.ir.printer import describe
from netspec.diagrams.diagram import CATEGORY_COLORS, RenderError, resolve_depth

ROOT = Path(__file__).resolve().parent.parent
ZOO = [(p.name, None) for p in sorted((ROOT / "specs").glob("*.yaml"))] + \
    [("alexnet.yaml", "original"), ("googlenet.yaml", "paper"), ("unet.yaml", "original")]
HAS_DOT = shutil.which("dot") is not None


@functools.lru_cache(maxsize=None)
def zoo(name: str, variant: str | None = None):
    return netspec.load(ROOT / "specs" / name, variant=variant)


# --- a small reader of the DOT text graphviz (the Python package) writes: one statement a line ------

_ID = r'"(?:[^"\\]|\\.)*"|[^\s\[\]{};=]+'


def _unquote(text: str) -> str:
    if text.startswith('"'):
        return re.sub(r'\\(.)', r'\1', text[1:-1])
    return text


def _attrs(text: str) -> dict[str, str]:
    """key=value pairs; values are IDs, "quoted strings" or <HTML labels> (nested angle brackets)."""
    attrs, i = {}, 0
    while i < len(text):
        m = re.compile(r'\s*([A-Za-z_]+)=').match(text, i)
        if not m:
            break
        key, i = m.group(1), m.end()
        if text[i] == "<":
            depth, j = 0, i
            while True:
                depth += {"<": 1, ">": -1}.get(text[j], 0)
                j += 1
                if depth == 0:
                    break
            attrs[key], i = text[i:j], j
        else:
            v = re.compile(_ID).match(text, i)
            attrs[key], i = _unquote(v.group(0)), v.end()
    return attrs


def text_of(label: str) -> str:
    """The visible text of a label: HTML tags become line breaks."""
    if label.startswith("<"):
        label = re.sub(r"<[^>]*>", "\n", label[1:-1])
    return re.sub(r"\n+", "\n", html.unescape(label)).strip()


class Dot:
    def __init__(self, source: str):
        self.source = source
        self.nodes: dict[str, dict[str, str]] = {}
        self.parent: dict[str, str | None] = {}  # node or cluster -> the cluster it is declared in
        self.clusters: dict[str, dict[str, str]] = {}
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.ranks: list[set[str]] = []
        self.graph_attrs: dict[str, str] = {}
        stack: list[str | None] = []
        for line in source.splitlines()[1:]:
            line = line.strip()
            if line == "}":
                if not stack:  # the end of the digraph
                    break
                stack.pop()
                continue
            m = re.fullmatch(r"(?:subgraph(?: (%s))? )?\{" % _ID, line)
            if m:
                name = _unquote(m.group(1)) if m.group(1) else None
                if name and name.startswith("cluster_"):
                    self.clusters[name[8:]] = {}
                    self.parent[name[8:]] = self._cluster(stack)
                    stack.append(name[8:])
                else:
                    stack.append(("rank", len(self.ranks)))
                    self.ranks.append(set())
                continue
            if stack == [] and line.startswith("graph ["):
                self.graph_attrs = _attrs(line[7:-1])
                continue
            if line.startswith(("node [", "edge [", "graph [")):
                continue
            m = re.fullmatch(r"(%s) -> (%s)(?: \[(.*)\])?" % (_ID, _ID), line)
            if m:
                self.edges.append((_unquote(m.group(1)), _unquote(m.group(2)), _attrs(m.group(3) or "")))
                continue
            m = re.fullmatch(r"(%s)(?: \[(.*)\])?" % _ID, line)
            if m and not ("=" in line and not line.startswith(m.group(1) + " [")):
                name = _unquote(m.group(1))
                if stack and isinstance(stack[-1], tuple):
                    self.ranks[stack[-1][1]].add(name)
                elif name not in self.nodes:
                    self.nodes[name] = _attrs(m.group(2) or "")
                    self.parent[name] = self._cluster(stack)
                continue
            attrs = _attrs(line)  # a subgraph's own attributes
            if stack and isinstance(stack[-1], str):
                self.clusters[stack[-1]].update(attrs)

    @staticmethod
    def _cluster(stack) -> str | None:
        clusters = [s for s in stack if isinstance(s, str)]
        return clusters[-1] if clusters else None

    def label(self, node: str) -> str:
        return text_of(self.nodes[node].get("label", node))

    def chain(self, name: str) -> list[str]:
        """The clusters around a node, outermost first."""
        out, p = [], self.parent.get(name)
        while p is not None:
            out.append(p)
            p = self.parent.get(p)
        return out[::-1]

    def visible_edges(self) -> set[tuple[str, str, str | None]]:
        return {(a, b, attrs.get("label")) for a, b, attrs in self.edges if attrs.get("style") != "invis"}

    def legend(self) -> list[str]:
        return [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", self.nodes["legend/categories"]["label"])]


def draw(graph, **options) -> Dot:
    return Dot(netspec.render(graph, **options).source)


# --- what the diagram must show, computed from the graph itself -----------------------------------

def expected(graph, depth: int | None, scope: str | None = None):
    """(units: key -> nodes, edges, inputs, outputs) for a diagram folded below `depth` levels."""
    base = len(scope.split(".")) if scope else 0
    inside = [n for n in graph.nodes if scope is None or n.name == scope or n.name.startswith(scope + ".")]
    units: dict[str, list] = {}
    unit = {}
    for n in inside:
        parts = n.name.split(".")
        key = n.name if depth is None or len(parts) <= base + depth else ".".join(parts[:base + depth])
        units.setdefault(key, []).append(n)
        unit[n.name] = key
    names = set(unit)
    if scope is None:
        inputs, outputs = set(graph.inputs), set(graph.outputs)
    else:
        inputs = {i for n in inside for i in n.inputs if i not in names}
        outputs = {n.name for n in inside if n.name in graph.outputs} | \
            {i for n in graph.nodes if n.name not in names for i in n.inputs if i in names}
    edges = set()
    for n in inside:
        for i in n.inputs:
            src = unit.get(i, f"input/{i}")
            if src != unit[n.name]:
                edges.add((src, unit[n.name], graph.type_of(i).dims_str()))
    edges |= {(unit[o], f"output/{o}", graph.type_of(o).dims_str()) for o in outputs}
    return units, edges, inputs, outputs


def check_structure(graph, dot: Dot, depth: int | None, scope: str | None = None):
    units, edges, inputs, outputs = expected(graph, depth, scope)
    ids = set(units) | {f"input/{i}" for i in inputs} | {f"output/{o}" for o in outputs} | {"legend/categories"}
    assert set(dot.nodes) == ids
    assert dot.visible_edges() == edges
    base = len(scope.split(".")) if scope else 0
    folded = False
    for key, members in units.items():
        parts = key.split(".")
        assert dot.chain(key) == [".".join(parts[:k]) for k in range(max(base, 1), len(parts))], key
        label = dot.label(key)
        if members[0].name != key:  # a folded block, group or repeat
            folded = True
            assert "→ " + members[-1].type.dims_str() in label and "params" in label and "MACs" in label
            info = graph.scopes[key]
            if info.kind == "repeat":
                assert f"{info.label} ×{info.count}" in label
            elif info.kind == "block":
                assert info.label in label
        else:
            assert describe(members[0]) in label
    for name, attrs in dot.clusters.items():
        if name == "legend":
            continue
        info = graph.scopes[name]
        want = {"repeat": f"{name} · {info.label} ×{info.count}", "block": f"{name} · {info.label}",
                "group": name}[info.kind]
        assert text_of(attrs["label"]) == want
    categories = {ops.get(m[0].op).category for k, m in units.items() if m[0].name == k}
    order = list(CATEGORY_COLORS) + ["block"]
    assert dot.legend() == [c for c in order if c in categories or (c == "block" and folded)]


# --- the zoo at several depths --------------------------------------------------------------------

@pytest.mark.parametrize("spec,variant", ZOO, ids=[f"{s}:{v}" if v else s for s, v in ZOO])
def test_zoo_diagrams_show_every_unit_edge_and_cluster(spec, variant):
    graph = zoo(spec, variant)
    levels = max(len(n.name.split(".")) for n in graph.nodes)
    for depth in (1, 2, "auto", "full"):
        dot = draw(graph, depth=depth)
        level = {"full": None, "auto": resolve_depth(graph, "auto")}.get(depth, depth)
        if level is not None and level >= levels:
            level = None
        check_structure(graph, dot, level)


def test_auto_depth_fits_a_screen_and_keeps_small_nets_whole():
    auto = resolve_depth
    assert auto(zoo("lenet5.yaml"), "auto") is None and auto(zoo("vgg16.yaml"), "auto") is None
    assert auto(zoo("resnet50.yaml"), "auto") == 2  # stages as clusters, one box per bottleneck
    assert auto(zoo("googlenet.yaml"), "auto") == 1  # one box per inception module
    assert auto(zoo("efficientnet.yaml"), "auto") == 3  # one box per MBConv block
    for spec, variant in ZOO:
        dot = draw(zoo(spec, variant))
        boxes = len([n for n in dot.nodes if "/" not in n]) + len(dot.clusters) - 1
        assert boxes <= 48 or auto(zoo(spec, variant), "auto") == 1, spec
    assert draw(zoo("lenet5.yaml")).source == draw(zoo("lenet5.yaml"), depth=None).source


def test_folded_blocks_show_name_block_count_shape_and_totals():
    dot = draw(zoo("resnet18.yaml"), depth=1)
    assert dot.label("layer1").split("\n") == ["layer1", "basic ×2", "→ 64×56×56", "148K params · 462M MACs"]
    assert dot.nodes["layer1"]["shape"] == "box3d"
    dot = draw(zoo("resnet18.yaml"), depth=2)
    assert dot.clusters["layer1"]["label"] == "layer1 · basic ×2"
    assert dot.chain("layer1.0") == ["layer1"] and dot.label("layer1.0").startswith("0\nbasic\n")
    full = draw(zoo("resnet18.yaml"), depth="full")
    assert full.chain("layer2.0.downsample.0") == ["layer2", "layer2.0", "layer2.0.downsample"]
    assert text_of(full.clusters["layer2.0"]["label"]) == "layer2.0 · basic"


def test_inputs_outputs_and_title():
    dot = draw(zoo("lenet5.yaml"))
    assert dot.label("input/input") == "input\n1×32×32" and dot.label("output/fc3") == "output\n10"
    assert dot.nodes["input/input"]["shape"] == "ellipse" and dot.nodes["input/input"]["style"] == "filled"
    assert ("flatten", "fc1", "400") in dot.visible_edges()  # N×features → features
    assert "61.7K params" in text_of(dot.graph_attrs["label"])


@pytest.mark.parametrize("variant", [None, "original"])
def test_unet_skips_share_a_rank_with_their_concat(variant):
    graph = zoo("unet.yaml", variant)
    pairs = {frozenset(r) for r in draw(graph, depth=1).ranks}
    assert pairs == {frozenset(p) for p in [("inc", "up4"), ("down1", "up3"), ("down2", "up2"), ("down3", "up1")]}
    for depth in (2, 3, "full"):
        dot = draw(graph, depth=depth)
        units, *_ = expected(graph, None if depth == "full" else depth)
        unit = {n.name: k for k, m in units.items() for n in m}
        want = set()
        for k in range(1, 5):
            skip = graph.node(f"up{k}.cat").inputs[0]
            path = [skip, graph.node(skip).inputs[0]] if skip.endswith(".crop") else [skip]  # the paper crops
            want.add(frozenset(unit[x] for x in path + [f"up{k}.cat"]))
        assert {frozenset(r) for r in dot.ranks} == want


@pytest.mark.parametrize("spec", ["resnet18.yaml", "resnet50.yaml", "googlenet.yaml", "efficientnet.yaml",
                                  "inception_v2.yaml", "mobilenet_v1.yaml"])
def test_short_shortcuts_branches_and_gates_keep_their_layout(spec):
    assert draw(zoo(spec), depth="full").ranks == []


def test_no_shapes_removes_edge_labels():
    for spec in ("lenet5.yaml", "unet.yaml"):
        dot = draw(zoo(spec), shapes=False)
        assert dot.edges and all("label" not in attrs for _, _, attrs in dot.edges)


def test_show_params_and_macs():
    plain = draw(zoo("lenet5.yaml"))
    assert "params" not in plain.label("conv1")
    dot = draw(zoo("lenet5.yaml"), show=("params", "macs"))
    assert dot.label("conv1").split("\n") == ["conv 5×5, 6", "conv1", "156 params · 118K MACs"]
    assert dot.label("fc1").endswith("48.1K params · 48K MACs")
    assert draw(zoo("lenet5.yaml"), show="macs").label("act1").endswith("\n0 MACs")
    with pytest.raises(RenderError, match="flops"):
        netspec.render(zoo("lenet5.yaml"), show=("flops",))


@pytest.mark.parametrize("scope,depth", [("layer2", "full"), ("layer2", 1), ("layer2.0", "auto"),
                                         ("layer4.1.conv1", "full")])
def test_scope_keeps_only_its_nodes(scope, depth):
    graph = zoo("resnet18.yaml")
    dot = draw(graph, scope=scope, depth=depth)
    level = None if depth in ("full", "auto") else depth
    check_structure(graph, dot, level, scope)
    assert all(n.startswith((scope, "input/", "output/", "legend/")) for n in dot.nodes)


def test_scope_inception_module_and_external_inputs():
    graph = zoo("googlenet.yaml")
    dot = draw(graph, scope="inception3a", depth="full")
    check_structure(graph, dot, None, "inception3a")
    assert [n for n in dot.nodes if n.startswith("input/")] == ["input/maxpool2"]
    assert dot.nodes["input/maxpool2"]["style"] == "dashed"
    assert sum(1 for a, _, _ in dot.visible_edges() if a == "input/maxpool2") == 4  # four branches
    assert text_of(dot.clusters["inception3a"]["label"]) == "inception3a · inception"
    with pytest.raises(RenderError, match="did you mean 'inception3a'"):
        netspec.render(graph, scope="inceptoin3a")


def test_one_mode_nodes_are_dashed_with_a_note(load_spec):
    graph = load_spec("""
        name: net
        input: {shape: [3, 8, 8]}
        layers:
          - {op: conv2d, name: conv, out: 4, kernel: 3}
          - {op: dropout, name: drop, p: 0.5, mode: train}
          - {op: flatten, name: flat}
          - {op: linear, name: fc, out: 2}
    """)
    dot = draw(graph, depth="full", show=("params",))
    assert "dashed" in dot.nodes["drop"]["style"] and dot.label("drop").endswith("train only")
    assert "dashed" not in dot.nodes["conv"].get("style", "") and "only" not in dot.label("conv")
    assert dot.legend() == ["convolution", "dropout", "linear", "reshape"]


def test_rankdir_and_bad_options():
    assert "rankdir=LR" in netspec.render(zoo("lenet5.yaml"), rankdir="LR").source
    with pytest.raises(ValueError):
        netspec.render(zoo("lenet5.yaml"), rankdir="BT")
    with pytest.raises(ValueError):
        netspec.render(zoo("lenet5.yaml"), depth=0)
    assert isinstance(netspec.render(zoo("lenet5.yaml")), graphviz.Digraph)


# --- through graphviz's dot -----------------------------------------------------------------------

@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot program is not installed")
def test_svg_through_dot_is_well_formed_with_the_labels():
    svg = netspec.render(zoo("resnet18.yaml"), scope="layer2", depth="full").pipe(format="svg", encoding="utf-8")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = {t.text for t in root.iter() if t.tag.endswith("text")}
    assert {"conv 3×3 /2, 128", "batchnorm2d", "add", "layer2.0 · basic", "128×28×28"} <= texts
    assert zoo("lenet5.yaml")._repr_svg_().lstrip().startswith("<?xml")


def test_jupyter_repr_is_none_without_dot(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    assert zoo("lenet5.yaml")._repr_svg_() is None


# --- the command ----------------------------------------------------------------------------------

def no_traceback(r):
    assert "Traceback" not in r.out + r.err and "internal error" not in r.err


def test_cli_writes_dot_and_refuses_to_overwrite(cli):
    spec = ROOT / "specs" / "resnet18.yaml"
    r = cli("render", spec, "-o", "r18.dot", "--depth", "1", "--show", "params,macs")
    assert r.code == 0, r.err
    text = Path("r18.dot").read_text()
    assert text.startswith("digraph resnet18 {") and "layer4" in text
    r = cli("render", spec, "-o", "r18.dot", "--scope", "layer2")
    assert r.code == 2 and "already exists" in r.err and "--force" in r.err
    assert Path("r18.dot").read_text() == text
    r = cli("render", spec, "-o", "r18.dot", "--scope", "layer2", "--force", "--no-shapes", "--rankdir", "LR")
    assert r.code == 0, r.err
    dot = Dot(Path("r18.dot").read_text())
    assert all(n.startswith(("layer2", "input/", "output/", "legend/")) for n in dot.nodes)
    assert not [f for f in Path(".").iterdir() if f.name.startswith(".r18")]  # no temporary files left
    for bad, words in [(["--scope", "layer9"], "layer9"), (["--depth", "0"], "depth"), (["--show", "flops"], "flops")]:
        r = cli("render", spec, "-o", "other.dot", *bad)
        assert r.code == 2 and words in r.err, r.err
        no_traceback(r)
    r = cli("render", spec, "-o", "r18.jpg")
    assert r.code == 2 and ".svg, .png, .pdf or .dot" in r.err
    r = cli("render", spec, "-o", "missing/r18.svg")
    assert r.code == 2 and "cannot write 'missing/r18.svg'" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.skipif(not HAS_DOT, reason="graphviz's dot program is not installed")
def test_cli_writes_svg(cli):
    r = cli("render", ROOT / "specs" / "lenet5.yaml", "-o", "lenet.svg")
    assert r.code == 0, r.err
    root = ET.parse("lenet.svg").getroot()
    assert root.tag.endswith("svg") and "conv 5×5, 6" in Path("lenet.svg").read_text()


def test_cli_without_dot_writes_the_source_and_says_so(cli, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    monkeypatch.setenv("PATH", "")
    r = cli("render", ROOT / "specs" / "unet.yaml", "-o", "unet.svg", "--depth", "1")
    assert r.code == 1
    assert not Path("unet.svg").exists() and Path("unet.dot").read_text().startswith("digraph unet {")
    assert "`dot` program was not found" in r.err and "unet.svg was not made" in r.err
    assert "unet.dot" in r.err and "apt-get install graphviz" in r.err
    no_traceback(r)
    r = cli("render", ROOT / "specs" / "unet.yaml", "-o", "unet.png")  # the .dot is there: never replaced
    assert r.code == 2 and "already exists" in r.err
    no_traceback(r)


def test_readme_shows_the_committed_diagrams():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("lenet5", "resnet18_layer2", "googlenet_inception3a", "unet"):
        svg = ROOT / "docs" / f"{name}.svg"
        assert f"(docs/{name}.svg)" in readme and ET.parse(svg).getroot().tag.endswith("svg")
    assert "netspec render" in readme and "python tools/diagrams.py" in readme
