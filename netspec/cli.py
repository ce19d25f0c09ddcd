"""The `netspec` command."""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
from pathlib import Path
from typing import Sequence


from .options import (UsageError, check_writable, include_option, load_spec, memory_size, parse_sets, positive_int,
                      seed_int, write_output)
from .spec.errors import Diagnostic, SpecError



def cmd_check(args) -> int:
    from .spec.load import library_blocks, variants_of
    from . import load
    failed = 0
    include = args.include or ()
    for spec in args.specs:
        problems: list[Diagnostic] = []
        try:
            blocks = library_blocks(spec, include)
        except SpecError as e:
            failed += 1
            print(e.format(), file=sys.stderr)
            continue
        if blocks is not None:
            print(f"ok  {spec}  (block library: {', '.join(blocks)})")
            continue
        variants = variants_of(spec)
        checked = []
        for variant in [None] + variants:
            try:
                load(spec, variant=variant, params=parse_sets(args.set), include=include)
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
    graph = load_spec(args)
    s = summary(graph, batch=args.batch, mode=args.mode)
    if args.json:
        print(json.dumps(to_json(s, args.depth), indent=2))
    elif args.explain:
        print(explain(s))
    else:
        print(table(s, args.depth))
    return 0


def cmd_run(args) -> int:
    import time

    import numpy as np

    from . import compile
    from .inputs import load_input, planned_batch
    from .resources import check_fits, run_needs
    from .threads import set_threads

    graph = load_spec(args)
    if args.output:
        check_writable(args.output, args.force)
        if len(graph.outputs) > 1 and not args.output.endswith(".npz"):
            raise UsageError("this network has several outputs: write them to a .npz file")
    # what the run will hold, against what it may have, before anything is allocated
    batch = planned_batch(args.input, graph, args.batch)
    check_fits(run_needs(graph.active(args.mode), batch, args.backend), args.max_memory)
    x = load_input(args.input, graph, args.batch, args.seed)
    with set_threads(args.threads):
        started = time.perf_counter()
        exe = compile(graph, backend=args.backend, mode=args.mode, weights=args.weights, seed=args.seed)
        outputs = exe.run(x)  # the first run compiles kernels that are not cached yet
        first = time.perf_counter() - started
        exe.run(x)  # (untimed: on the CPU the second run compiles the network into a program)
        times = []
        while len(times) < args.repeat and (sum(times) < 2.0 or len(times) < 1):
            t0 = time.perf_counter()
            exe.run(x)
            times.append(time.perf_counter() - t0)
    source = args.input or f"random, seed {args.seed}"
    print(f"{graph.name}: input {'×'.join(map(str, x.shape))} ({source}), {args.backend} backend, {args.mode} mode")
    for name, y in outputs.items():
        print(f"output {name}: {'×'.join(map(str, y.shape))}")
        print(_describe_output(y))
    median = float(np.median(times))
    runs = f"median of {len(times)} run{'s' if len(times) != 1 else ''} after two warm-up runs"
    print(f"time per batch: {median * 1e3:,.1f} ms ({runs}, batch {x.shape[0]}); "
          f"first run incl. setup {first:,.2f} s")
    if args.output:
        import io
        buffer = io.BytesIO()
        if args.output.endswith(".npz"):
            np.savez(buffer, **outputs)
        else:
            np.save(buffer, next(iter(outputs.values())))
        write_output(args.output, buffer.getvalue(), args.force)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _describe_output(y) -> str:
    import numpy as np
    if y.ndim == 2 and y.shape[1] > 1:  # a classifier: the top classes of the first sample
        k = min(5, y.shape[1])
        top = np.argsort(-y[0], kind="stable")[:k]
        scores = "  ".join(f"{int(c)} ({y[0, c]:.4g})" for c in top)
        more = f" (first of {y.shape[0]} samples)" if y.shape[0] > 1 else ""
        return f"  top-{k} classes{more}: {scores}"
    return f"  min {y.min():.4g}  mean {y.mean():.4g}  max {y.max():.4g}"


