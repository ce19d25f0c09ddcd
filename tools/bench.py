"""Time zoo specs in netspec's CPU backend against ONNX Runtime (on netspec's own ONNX export) and
PyTorch eager (when installed), same weights and input, in one process: medians after a warm-up,
ratios, and netspec's achieved GFLOP/s (2 × MACs / time) beside the machine's measured GEMM rate.
The engines take turns, one warm run each per round (after 0.3 s of untimed runs, so that the
previous engine's spinning threads have stopped), and a ratio is the median of the rounds' ratios,
so that a slow spell of the (shared, noisy) machine falls on both sides of it.

    python tools/bench.py                                    # every zoo spec, batch 1 and 8, 2 threads
    python tools/bench.py resnet18 unet --batch 8 --runs 5 --json out.json
    python tools/bench.py specs/resnet50.yaml my_net.yaml    # spec files, zoo or your own

The PyTorch side is built from the netspec graph itself (torch.nn.functional per node), so all three
run the identical network; the largest output difference (relative to the output's scale) is printed
as a cross-check. Compare ratios, not milliseconds: the machine is shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import netspec
from netspec.spec.errors import SpecError
from netspec.threads import set_threads
from netspec.weights import init_weights

ROOT = Path(__file__).resolve().parent.parent
ZOO = ["lenet5", "alexnet", "vgg16", "googlenet", "inception_v2", "resnet18", "resnet50", "mobilenet_v1",
       "efficientnet", "yolov1", "unet"]


def torch_forward(graph, weights, device="cpu"):
    """(torch, forward) where forward(x: torch tensor on `device`) → {output: tensor}: the graph in
    PyTorch eager (eval mode, torch.nn.functional per node, weights moved to `device` once); or None
    without torch. tools/gpu_bench.py builds its cuDNN baseline with this too."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in weights.items()}

    def pads(a):
        t, l, b, r = a.pads
        return (l, r, t, b)

    def conv(n, x):
        a = n.attrs
        x = F.pad(x, pads(a))
        return F.conv2d(x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias"), a.stride, 0, a.dilation, a.groups)

    def pool(n, x, kind):
        a = n.attrs
        if kind == "max":
            return F.max_pool2d(x, a.kernel, a.stride, a.padding, a.dilation, ceil_mode=a.ceil_mode)
        return F.avg_pool2d(x, a.kernel, a.stride, a.padding, a.ceil_mode, a.count_include_pad)

    def bn(n, x):
        a = n.attrs
        return F.batch_norm(x, w[f"{n.name}.running_mean"], w[f"{n.name}.running_var"],
                            w.get(f"{n.name}.weight"), w.get(f"{n.name}.bias"), False, a.momentum, a.eps)

    def crop(x, size):
        top, left = (x.shape[2] - size[0]) // 2, (x.shape[3] - size[1]) // 2
        return x[:, :, top:top + size[0], left:left + size[1]]

    table = {
        "conv2d": conv,
        "conv_transpose2d": lambda n, x: F.conv_transpose2d(
            x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias"), n.attrs.stride, n.attrs.padding,
            n.attrs.output_padding, n.attrs.groups, n.attrs.dilation),
        "maxpool2d": lambda n, x: pool(n, x, "max"),
        "avgpool2d": lambda n, x: pool(n, x, "avg"),
        "global_avgpool": lambda n, x: F.adaptive_avg_pool2d(x, 1),
        "adaptive_avgpool2d": lambda n, x: F.adaptive_avg_pool2d(x, n.attrs.size),
        "batchnorm2d": bn,
        "lrn": lambda n, x: F.local_response_norm(x, n.attrs.size, n.attrs.alpha, n.attrs.beta, n.attrs.k),
        "linear": lambda n, x: F.linear(x, w[f"{n.name}.weight"], w.get(f"{n.name}.bias")),
        "identity": lambda n, x: x, "dropout": lambda n, x: x,
        "relu": lambda n, x: F.relu(x), "relu6": lambda n, x: F.relu6(x), "sigmoid": lambda n, x: torch.sigmoid(x),
        "tanh": lambda n, x: torch.tanh(x), "silu": lambda n, x: F.silu(x), "hardswish": lambda n, x: F.hardswish(x),
        "leaky_relu": lambda n, x: F.leaky_relu(x, n.attrs.slope), "elu": lambda n, x: F.elu(x, n.attrs.alpha),
        "softmax": lambda n, x: F.softmax(x, n.attrs.axis),
        "maxout": lambda n, x: x.view(x.shape[0], -1, n.attrs.pieces, *x.shape[2:]).amax(2),
        "flatten": lambda n, x: torch.flatten(x, 1),
        "reshape": lambda n, x: x.reshape(x.shape[0], *n.attrs.shape),
        "center_crop": lambda n, x: crop(x, n.attrs.size),
    }
    merges = {"add": lambda n, xs: sum(xs[1:], xs[0]), "mul": lambda n, xs: xs[0] * xs[1],
              "concat": lambda n, xs: torch.cat(xs, n.attrs.axis)}
    active = graph.active("eval")

    def forward(x):
        values = {name: x for name in active.inputs}
        for n in active.nodes:
            xs = [values[i] for i in n.inputs]
            values[n.name] = merges[n.op](n, xs) if n.op in merges else table[n.op](n, xs[0])
        return {o: values[o] for o in active.outputs}
    return torch, forward


def torch_runner(graph, weights, threads: int | None = None):
    """A function running the graph in PyTorch eager on the CPU (numpy in, numpy out), or None without torch."""
    built = torch_forward(graph, weights, "cpu")
    if built is None:
        return None
    torch, forward = built
    if threads:
        torch.set_num_threads(threads)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {k: v.numpy() for k, v in forward(torch.from_numpy(x)).items()}
    return run


def median_time(fn, x, runs: int) -> float:
    fn(x)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_times(engines: dict, x, runs: int, settle: float = 0.3) -> dict[str, list[float]]:
    """Seconds per run of each engine over `runs` rounds; in each round every engine in turn runs
    untimed for at least `settle` seconds (at least once), then once timed. The untimed runs take
    whatever the previous engine left behind — its worker threads still spinning (OpenMP's and
    OpenBLAS's spin for up to ~0.1–0.2 s after a run), caches full of its data — so the timed run
    is a warm, back-to-back one, as in a steady stream of inferences, for small networks too."""
    times: dict[str, list[float]] = {key: [] for key in engines}
    for _ in range(runs):
        for key, run in engines.items():
            start = time.perf_counter()
            run(x)
            while time.perf_counter() - start < settle:
                run(x)
            t0 = time.perf_counter()
            run(x)
            times[key].append(time.perf_counter() - t0)
    return times


def ort_runner(graph, weights, batch: int, threads: int):
    """A function running the graph's ONNX export in ONNX Runtime (numpy in, numpy out), or None."""
    try:
        import onnxruntime as ort
        from netspec.interop.onnx_export import export_onnx
    except ImportError:
        return None
    model = export_onnx(graph, weights, batch=batch, check=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (input_name,) = [i.name for i in session.get_inputs()]
    outputs = list(graph.active("eval").outputs)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(outputs, {input_name: x})))
    return run


