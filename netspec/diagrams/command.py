"""The `netspec render` command (registered by netspec.cli)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..options import UsageError, check_writable, load_spec, positive_int_or, write_output

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
INSTALL = "Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; others: https://graphviz.org/download/"


def add_commands(sub, spec_options) -> None:
    """Add this package's subcommands to the `netspec` parser's subparsers."""
    p = sub.add_parser("render", help="draw the architecture as a diagram: svg, png, pdf or dot (graphviz)")
    spec_options(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.svg|png|pdf|dot",
                   help="the diagram; the format follows the extension (.dot: graphviz source, no `dot` needed)")
    p.add_argument("--depth", type=_depth, default="auto",
                   help="name levels drawn before blocks fold into one node: N, auto (default: fits one screen) "
                        "or full; with --scope, levels below the scope")
    p.add_argument("--rankdir", choices=["TB", "LR"], default="TB", help="top to bottom (default) or left to right")
    p.add_argument("--no-shapes", action="store_true", help="no tensor shapes on the edges")
    p.add_argument("--show", type=_show, default=(), metavar="params,macs",
                   help="figures to print in every node: params, macs or both")
    p.add_argument("--scope", metavar="NAME", help="draw only the nodes under this name (layer2, inception3a)")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_render)


_depth = positive_int_or("auto", "full")


def _show(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    for s in items:
        if s not in ("params", "macs"):
            raise argparse.ArgumentTypeError(f"cannot show '{s}': choose from params, macs (comma-separated)")
    return items


def cmd_render(args) -> int:
    from .diagram import RenderError, render

    suffix = Path(args.output).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot tell the format of '{args.output}': name it .svg, .png, .pdf or .dot")
    fmt = FORMATS[suffix]
    check_writable(args.output, args.force)  # before any work
    graph = load_spec(args)
    try:
        diagram = render(graph, depth=args.depth, rankdir=args.rankdir, shapes=not args.no_shapes,
                         show=args.show, scope=args.scope)
    except RenderError as e:
        raise UsageError(str(e)) from None
    if fmt == "dot":
        write_output(args.output, diagram.source, args.force)
        print(f"wrote {args.output}", file=sys.stderr)
        return 0
    import graphviz
    data = None
    if shutil.which("dot") is not None:
        try:
            data = diagram.pipe(format=fmt)
        except graphviz.ExecutableNotFound:
            data = None
        except graphviz.CalledProcessError as e:
            detail = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
            print(f"netspec: error: graphviz's dot failed to make {args.output}"
                  + (f": {detail[-1]}" if detail else ""), file=sys.stderr)
            return 1
    if data is None:
        return _without_dot(args, diagram.source, fmt)
    write_output(args.output, data, args.force)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _without_dot(args, source: str, fmt: str) -> int:
    """No `dot` program: write the diagram's source next to where the image was asked for, and say so."""
    dot_path = str(Path(args.output).with_suffix(".dot"))
    try:
        write_output(dot_path, source, args.force)
    except UsageError as e:
        raise UsageError(f"graphviz's `dot` program was not found, so {args.output} was not made; "
                         f"and its source could not be written either: {e}") from None
    print(f"netspec: error: graphviz's `dot` program was not found, so {args.output} was not made; "
          f"wrote the diagram's source to {dot_path} instead.\n"
          f"  Install graphviz ({INSTALL}) and run this again, or convert the source yourself: dot -T{fmt} {dot_path} -o {args.output}",
          file=sys.stderr)
    return 1