def cmd_compile(args) -> int:
    from .ir.printer import format_graph
    from .passes.manager import optimize
    from .weights import init_weights, load_weights

    graph = load_spec(args)
    weights = load_weights(args.weights, graph) if args.weights else init_weights(graph, 0)
    active = graph.active(args.mode)
    records = []
    losses = None
    if args.mode == "train":  # the training graph: forward, loss and backward
        from .passes.autodiff import default_loss, parse_losses
        losses = parse_losses(active, args.loss or default_loss(active))
    elif args.loss:
        raise UsageError("--loss is for --mode train")
    optimized, _ = optimize(active, weights, args.mode, records, losses)
    if args.dump_passes:
        print(f"# input ({len(active.nodes)} nodes, {args.mode} mode)\n{format_graph(active)}\n")
        for record in records:
            print(f"# after {record.describe()}")
            for label, names in (("removed", record.removed), ("added", record.added), ("changed", record.changed)):
                if names:
                    print(f"#   {label}: {', '.join(names)}")
            print(format_graph(record.graph) + "\n")
    for record in records:
        print(record.describe(), file=sys.stderr if args.dump_passes else sys.stdout)
    return 0


def cmd_weights_init(args) -> int:
    from .weights import init_weights, save_weights
    check_writable(args.output, args.force)
    graph = load_spec(args)
    weights = init_weights(graph, args.seed)
    save_weights(weights, args.output, {"spec": str(graph.source), "seed": str(args.seed)})
    total = sum(w.size for w in weights.values())
    print(f"wrote {args.output}: {len(weights)} tensors, {total:,} values (seed {args.seed})")
    return 0


def cmd_compare(args) -> int:
    from . import load, summary
    from .report import compare
    if len(args.specs) < 2:
        raise UsageError("compare needs at least two specs")
    summaries, labels = [], []
    for item in args.specs:
        spec, _, variant = item.rpartition(":") if ":" in item and not Path(item).exists() else (item, "", "")
        graph = load(spec, variant=variant or None, params=parse_sets(args.set), include=args.include or ())
        summaries.append(summary(graph, batch=args.batch))
        labels.append(Path(spec).stem + (f":{variant}" if variant else ""))
    print(compare(summaries, labels))
    return 0


def emit(text: str, args) -> int:
    """Print `text`, or write it to -o FILE."""
    if args.output:
        write_output(args.output, text, args.force)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_expand(args) -> int:
    from .spec.flat import to_flat_yaml
    return emit(to_flat_yaml(load_spec(args)), args)


def cmd_schema(args) -> int:
    from .spec.jsonschema import spec_json_schema
    return emit(json.dumps(spec_json_schema(), indent=2) + "\n", args)


