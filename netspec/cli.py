"""The `netspec` command."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import yaml

from .spec.errors import COMMAND_LINE, Diagnostic, SpecError


class UsageError(Exception):
    pass


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """`--set k=v` values, typed as YAML types them: 10 → int, 0.5 → float, true → bool."""
    values: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects name=value, got '{item}'")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, (dict, list)) and not isinstance(value, list):
            value = text
        values[key.strip()] = value
    return values


def write_output(path: str, text: str) -> None:
    """Write atomically, so a failure never leaves a half-written or emptied file behind."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write '{path}': it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as e:
        raise UsageError(f"cannot write '{path}': {e.strerror or e}") from None


def _load(args):
    from . import load
    return load(args.spec, variant=args.variant, params=parse_sets(args.set))


def cmd_check(args) -> int:
    from .spec.load import variants_of
    from . import load
    failed = 0
    for spec in args.specs:
        problems: list[Diagnostic] = []
        variants = variants_of(spec)
        checked = []
        for variant in [None] + variants:
            try:
                load(spec, variant=variant, params=parse_sets(args.set))
                checked.append(variant or "base")
            except SpecError as e:
                suffix = f" (variant {variant})" if variant else ""
                problems += [Diagnostic(d.location, d.message + suffix, d.notes) for d in e.diagnostics]
        if problems:
            failed += 1
            print(SpecError(problems).format(), file=sys.stderr)
        else:
            print(f"ok  {spec}" + (f"  (variants: {', '.join(checked)})" if variants else ""))
    if len(args.specs) > 1:
        print(f"{len(args.specs) - failed} of {len(args.specs)} specs ok", file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def cmd_summary(args) -> int:
    from . import summary
    from .report import explain, table, to_json
    graph = _load(args)
    s = summary(graph, batch=args.batch, mode=args.mode)
    if args.json:
        print(json.dumps(to_json(s, args.depth), indent=2))
    elif args.explain:
        print(explain(s))
    else:
        print(table(s, args.depth))
    return 0


def cmd_compare(args) -> int:
    from . import load, summary
    from .report import compare
    if len(args.specs) < 2:
        raise UsageError("compare needs at least two specs")
    summaries, labels = [], []
    for item in args.specs:
        spec, _, variant = item.partition(":")
        graph = load(spec, variant=variant or None, params=parse_sets(args.set))
        summaries.append(summary(graph, batch=args.batch))
        labels.append(Path(spec).stem + (f":{variant}" if variant else ""))
    print(compare(summaries, labels))
    return 0


def cmd_expand(args) -> int:
    from .spec.flat import to_flat_yaml
    text = to_flat_yaml(_load(args))
    if args.output:
        write_output(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_schema(args) -> int:
    from .spec.jsonschema import spec_json_schema
    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if args.output:
        write_output(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_ops(args) -> int:
    from . import ops
    for op in ops.all_ops():
        attrs = ", ".join(op.attrs.model_fields) or "-"
        alias = f" (alias {', '.join(op.aliases)})" if op.aliases else ""
        print(f"{op.name:<20} {op.category:<14} attrs: {attrs}{alias}\n{'':<20} {op.doc}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netspec", description="A declarative network compiler: CNNs as YAML.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def spec_options(p, many=False):
        if many:
            p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files")
        else:
            p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
            p.add_argument("--variant", "-V", help="a variant declared in the spec")
        p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a spec parameter (repeatable)")

    p = sub.add_parser("check", help="validate specs and every variant they declare")
    spec_options(p, many=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="per-layer table: output shape, params, MACs, receptive field")
    spec_options(p)
    p.add_argument("--depth", type=_positive, help="fold layers below this many name levels into their block")
    p.add_argument("--batch", type=_positive, default=1, help="batch size (default 1)")
    p.add_argument("--mode", choices=["eval", "train"], default="eval", help="which mode's graph (default eval)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="machine-readable output")
    group.add_argument("--explain", action="store_true", help="show each node's formulas with their numbers")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("compare", help="params, MACs and more of several specs side by side")
    p.add_argument("specs", nargs="+", metavar="SPEC[:VARIANT]", help="two or more specs (optionally spec:variant)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter of every spec")
    p.add_argument("--batch", type=_positive, default=1, help="batch size (default 1)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("expand", help="print the flat form (no blocks, repeats or expressions)")
    spec_options(p)
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=cmd_expand)

    p = sub.add_parser("schema", help="write the JSON Schema of spec files (for editor completion)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("ops", help="list the built-in ops and their attributes")
    p.set_defaults(func=cmd_ops)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(e.format(), file=sys.stderr)
        count = len(e.diagnostics)
        print(f"{count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"netspec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug in netspec, not the user's mistake: say so, without a traceback
        if os.environ.get("NETSPEC_DEBUG"):
            raise
        print(f"netspec: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in netspec, not in your spec; please report it (NETSPEC_DEBUG=1 shows the traceback).",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
