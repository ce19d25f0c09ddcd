"""The `netspec export`, `netspec import` and `netspec weights import` commands (registered by netspec.cli)."""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from ..options import positive_int_or

_batch = positive_int_or("dynamic")


def _interop_errors(func):
    """Report this package's errors like the CLI's own: one line (or key by key), exit status 1."""
    @functools.wraps(func)
    def wrapper(args) -> int:
        from .checkpoint import CheckpointError
        from .onnx_export import ExportError
        from .onnx_import import OnnxImportError
        try:
            return func(args)
        except (CheckpointError, ExportError, OnnxImportError) as e:
            print(f"netspec: error: {e}", file=sys.stderr)
            return 1
    return wrapper


@_interop_errors
def cmd_export(args) -> int:
    from ..options import check_writable, load_spec, write_output
    from .onnx_export import ExportError, _require_onnx, check_serialized, export_onnx
    from ..weights import load_weights

    _require_onnx()
    check_writable(args.onnx, args.force)
    graph = load_spec(args)
    weights = load_weights(args.weights, graph) if args.weights else None
    model = export_onnx(graph, weights, batch=args.batch, mode=args.mode, check=False)
    data = model.SerializeToString()
    if len(data) >= 2**31:
        raise ExportError(f"the model is {len(data) / 2**30:.1f} GiB; ONNX files without external data "
                          "stop at 2 GiB")
    check_serialized(data)
    write_output(args.onnx, data, args.force)
    source = f"weights from {args.weights}" if args.weights else "initialized weights (seed 0)"
    print(f"wrote {args.onnx}: {len(model.graph.node)} ONNX nodes, {len(model.graph.initializer)} initializers, "
          f"opset {model.opset_import[0].version}, batch {args.batch}, {args.mode} mode, {source}")
    return 0


@_interop_errors
def cmd_import(args) -> int:
    from ..options import check_writable, write_output
    from ..weights import save_weights
    from .onnx_import import import_onnx, to_spec_text

    check_writable(args.output, args.force)
    if args.weights_out:
        if Path(args.weights_out).resolve() == Path(args.output).resolve():
            from ..options import UsageError
            raise UsageError("-o and --weights-out name the same file")
        check_writable(args.weights_out, args.force)
    graph, weights = import_onnx(args.model)
    text = to_spec_text(graph, args.model)
    write_output(args.output, text, args.force)
    if args.weights_out:
        save_weights(weights, args.weights_out, {"source": str(args.model)})
    total = sum(w.size for w in weights.values())
    print(f"wrote {args.output}: {len(graph.nodes)} nodes" +
          (f"; {args.weights_out}: {len(weights)} tensors, {total:,} values" if args.weights_out else
           f" ({len(weights)} weight tensors not written: pass --weights-out FILE.safetensors)"))
    return 0


@_interop_errors
def cmd_weights_import(args) -> int:
    from .. import load
    from ..options import check_writable, parse_sets
    from ..weights import save_weights
    from .checkpoint import import_checkpoint, read_mapping

    check_writable(args.output, args.force)
    mapping = read_mapping(args.map) if args.map else None
    graph = load(args.spec, variant=args.variant, params=parse_sets(args.set))
    report = import_checkpoint(args.checkpoint, graph, mapping)
    save_weights(report.weights, args.output, {"spec": str(graph.source), "source": str(args.checkpoint)})
    total = sum(w.size for w in report.weights.values())
    notes = []
    if report.renamed:
        notes.append(f"{report.renamed} key(s) renamed by {args.map}")
    if report.ignored:
        notes.append(f"ignored {len(report.ignored)} num_batches_tracked buffer(s), which netspec does not keep")
    print(f"wrote {args.output}: {len(report.weights)} tensors, {total:,} values"
          + (f" ({'; '.join(notes)})" if notes else ""))
    return 0


def add_commands(sub, spec_options, weights_sub) -> None:
    """Add this package's subcommands: to the `netspec` subparsers, and `import` under `netspec weights`."""
    p = sub.add_parser("export", help="write a spec (and weights) as an ONNX model")
    spec_options(p)
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--weights", metavar="FILE.safetensors", help="weights (default: initialized, seed 0)")
    p.add_argument("--batch", type=_batch, default=1, metavar="N|dynamic",
                   help="batch size baked into the model, or 'dynamic' (default 1)")
    p.add_argument("--mode", choices=["eval", "train"], default="eval",
                   help="eval (default): inference; train: batch statistics and dropout")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="turn an ONNX model into a (flat) spec and its weights")
    p.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to read")
    p.add_argument("-o", "--output", required=True, metavar="SPEC.yaml", help="the spec to write")
    p.add_argument("--weights-out", metavar="W.safetensors", help="also write the model's weights here")
    p.add_argument("--force", action="store_true", help="replace output files that exist")
    p.set_defaults(func=cmd_import)

    w = weights_sub.add_parser("import", help="map a PyTorch checkpoint (state_dict) onto a spec")
    w.add_argument("checkpoint", metavar="CKPT", help="a state_dict: .safetensors, or .pt/.pth (needs torch)")
    w.add_argument("-o", "--output", required=True, metavar="FILE.safetensors")
    w.add_argument("--spec", required=True, metavar="SPEC", help="the spec the weights are for")
    w.add_argument("--variant", "-V", help="a variant declared in the spec")
    w.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a spec parameter (repeatable)")
    w.add_argument("--map", metavar="MAPPING.yaml",
                   help="renames: `rename: {old: new}` and `regex: [[pattern, replacement], ...]`")
    w.add_argument("--force", action="store_true", help="replace the output file if it exists")
    w.set_defaults(func=cmd_weights_import)