def cmd_ops(args) -> int:
    from . import ops
    for op in ops.all_ops():
        attrs = ", ".join(op.attrs.model_fields) or "-"
        alias = f" (alias {', '.join(op.aliases)})" if op.aliases else ""
        print(f"{op.name:<20} {op.category:<14} attrs: {attrs}{alias}\n{'':<20} {op.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="netspec", description="A declarative network compiler: CNNs as YAML.")
    parser.add_argument("--version", action="version", version=f"netspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def spec_options(p, many=False):
        if many:
            p.add_argument("specs", nargs="+", metavar="SPEC", help="spec files")
        else:
            p.add_argument("spec", metavar="SPEC", help="spec file (YAML)")
            p.add_argument("--variant", "-V", help="a variant declared in the spec")
        p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a spec parameter (repeatable)")
        include_option(p)

    p = sub.add_parser("check", help="validate specs and every variant they declare")
    spec_options(p, many=True)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("summary", help="per-layer table: output shape, params, MACs, receptive field")
    spec_options(p)
    p.add_argument("--depth", type=positive_int, help="fold layers below this many name levels into their block")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.add_argument("--mode", choices=["eval", "train"], default="eval", help="which mode's graph (default eval)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="machine-readable output")
    group.add_argument("--explain", action="store_true", help="show each node's formulas with their numbers")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("run", help="run a spec (CPU by default): output shape, top classes, time per batch")
    spec_options(p)
    p.add_argument("--weights", metavar="FILE.safetensors", help="weights (default: initialized from --seed)")
    p.add_argument("--input", metavar="FILE", help="a .npy batch (N×C×H×W or C×H×W) or an image (png, jpg, ...)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size for random or image input (default 1)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed for weights, random input and dropout (default 0)")
    p.add_argument("--mode", choices=["eval", "train"], default="eval", help="eval (default) or train")
    p.add_argument("--backend", choices=["cpu", "cuda", "reference"], default="cpu",
                   help="cpu: Numba kernels (default); cuda: numba.cuda kernels on an NVIDIA GPU; reference: plain numpy")
    p.add_argument("--repeat", type=positive_int, default=5,
                   help="timed runs after the warm-up (default 5; fewer once 2 s have been spent)")
    p.add_argument("--threads", type=positive_int, help="threads for BLAS and the kernels (default: all cores)")
    p.add_argument("--max-memory", type=memory_size, metavar="SIZE",
                   help="refuse a run that needs more memory than this, e.g. 8G (default: the memory available)")
    p.add_argument("--output", "-o", metavar="FILE.npy", help="save the output (.npz for several outputs)")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("compile", help="run the optimization passes; --dump-passes prints the graph after each")
    spec_options(p)
    p.add_argument("--mode", choices=["eval", "train"], default="eval", help="eval (default) or train")
    p.add_argument("--weights", metavar="FILE.safetensors", help="weights to fold (default: initialized)")
    p.add_argument("--dump-passes", action="store_true", help="print the graph after each pass, with what changed")
    p.add_argument("--loss", choices=["cross_entropy", "mse"],
                   help="train mode: the loss on the output (default: cross_entropy where it fits, else mse)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("weights", help="weights files: `weights init` (initialize), `weights import` (PyTorch)")
    wsub = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    w = wsub.add_parser("init", help="write deterministically initialized weights for a spec")
    spec_options(w)
    w.add_argument("-o", "--output", required=True, metavar="FILE.safetensors")
    w.add_argument("--seed", type=seed_int, default=0, help="seed (default 0)")
    w.add_argument("--force", action="store_true", help="replace the output file if it exists")
    w.set_defaults(func=cmd_weights_init)

    from .interop.command import add_commands as add_interop_commands
    from .diagrams.command import add_commands as add_render_commands
    from .training.command import add_commands as add_train_commands
    from .predictions import add_commands as add_predict_commands
    add_render_commands(sub, spec_options)
    add_interop_commands(sub, spec_options, wsub)
    add_train_commands(sub, spec_options)
    add_predict_commands(sub, spec_options)

    p = sub.add_parser("compare", help="params, MACs and more of several specs side by side")
    p.add_argument("specs", nargs="+", metavar="SPEC[:VARIANT]", help="two or more specs (optionally spec:variant)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a parameter of every spec")
    include_option(p)
    p.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("expand", help="print the flat form (no blocks, repeats or expressions)")
    spec_options(p)
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_expand)

    p = sub.add_parser("schema", help="write the JSON Schema of spec files (for editor completion)")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("ops", help="list the built-in ops and their attributes")
    p.set_defaults(func=cmd_ops)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    from .backends.cuda import BackendUnavailable
    from .backends.executor import InputError
    from .ops.registry import RunError
    from .passes.autodiff import TrainingError
    from .cluster import ClusterError
    from .predictions import PredictError
    from .resources import ResourceError
    from .training.data import DataError
    from .training.loop import TrainingStopped
    from .training.run_folder import RunFolderError
    from .weights import WeightsError
    return (InputError, RunError, WeightsError, BackendUnavailable, ResourceError, TrainingError, DataError,
            TrainingStopped, RunFolderError, PredictError, ClusterError)


def main(argv: Sequence[str] | None = None) -> int:
    # At exit the interpreter runs full garbage collections over every object still alive, and after
    # a network was compiled that is Numba's and LLVM's many objects: 0.5–0.6 s of a warm
    # `netspec run`. Freezing them first skips those passes (the process is ending; nothing is lost).
    atexit.unregister(gc.freeze)  # (once per process, however often main is called)
    atexit.register(gc.freeze)
    for stream in (sys.stdout, sys.stderr):  # a file name from the command line may not be valid UTF-8:
        if hasattr(stream, "reconfigure"):  # print it escaped, not fail (a strict UTF-8 locale would)
            stream.reconfigure(errors="backslashreplace")
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
    except user_errors() as e:  # bad tensors, weights files, or a backend that lacks an op
        print(f"netspec: error: {e}", file=sys.stderr)
        return 1
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
