"""Where a network's time goes, layer by layer, in netspec and in ONNX Runtime (its own profiler).

    python tools/profile_layers.py mobilenet_v1 --batch 1            # every layer, slowest gaps first
    python tools/profile_layers.py resnet50 --batch 8 --top 15

netspec's side: the executor's loop run many times with each step timed (median per step, so a
step's time includes its plan's Python, a few µs, but not the loop's). ONNX Runtime's side: the
session's profile (SessionOptions.enable_profiling), its kernel times per node, median over the
same number of runs. Layers are matched by name: ONNX Runtime keeps the name of the node it fused
others into (a convolution absorbs its batch norm and activation, as in netspec). Rows list both
times and their difference, largest difference first; unmatched layers are listed on their own
side. Both engines run on the same threads, one after the other, never together. The totals are
sums of per-layer medians, not a run's time (for that, tools/bench.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def netspec_layers(exe, x: np.ndarray, runs: int) -> dict[str, float]:
    """{step's node name: median µs} over `runs` runs of the executor's loop."""
    from netspec.backends import executor
    times: dict[str, list[float]] = defaultdict(list)
    real = executor.Executable._run

    def timed(self, values, outs, done, *rest):
        for step, out, nothing in zip(self.plan, outs, done):
            args = [values[i] for i in step.node.inputs]
            t0 = time.perf_counter()
            if nothing:
                values[step.node.name] = out
            else:
                values[step.node.name] = step.prepared(args, out)
            times[step.node.name].append((time.perf_counter() - t0) * 1e6)
        return {name: values[name] for name in self.graph.outputs}
    exe.run(x)
    executor.Executable._run = timed
    try:
        exe._programs = None  # (the loop, not the compiled program: it has no per-layer times)
        for _ in range(runs):
            exe.run(x)
    finally:
        executor.Executable._run = real
    return {name: statistics.median(t) for name, t in times.items()}


def ort_layers(graph, weights, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """{node name: median µs} from ONNX Runtime's profile of `runs` runs."""
    import onnxruntime as ort
    from netspec.interop.onnx_export import export_onnx
    model = export_onnx(graph, weights, batch=x.shape[0], check=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(3):
            session.run(None, {name: x})
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"][:-len("_kernel_time")]].append(event["dur"])
    return {node: statistics.median(t[-runs:]) for node, t in times.items()}


def per_netspec_layer(graph, ours: dict[str, str], theirs: dict[str, float]) -> dict[str, float]:
    """ONNX Runtime's times summed per netspec layer. Its fused nodes are named after their last
    node (plus `_nchwc` in its blocked layout, or `fused ` before), or after a node and what it
    made of it (`x.2/QuickGeluFusion/`), netspec's after their first, the convolution: a
    node netspec absorbed (batch norm, activation, residual add) is traced back through its
    inputs to the netspec layer that took it over."""
    inputs = {node.name: node.inputs for node in graph.nodes}

    def owner(name: str, depth: int = 0) -> str | None:
        if name in ours:
            return name
        if name not in inputs or depth > 8:
            return None
        found = [owner(i, depth + 1) for i in inputs[name]]
        fused = [f for f in found if f is not None and ours[f].startswith("fused")]
        return (fused or [f for f in found if f is not None] or [None])[-1]
    summed: dict[str, float] = defaultdict(float)
    for name, us in theirs.items():
        base = name[:-len("_nchwc")] if name.endswith("_nchwc") else name
        base = base[len("fused "):] if base.startswith("fused ") else base
        base = base.split("/")[0]  # (a node it made of one of ours: `x.2/QuickGeluFusion/`, a SiLU)
        summed[owner(base) or name] += us
    return dict(summed)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="a zoo name or a spec file")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=0, help="only the N largest differences")
    args = parser.parse_args(argv)

    import netspec
    from netspec.threads import set_threads
    from netspec.weights import init_weights
    path = Path(args.spec) if Path(args.spec).exists() else ROOT / "specs" / f"{args.spec}.yaml"
    graph = netspec.load(path)
    weights = init_weights(graph)
    dims = next(iter(graph.inputs.values())).dims
    x = np.random.default_rng(0).standard_normal((args.batch,) + dims, dtype=np.float32)
    with set_threads(args.threads):
        exe = netspec.compile(graph, weights=weights, progress=False)
        ours = netspec_layers(exe, x, args.runs)
        theirs = ort_layers(graph.active("eval"), weights, x, args.threads, args.runs)
    kinds = {node.name: node.op for node in exe.graph.nodes}
    theirs = per_netspec_layer(graph.active("eval"), kinds, theirs)
    both = [(ours[n] - theirs[n], n) for n in ours if n in theirs]
    both.sort(reverse=True)
    shown = both[:args.top] if args.top else both
    print(f"{'layer':40} {'op':18} {'netspec µs':>11} {'ORT µs':>9} {'diff':>9}")
    for diff, name in shown:
        print(f"{name[:40]:40} {kinds[name][:18]:18} {ours[name]:11.1f} {theirs[name]:9.1f} {diff:+9.1f}")
    alone = [n for n in ours if n not in theirs and ours[n] >= 1.0]
    if alone:
        print("\nnetspec only: " + ", ".join(f"{n} ({kinds[n]}) {ours[n]:.1f}" for n in alone))
    missing = [n for n in theirs if n not in ours and theirs[n] >= 1.0]
    if missing:
        print("ONNX Runtime only: " + ", ".join(f"{n} {theirs[n]:.1f}" for n in missing))
    print(f"\ntotal: netspec {sum(ours.values()):.0f} µs, ONNX Runtime {sum(theirs.values()):.0f} µs "
          f"(matched layers: {sum(ours[n] for _, n in both):.0f} against {sum(theirs[n] for _, n in both):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