def gemm_gflops(threads: int, size: int = 1024, runs: int = 10) -> float:
    """The machine's float32 GEMM rate through numpy's BLAS (the ceiling for im2col + GEMM)."""
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    with set_threads(threads):
        seconds = median_time(lambda _: a @ a, None, runs)
    return 2 * size**3 / seconds / 1e9


def spec_path(arg: str) -> Path:
    """A spec given as a zoo name (`resnet50`) or as a file's path (`specs/resnet50.yaml`)."""
    path = Path(arg)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return ROOT / "specs" / f"{arg}.yaml"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=ZOO, help="zoo names or spec files (default: the whole zoo)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    parser.add_argument("--runs", type=int, default=5,
                        help="rounds; in each, every engine runs untimed for 0.3 s, then once timed; medians are kept")
    parser.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    graphs = {}
    for arg in args.specs:  # every spec loads before anything is timed: a typo costs no waiting
        path = spec_path(arg)
        try:
            graphs[path.stem if path.stem not in graphs else str(path)] = netspec.load(path)
        except SpecError as error:
            print(error, file=sys.stderr)
            return 2
    gemm = gemm_gflops(args.threads)
    print(f"GEMM (numpy/OpenBLAS sgemm, {args.threads} threads): {gemm:.0f} GFLOP/s")
    print(f"{'spec':<14}{'batch':>6}{'GMACs':>9}{'netspec ms':>12}{'GFLOP/s':>9}{'ORT ms':>9}{'/ORT':>6}"
          f"{'torch ms':>10}{'/torch':>7}{'max |diff|':>11}")
    rows = []
    for name, graph in graphs.items():
        weights = init_weights(graph, 0)
        for batch in args.batch:
            x = np.random.default_rng(0).standard_normal((batch,) + next(iter(graph.inputs.values())).dims,
                                                         dtype=np.float32)
            exe = netspec.compile(graph, backend="cpu", weights=weights, progress=False)
            macs = netspec.summary(graph, batch=batch).macs
            engines = {"netspec": exe.run}
            for key, make in (("ort", lambda: ort_runner(graph, weights, batch, args.threads)),
                              ("torch", lambda: torch_runner(graph, weights, args.threads))):
                run = make()
                if run is not None:
                    engines[key] = run
            with set_threads(args.threads):
                times = interleaved_times(engines, x, args.runs)
                outputs = {key: run(x) for key, run in engines.items()}
            ours = statistics.median(times["netspec"])
            row = {"spec": name, "batch": batch, "macs": macs, "netspec_s": ours,
                   "netspec_gflops": 2 * macs / ours / 1e9, "gemm_gflops": gemm}
            diffs = []
            for key in engines.keys() - {"netspec"}:
                row[f"{key}_s"] = statistics.median(times[key])
                # the ratio: the median of each round's ratio (one round times every engine once, so
                # a slow spell of the machine weighs on both sides of a ratio)
                row[f"{key}_ratio"] = statistics.median(a / b for a, b in zip(times["netspec"], times[key]))
                got, expected = outputs[key], outputs["netspec"]
                diffs += [float(np.abs(expected[k] - got[k]).max() / max(1.0, np.abs(got[k]).max())) for k in got]
            row["max_rel_diff"] = max(diffs) if diffs else None
            rows.append(row)
            print(_line(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _line(row: dict) -> str:
    def ms(key):
        return f"{row[key] * 1e3:.1f}" if key in row else "-"

    def ratio(key):
        return f"{row[key.replace('_s', '_ratio')]:.2f}" if key in row else "-"
    diff = f"{row['max_rel_diff']:.1e}" if row.get("max_rel_diff") is not None else "-"
    return (f"{row['spec']:<14}{row['batch']:>6}{row['macs'] / 1e9:>9.2f}{ms('netspec_s'):>12}"
            f"{row['netspec_gflops']:>9.1f}{ms('ort_s'):>9}{ratio('ort_s'):>6}{ms('torch_s'):>10}"
            f"{ratio('torch_s'):>7}{diff:>11}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
