"""Presenting an analysis: the summary table (optionally folded by depth), JSON, and --explain."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .ir.types import TensorType
from .passes.analysis import BYTES, Field, NodeStats, Summary, taps


@dataclass
class Row:
    name: str
    op: str
    type: TensorType
    params: int
    buffers: int
    macs: int
    field: Field
    activation_bytes: int


def fold(summary: Summary, depth: int | None) -> list[Row]:
    """Rows of the table; with `depth`, nodes deeper than `depth` name levels fold into their scope."""
    rows: list[Row] = []
    key_of_last = None
    for r in summary.rows:
        parts = r.name.split(".")
        if depth is None or len(parts) <= depth:
            rows.append(Row(r.name, r.label, r.type, r.params, r.buffers, r.macs, r.field, r.activation_bytes))
            key_of_last = None
            continue
        key = ".".join(parts[:depth])
        if key == key_of_last:
            last = rows[-1]
            last.type, last.field = r.type, r.field
            last.params += r.params
            last.buffers += r.buffers
            last.macs += r.macs
            last.activation_bytes += r.activation_bytes
        else:
            rows.append(Row(key, _scope_label(summary, key), r.type, r.params, r.buffers, r.macs, r.field,
                            r.activation_bytes))
            key_of_last = key
    return rows


def _scope_label(summary: Summary, key: str) -> str:
    info = summary.graph.scopes.get(key)
    if info is None:
        return "…"
    if info.kind == "repeat":
        return f"{info.label} ×{info.count}"
    return info.label


def _n(x: int) -> str:
    return f"{x:,}" if x else "-"


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.1f} MiB"


def table(summary: Summary, depth: int | None = None) -> str:
    g = summary.graph
    rows = fold(summary, depth)
    header = ("Layer", "Op", "Output shape", "Params", "MACs", "RF", "Jump")
    body = [(r.name, r.op, str(r.type), _n(r.params), _n(r.macs), str(r.field), r.field.jump_str()) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    right = {3, 4, 5, 6}

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    # "input 1×3×224×224" for the usual single input named `input`; the names otherwise
    named = [f"{name} {t}" if name != "input" or len(g.inputs) > 1 else str(t) for name, t in g.inputs.items()]
    inputs = ("input " if len(named) == 1 else "inputs ") + ", ".join(named)
    title = f"{g.name}" + (f" (variant {g.variant})" if g.variant else "")
    rule = "─" * len(line(header))
    out = [f"{title}: {inputs}, {summary.mode} mode", rule, line(header), rule]
    out += [line(b) for b in body]
    out += [rule] + totals(summary)
    return "\n".join(out)


def totals(summary: Summary) -> list[str]:
    elements = summary.activation_bytes // BYTES
    lines = [
        f"Params:      {summary.params:,} trainable"
        + (f" + {summary.buffers:,} non-trainable (running statistics)" if summary.buffers else ""),
        f"MACs:        {summary.macs:,} multiply-accumulates at batch {summary.batch} "
        f"(FLOPs = 2 × MACs = {summary.flops:,})",
        f"Activations: {elements:,} elements = {mib(summary.activation_bytes)} fp32 (all outputs + input, no reuse); "
        f"planned peak {mib(summary.planned_peak_bytes)} (buffers reused after their last use, elementwise in place)",
        f"Weights:     {mib((summary.params + summary.buffers) * BYTES)} fp32",
    ]
    if summary.mode == "train":
        lines.append(f"Training:    planned step peak {mib(summary.training_step_bytes)} at batch {summary.batch} "
                     f"(activations kept for the backward, their gradients and the parameters'; optimizer state "
                     f"excluded), against {mib(summary.planned_peak_bytes)} for the forward pass alone")
    return lines


def to_json(summary: Summary, depth: int | None = None) -> dict:
    g = summary.graph
    rows = fold(summary, depth)
    return {
        "name": g.name,
        "variant": g.variant,
        "spec": g.source,
        "params_used": g.params,
        "batch": summary.batch,
        "mode": summary.mode,
        "inputs": {name: list(t.shape) for name, t in g.inputs.items()},
        "outputs": {name: list(g.type_of(name).shape) for name in g.outputs},
        "totals": {
            "params": summary.params,
            "non_trainable": summary.buffers,
            "macs": summary.macs,
            "flops": summary.flops,
            "activation_elements": summary.activation_bytes // BYTES,
            "activation_bytes": summary.activation_bytes,
            "planned_peak_bytes": summary.planned_peak_bytes,
            "training_step_bytes": summary.training_step_bytes,
        },
        "nodes": [{
            "name": r.name, "op": r.op, "output": list(r.type.shape), "params": r.params,
            "non_trainable": r.buffers, "macs": r.macs, "flops": 2 * r.macs,
            "activation_bytes": r.activation_bytes,
            "receptive_field": _field_json(r.field),
        } for r in rows],
    }


def _field_json(f: Field) -> dict:
    def num(x: Fraction):
        return int(x) if x.denominator == 1 else float(x)
    return {"size": [num(v) for v in f.size], "jump": [num(v) for v in f.jump], "global": f.is_global}


# --- --explain --------------------------------------------------------------------------------

def _product(symbols: list[str], values: list[int]) -> tuple[str, str]:
    return "·".join(symbols), "·".join(str(v) for v in values)


def explain_node(r: NodeStats) -> list[str]:
    lines = [f"{r.name}  ({r.label})  → {r.type}" + (f"  [{r.mode} only]" if r.mode else "")]
    trainable = {k: p for k, p in r.param_specs.items() if p.trainable}
    fixed = {k: p for k, p in r.param_specs.items() if not p.trainable}
    if trainable:
        sym = " + ".join(_product(list(p.symbols), list(p.shape))[0] for p in trainable.values())
        num = " + ".join(_product(list(p.symbols), list(p.shape))[1] for p in trainable.values())
        names = ", ".join(f"{k} {'×'.join(map(str, p.shape))}" for k, p in trainable.items())
        lines.append(f"  params = {sym} = {num} = {r.params:,}   ({names})")
    if fixed:
        names = " + ".join(f"{k} {p.size:,}" for k, p in fixed.items())
        lines.append(f"  non-trainable = {names} = {r.buffers:,}")
    if r.mac_factors:
        sym, num = _product([f.symbol for f in r.mac_factors], [f.value for f in r.mac_factors])
        lines.append(f"  MACs   = {sym} = {num} = {r.macs:,}   (FLOPs = 2 × MACs = {2 * r.macs:,})")
    dims = "·".join(str(d) for d in r.type.shape)
    lines.append(f"  memory = {dims} × {BYTES} B = {r.activation_bytes:,} B")
    lines.append("  RF     = " + _explain_field(r))
    return lines


def _explain_field(r: NodeStats) -> str:
    f, fin, w = r.field, r.field_in, r.window
    if f.is_global:
        return "global (the node sees its whole input)"
    if w is None or fin is None:
        return f"{f} (unchanged), jump {f.jump_str()}"
    parts = []
    for i, axis in ((0, "h"), (1, "w")):
        k, s = w.kernel[i], w.stride[i]
        if w.transposed:
            parts.append(f"{axis}: r + (taps-1)·j = {_frac(fin.size[i])} + ({taps(w, i)}-1)·{_frac(fin.jump[i])}"
                         f" = {_frac(f.size[i])}, jump {_frac(fin.jump[i])}/{s} = {_frac(f.jump[i])}")
        else:
            parts.append(f"{axis}: r + (k-1)·j = {_frac(fin.size[i])} + ({k}-1)·{_frac(fin.jump[i])} = "
                         f"{_frac(f.size[i])}, jump {_frac(fin.jump[i])}·{s} = {_frac(f.jump[i])}")
    return parts[0][3:] if parts[0][2:] == parts[1][2:] else "; ".join(parts)


def _frac(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def explain(summary: Summary) -> str:
    out = []
    for r in summary.rows:
        out += explain_node(r)
    out.append("")
    out += totals(summary)
    return "\n".join(out)


# --- compare ----------------------------------------------------------------------------------

def compare(summaries: list[Summary], labels: list[str]) -> str:
    """Side by side: params, MACs, activations, output shape and receptive field of several networks."""
    def out_field(s: Summary) -> str:
        last = s.rows[-1] if s.rows else None
        return f"{last.field} / {last.field.jump_str()}" if last else "-"

    metrics = [
        ("params", lambda s: f"{s.params:,}", lambda s: s.params),
        ("MACs", lambda s: f"{s.macs:,}", lambda s: s.macs),
        ("activations (elements)", lambda s: f"{s.activation_bytes // BYTES:,}", lambda s: s.activation_bytes),
        ("layers", lambda s: f"{len(s.rows)}", lambda s: len(s.rows)),
        ("output", lambda s: ", ".join(str(s.graph.type_of(o)) for o in s.graph.outputs), None),
        ("receptive field / jump", out_field, None),
    ]
    header = ["", *labels] + (["ratio"] if len(summaries) == 2 else [])
    rows = []
    for name, text, value in metrics:
        row = [name] + [text(s) for s in summaries]
        if len(summaries) == 2:
            a, b = (value(s) for s in summaries) if value else (None, None)
            row.append(f"{b / a:.3g}×" if value and a else "")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    note = [f"(ratio = {labels[1]} / {labels[0]}; MACs at batch {summaries[0].batch}, {summaries[0].mode} mode)"] \
        if len(summaries) == 2 else []
    return "\n".join([fmt(header), *(fmt(r) for r in rows), *note])
