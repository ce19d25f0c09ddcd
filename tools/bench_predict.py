"""Throughput and memory of `netspec predict`, against `netspec run`'s time per batch.

    .venv/bin/python tools/bench_predict.py throughput specs/lenet5.yaml --count 10000 --batch 64 [--cluster local:2] [--npy]
    .venv/bin/python tools/bench_predict.py memory specs/lenet5.yaml --counts 1000 10000 --batch 64
    .venv/bin/python tools/bench_predict.py ray specs/lenet5.yaml --count 10000 --batch 64 --workers 2

Inputs are generated images (PNG for 32×32 and smaller, JPEG above; smooth random patterns), or with
--npy one .npy batch of random values, made once into --data (default /tmp/netspec-bench-predict). `throughput` takes turns in rounds:
`run` (Executable.run on one batch, the median time per batch, as `netspec run` reports it; the mean of
its rates just before and just after predict), predict in one process, and with --cluster predict on Dask; each predict's rate excludes compiling (the workers
compile before the clock starts), and the cluster's wall time with its start is reported beside.
Ratios are medians of the rounds' ratios (the machine is shared and noisy). `memory` runs predict
in a fresh process per count and reports its peak resident memory. `ray` times the same partitions on
a Ray actor pool (one actor per worker, each holding the compiled network), to compare the engines.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_images(graph, count: int, data: Path) -> Path:
    """`count` images of the network's input size in a folder (made once)."""
    from PIL import Image
    type_ = next(iter(graph.inputs.values()))
    c, h, w = type_.dims
    folder = data / f"{c}x{h}x{w}-{count}"
    suffix = ".png" if h <= 32 else ".jpg"
    if folder.is_dir() and len(list(folder.glob(f"*{suffix}"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), c), dtype=np.uint8)
        image = Image.fromarray(small[..., 0] if c == 1 else small).resize((w, h), Image.BILINEAR)
        image.save(folder / f"{i:06d}{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
    return folder


def make_array(graph, count: int, data: Path) -> Path:
    """The same count of inputs as one .npy batch (random values: no decoding at all)."""
    dims = next(iter(graph.inputs.values())).dims
    path = data / f"{'x'.join(map(str, dims))}-{count}.npy"
    if not path.exists():
        data.mkdir(parents=True, exist_ok=True)
        np.save(path, np.random.default_rng(0).standard_normal((count,) + dims, dtype=np.float32))
    return path


def run_rate(graph, batch: int, seconds: float = 2.0) -> float:
    """Images per second of Executable.run at this batch: batch / the median time per batch."""
    import netspec
    exe = netspec.compile(graph, progress=False)
    x = np.random.default_rng(0).standard_normal((batch,) + next(iter(graph.inputs.values())).dims, dtype=np.float32)
    exe.run(x)
    exe.run(x)  # (the second run compiles the program)
    times = []
    while sum(times) < seconds or len(times) < 5:
        t0 = time.perf_counter()
        exe.run(x)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def predict_rate(graph, folder: Path, batch: int, cluster: str | None = None) -> tuple[float, float, int]:
    """(images/s of the job, wall seconds including start and compile, rows)."""
    import netspec
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        job = netspec.predict(graph, str(folder), os.path.join(tmp, "out.csv"), batch=batch, cluster=cluster)
        for _ in job:
            pass
        return job.rate, time.perf_counter() - start, job.rows


def cmd_throughput(args) -> None:
    import netspec
    graph = netspec.load(args.spec)
    folder = (make_array if args.npy else make_images)(graph, args.count, Path(args.data))
    rows = []
    for r in range(args.rounds):
        before = run_rate(graph, args.batch)
        row = {}
        row["predict"], row["predict_wall"], n = predict_rate(graph, folder, args.batch)
        row["run"] = (before + run_rate(graph, args.batch)) / 2  # (taken before and after: the machine drifts)
        if args.cluster:
            row["cluster"], row["cluster_wall"], m = predict_rate(graph, folder, args.batch, args.cluster)
            assert m == n, (m, n)
        rows.append(row)
        print(f"round {r + 1}: " + "  ".join(f"{k} {v:,.1f}" for k, v in row.items()), file=sys.stderr)
    report = {"spec": args.spec, "count": args.count, "batch": args.batch, "rounds": args.rounds,
              "run images/s": statistics.median(r["run"] for r in rows),
              "predict images/s": statistics.median(r["predict"] for r in rows),
              "predict / run": statistics.median(r["predict"] / r["run"] for r in rows)}
    if args.cluster:
        report.update({f"{args.cluster} images/s": statistics.median(r["cluster"] for r in rows),
                       f"{args.cluster} / predict": statistics.median(r["cluster"] / r["predict"] for r in rows),
                       f"{args.cluster} wall s (with start)": statistics.median(r["cluster_wall"] for r in rows),
                       "predict wall s (with compile)": statistics.median(r["predict_wall"] for r in rows)})
    print(json.dumps(report, indent=2))


CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
import netspec
graph = netspec.load({spec!r})
job = netspec.predict(graph, {folder!r}, {out!r}, batch={batch})
for _ in job:
    pass
print(job.rows, job.rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def cmd_memory(args) -> None:
    import netspec
    graph = netspec.load(args.spec)
    for count in args.counts:
        folder = make_images(graph, count, Path(args.data))
        with tempfile.TemporaryDirectory() as tmp:
            code = CHILD.format(root=str(ROOT), spec=args.spec, folder=str(folder), out=os.path.join(tmp, "o.csv"),
                                batch=args.batch)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        rows, rate, peak_kib = out.split()
        print(f"{count:>7,} inputs: {int(rows):,} rows, {float(rate):,.0f} images/s, peak resident memory "
              f"{int(peak_kib) / 1024:,.1f} MiB")


def cmd_ray(args) -> None:
    """The same job on Ray: an actor per worker holds the compiled network; partitions go to the
    actors as they free up (ray.wait), as Ray Data's actor pools do."""
    import ray

    import netspec
    from netspec.predictions import Job, Runner, open_source, run_batches
    graph = netspec.load(args.spec)
    folder = (make_array if args.npy else make_images)(graph, args.count, Path(args.data))
    source = open_source(str(folder), graph)

    class Predictor:
        def __init__(self, job):
            from netspec.threads import set_threads
            self.job = job
            with set_threads(job.threads):
                self.runner = Runner(job, progress=False)

        def run(self, part):
            from netspec.threads import set_threads
            with set_threads(self.job.threads):
                return list(run_batches(self.runner, part, list(range(len(part.names)))))

    start = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    job = Job(graph, None, 0, args.batch, 1, 1)
    actors = [ray.remote(num_cpus=1)(Predictor).remote(job) for _ in range(args.workers)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    ready = time.perf_counter()
    rows = list(range(len(source.names)))
    size = args.batch * max(1, min(32, -(-len(rows) // (4 * args.workers * args.batch))))
    parts = [source.part(rows[i:i + size]) for i in range(0, len(rows), size)]
    pending, free, done = {}, list(actors), 0
    while parts or pending:
        while free and parts:
            actor = free.pop()
            pending[actor.run.remote(parts.pop(0))] = actor
        finished, _ = ray.wait(list(pending), num_returns=1)
        for ref in finished:
            free.append(pending.pop(ref))
            done += sum(len(names) for names, _, _ in ray.get(ref))
    end = time.perf_counter()
    ray.shutdown()
    print(json.dumps({"spec": args.spec, "count": args.count, "batch": args.batch, "workers": args.workers,
                      "rows": done, "ray images/s": done / (end - ready), "ray start s": ready - start,
                      "ray wall s": end - start}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("throughput", "memory", "ray"):
        p = sub.add_parser(name)
        p.add_argument("spec")
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "netspec-bench-predict"))
        if name == "memory":
            p.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
        else:
            p.add_argument("--count", type=int, default=1000)
        if name == "throughput":
            p.add_argument("--rounds", type=int, default=3)
            p.add_argument("--cluster", help="also predict on this cluster (local:N or an address)")
        if name != "memory":
            p.add_argument("--npy", action="store_true", help="the inputs as one .npy batch instead of image files")
        if name == "ray":
            p.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    {"throughput": cmd_throughput, "memory": cmd_memory, "ray": cmd_ray}[args.command](args)


if __name__ == "__main__":
    main()
