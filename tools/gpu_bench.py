"""Time netspec's CUDA backend against PyTorch (cuDNN) on the same GPU, same weights, same input.

    python tools/gpu_bench.py                                  # resnet50, vgg16, unet at batch 1 and 32
    python tools/gpu_bench.py resnet50 --batches 1 8 --runs 10 --budget 120 --json out.json

Both sides are timed end to end as a user calls them: the input goes from host memory to the device,
the network runs, the output comes back (netspec's `Executable.run`; for PyTorch `x.cuda()`, the
eager forward built from the same netspec graph by tools/bench.py's `torch_forward`, `.cpu()`).
Medians of --runs timed runs after --warmup untimed ones; ratio = netspec / PyTorch (lower is better).
fp32 throughout: TF32 is switched off in PyTorch, since netspec's kernels are plain fp32. netspec
compiles with its default graph passes (batch-norm folding); PyTorch runs the graph as written.
Configurations that would start after --budget seconds are skipped, and said so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import netspec  # noqa: E402
from netspec.weights import init_weights  # noqa: E402

DEFAULT_SPECS = ["resnet50", "vgg16", "unet"]
TOLERANCE = 1e-3  # largest output difference, relative to the output's scale, that still counts as agreement


def median_time(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_cuda():
    """(torch, None) when PyTorch sees a CUDA GPU, else (None, reason)."""
    try:
        import torch
    except ImportError as e:
        return None, f"PyTorch is not installed ({e})"
    if not torch.cuda.is_available():
        return None, f"PyTorch {torch.__version__} sees no CUDA GPU"
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return torch, None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=DEFAULT_SPECS)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=200.0, help="seconds; later configurations are skipped")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from netspec.backends.cuda import BackendUnavailable, check_available
    try:
        check_available()
    except BackendUnavailable as e:
        print(f"gpu_bench: cannot time netspec's CUDA backend: {e}")
        return 1
    torch, why = torch_cuda()
    if torch is None:
        print(f"gpu_bench: no PyTorch baseline: {why}; timing netspec alone")
    else:
        print(f"gpu_bench: PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, "
              f"{torch.cuda.get_device_name(0)}")
    from bench import torch_forward

    rows = []
    header = (f"{'spec':<10} {'batch':>5} {'GMACs':>9} {'netspec ms':>11} {'torch ms':>9} {'ratio':>7} "
              f"{'max rel diff':>12}")
    print(header, flush=True)
    for name in args.specs:
        graph = netspec.load(ROOT / "specs" / f"{name}.yaml")
        weights = init_weights(graph, 0)
        dims = next(iter(graph.inputs.values())).dims
        exe = None
        model = None
        for batch in args.batches:
            row = {"spec": name, "batch": batch, "macs": netspec.summary(graph, batch=batch).macs}
            if time.perf_counter() - started > args.budget:
                row["skipped"] = f"over the {args.budget:.0f} s budget"
                rows.append(row)
                print(f"{name:<10} {batch:>5} {row['macs'] / 1e9:>9.1f}  skipped ({row['skipped']})", flush=True)
                continue
            x = np.random.default_rng(0).standard_normal((batch,) + dims, dtype=np.float32)
            try:
                if exe is None:
                    exe = netspec.compile(graph, backend="cuda", weights=dict(weights), progress=False)
                ours = exe.run(x)  # first run: kernels compile (not timed)
                row["netspec_ms"] = 1e3 * median_time(lambda: exe.run(x), args.warmup, args.runs)
            except Exception as e:  # report and go on with the next configuration
                row["error"] = f"netspec: {type(e).__name__}: {e}"
            if torch is not None and "error" not in row:
                try:
                    if model is None:
                        model = torch_forward(graph, weights, "cuda")[1]

                    def run_torch():
                        with torch.inference_mode():
                            out = model(torch.from_numpy(x).cuda())
                            return {k: v.cpu().numpy() for k, v in out.items()}
                    theirs = run_torch()
                    row["torch_ms"] = 1e3 * median_time(run_torch, args.warmup, args.runs)
                    row["max_rel_diff"] = max(float(np.abs(ours[k] - theirs[k]).max() / (np.abs(theirs[k]).max() + 1e-12))
                                              for k in ours)
                    torch.cuda.empty_cache()
                except Exception as e:
                    row["torch_error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            if "error" in row:
                print(f"{name:<10} {batch:>5} {row['macs'] / 1e9:>9.1f}  {row['error']}", flush=True)
                continue
            t = row.get("torch_ms")
            print(f"{name:<10} {batch:>5} {row['macs'] / 1e9:>9.1f} {row['netspec_ms']:>11.2f} "
                  f"{t if t else float('nan'):>9.2f} {row['netspec_ms'] / t if t else float('nan'):>7.2f} "
                  f"{row.get('max_rel_diff', float('nan')):>12.2e}"
                  + (f"  (torch: {row['torch_error']})" if "torch_error" in row else ""), flush=True)
        del exe
    bad = [f"{r['spec']} batch {r['batch']}" for r in rows if r.get("max_rel_diff", 0.0) > TOLERANCE]
    if bad:
        print(f"gpu_bench: outputs differ from PyTorch's by more than {TOLERANCE:g} (relative) for: {', '.join(bad)}")
    print(f"gpu_bench: ratio = netspec / PyTorch, end to end (input upload, forward, output download), fp32, "
          f"medians of {args.runs} runs after {args.warmup} warm-ups; {time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 1 if bad or any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
